"""Tiny stand-in tokenizers (the `Tokenizer` Protocol, nothing more) and sample builders for task/data tests.

They make task and loader tests independent of the trained tokenizers' internals and fast: the
text stub maps bytes to ids, the image stub averages 8x8 patches into 16 grey levels, the audio
stub quantises the energy of 10 ms frames into two levels, the action stub bins [-1, 1] into 32.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from omnidiff.tokenization.registry import TokenizerSet


class _Stub:
    def encode_batch(self, raws):
        return [self.encode(r) for r in raws]

    def decode_batch(self, ids):
        return [self.decode(i) for i in ids]

    @property
    def vocab_size(self) -> int:
        return sum(self.vocab_ranges().values())

    def to_global(self, vocab, local_ids):
        return vocab.to_global(self.range_name, torch.as_tensor(local_ids).reshape(-1))

    def from_global(self, vocab, global_ids):
        return vocab.to_local(self.range_name, global_ids)

    def save(self, directory):
        raise NotImplementedError

    @classmethod
    def load(cls, directory):
        raise NotImplementedError


class StubText(_Stub):
    modality, range_name = "text", "text"

    def vocab_ranges(self):
        return {"text": 256}

    def encode(self, raw):
        return torch.tensor(list(raw.encode("utf-8")), dtype=torch.long)

    def decode(self, ids):
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class StubImage(_Stub):
    modality, range_name = "image", "image"
    image_size = 32
    tokens_per_image = (32 // 8) ** 2

    def vocab_ranges(self):
        return {"image": 16}

    def encode(self, raw):
        grey = np.asarray(raw.convert("L"), dtype=np.float32)
        h, w = grey.shape[0] // 8, grey.shape[1] // 8
        patches = grey[: h * 8, : w * 8].reshape(h, 8, w, 8).mean(axis=(1, 3))
        return torch.as_tensor(np.clip(patches / 16, 0, 15).astype(np.int64))

    def decode(self, ids):
        return Image.fromarray((ids.numpy() * 16).astype(np.uint8)).resize((self.image_size, self.image_size))


class StubAudio(_Stub):
    modality = "audio"
    hop = 160

    def vocab_ranges(self):
        return {"audio_l0": 8, "audio_l1": 8}

    def encode(self, raw):
        wave, sr = raw
        assert sr == 16000
        frames = max(1, len(wave) // self.hop)
        energy = torch.stack([wave[i * self.hop:(i + 1) * self.hop].abs().mean() for i in range(frames)])
        level0 = torch.clamp((energy * 16).long(), 0, 7)
        return torch.stack([level0, (level0 + 1) % 8], dim=1)

    def decode(self, ids):
        return torch.repeat_interleave(ids[:, 0].float() / 16, self.hop)

    levels = 2

    def range_names(self):
        return list(self.vocab_ranges())

    def check_levels(self, levels):
        if levels is None:
            return self.levels
        if not 1 <= levels <= self.levels:
            raise ValueError(f"audio levels must be an integer from 1 to the codec's {self.levels}, got {levels!r}")
        return levels

    def num_tokens(self, num_samples, sample_rate, levels=None):
        assert sample_rate == 16000
        return max(1, num_samples // self.hop) * self.check_levels(levels)

    def to_global(self, vocab, local_ids):
        cols = [vocab.to_global(f"audio_l{k}", local_ids[:, k]) for k in range(local_ids.shape[1])]
        return torch.stack(cols, dim=1).reshape(-1)

    def from_global(self, vocab, global_ids, levels=None):
        levels = self.check_levels(levels)
        g = global_ids.reshape(-1, levels)
        return torch.stack([vocab.to_local(f"audio_l{k}", g[:, k]) for k in range(levels)], dim=1)


class StubAction(_Stub):
    modality, range_name = "action", "action"
    horizon, action_dim = 4, 4  # as robot_sample makes them

    def vocab_ranges(self):
        return {"action": 32}

    def encode(self, raw):
        return torch.clamp(((torch.as_tensor(raw) + 1) / 2 * 31).round().long(), 0, 31)

    def decode(self, ids):
        return ids.float() / 31 * 2 - 1

    def encode_proprio(self, state):
        return self.encode(torch.tanh(torch.as_tensor(state)))


def stub_tokenizers() -> TokenizerSet:
    return TokenizerSet(text=StubText(), image=StubImage(), audio=StubAudio(), action=StubAction())


# ---------------------------------------------------------------------- samples
def image(seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def wav_bytes(wave: np.ndarray, sr: int = 16000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def shapes_sample(i: int) -> dict:
    return {"__key__": f"s{i:05d}", "png": image(i), "txt": f"a red circle number {i}",
            "json": {"captions": [f"a red circle number {i}", f"one circle, red, #{i}"],
                     "qa": [["what colour is the circle?", "red"], ["how many circles?", "one"]]}}


def speech_sample(i: int, seconds: float = 0.3) -> dict:
    t = np.arange(int(16000 * seconds)) / 16000
    wave = (0.3 * np.sin(2 * np.pi * (200 + 10 * i) * t)).astype(np.float32)
    return {"__key__": f"a{i:05d}", "wav": {"array": wave, "sample_rate": 16000}, "txt": f"say {i}",
            "json": {"voice": "stub"}}


def robot_sample(i: int, horizon: int = 4, dims: int = 4) -> dict:
    rng = np.random.default_rng(i)
    return {"__key__": f"r{i:05d}", "png": image(i + 100),
            "actions.npy": rng.uniform(-1, 1, (horizon, dims)).astype(np.float32),
            "proprio.npy": rng.normal(size=4).astype(np.float32),
            "json": {"instruction": "push the puck", "paraphrases": ["move the puck", "shove the puck forward"],
                     "task": "push-v3", "success": True}}


def encode_for_shards(sample: dict) -> dict:
    """A decoded test sample -> webdataset members (bytes/str/dict) for `write_split`."""
    out = {}
    for name, value in sample.items():
        if name.endswith("png"):
            out[name] = png_bytes(value)
        elif name.endswith("wav"):
            out[name] = wav_bytes(value["array"], value["sample_rate"])
        elif name.endswith("npy"):
            buf = io.BytesIO()
            np.save(buf, value)
            out[name] = buf.getvalue()
        else:
            out[name] = value
    return out
