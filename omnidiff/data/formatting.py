"""Pieces shared by the task formatters, and `collate` (task examples -> the batch dict).

The task files in ``omnidiff/tasks/`` assemble ``prefix`` and ``answer`` from these helpers, so the
layout rules of docs/design.md ("Task sequences") live in one place: modality spans are wrapped in their bracket
specials, images are flattened row-major without row separators, audio frames are interleaved by
the audio tokenizer's ``to_global``, and fixed-content answers (images, audio, actions) are never
cut: a sample whose answer does not fit its task's answer length is rejected with a ValueError,
which the loader counts and logs.

Batch dict (``collate``): ``tokens`` [B, L] (left pads, prefix, answer, then right pads when answer
lengths differ), ``padding_mask`` [B, L] (True on prefix and answer), ``answer_mask`` [B, L]
(True on answer columns), ``tasks`` (names), ``images`` (`ImageInputs`, the prompt images) when
examples carry pixels, and ``audio`` (`AudioInputs`, the prompt clips) when they carry waveforms.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def sample_rng(sample: dict, salt: str = "") -> np.random.Generator:
    """A generator fixed by the sample's key, shard and epoch: a new caption/question each epoch, reproducibly."""
    key = f"{sample.get('__shard__', '')}/{sample.get('__key__', '')}/{salt}"
    return np.random.default_rng([zlib.crc32(key.encode()), int(sample.get("__epoch__", 0))])


def require(sample: dict, *names: str):
    """The first of ``names`` present in ``sample``, or a ValueError naming the sample and what is missing."""
    for name in names:
        if name in sample:
            return sample[name]
    present = sorted(k for k in sample if not k.startswith("__"))
    raise ValueError(f"sample {sample.get('__key__', '?')} has none of {list(names)} (members: {present})")


def specials(vocab, *names: str) -> torch.Tensor:
    return torch.tensor([vocab.special(n) for n in names], dtype=torch.long)


def need(toks, modality: str):
    tok = getattr(toks, modality, None)
    if tok is None:
        raise ValueError(f"this task needs a {modality} tokenizer; add it under tokenizers: in the config")
    return tok


def text_ids(toks, vocab, text: str) -> torch.Tensor:
    """Global ids of ``text`` (no specials)."""
    tok = need(toks, "text")
    return tok.to_global(vocab, tok.encode(text)).long()


def image_ids(toks, vocab, image) -> torch.Tensor:
    """Global ids of an image's codes, row-major (no brackets). Resized first if the tokenizer has a fixed size."""
    tok = need(toks, "image")
    size = getattr(tok, "image_size", None)
    if size is not None and hasattr(image, "size"):
        size = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(image.size) != size:
            from PIL import Image

            image = image.resize(size, Image.BICUBIC)
    return tok.to_global(vocab, tok.encode(image)).long()


def image_pixels(toks, image) -> torch.Tensor:
    """A PIL image as the float pixels [3, S, S] in [-1, 1] an image encoder reads: the image tokenizer's
    own preprocessing (RGB, resized to its side S) mapped from [0, 1]."""
    return need(toks, "image").to_tensor(image) * 2.0 - 1.0


def audio_wave(toks, wav) -> torch.Tensor:
    """A decoded ``wav`` member ``{"array", "sample_rate"}`` as the mono float wave [T] an audio encoder hears,
    resampled to the audio tokenizer's rate (its own resampling)."""
    return need(toks, "audio").wave_tensor((np.asarray(wav["array"], dtype=np.float32), int(wav["sample_rate"])))


def audio_ids(toks, vocab, wav, levels: int | None = None) -> torch.Tensor:
    """Global ids of a decoded ``wav`` member ``{"array", "sample_rate"}`` (frame-major, levels interleaved),
    with the first ``levels`` codec levels (all by default)."""
    tok = need(toks, "audio")
    levels = tok.check_levels(levels)
    wave = torch.as_tensor(np.asarray(wav["array"], dtype=np.float32))
    if wave.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {tuple(wave.shape)}")
    return tok.to_global(vocab, tok.encode((wave, int(wav["sample_rate"])))[:, :levels]).long()


def action_ids(toks, vocab, chunk) -> torch.Tensor:
    """Global ids of an action chunk [H, D] (time-major)."""
    tok = need(toks, "action")
    return tok.to_global(vocab, tok.encode(torch.as_tensor(np.asarray(chunk, dtype=np.float32)))).long()


def fit_answer(answer: torch.Tensor, answer_len: int, eos_id: int, what: str) -> torch.Tensor:
    """Pad a fixed-content answer with <eos> to ``answer_len``; a ValueError if it does not fit."""
    if answer.numel() > answer_len:
        raise ValueError(f"{what} needs {answer.numel()} answer tokens but the task's answer_len is {answer_len}; "
                         f"raise answer_len for this task")
    pad = torch.full((answer_len - answer.numel(),), eos_id, dtype=torch.long)
    return torch.cat([answer.long(), pad])


def collate(examples: list[tuple[torch.Tensor, torch.Tensor]], vocab, tasks: list[str] | None = None,
            prefix_multiple: int = 1, pixels: list[torch.Tensor | None] | None = None,
            waves: list[torch.Tensor | None] | None = None) -> dict:
    """Pack (prefix, answer) pairs: prefixes right-aligned to a common answer start column, which is
    rounded up to ``prefix_multiple`` (block attention: answers start on a block boundary, as the
    sampler lays them out). ``pixels``: each example's prompt image [3, S, S] (None when its prompt
    has none), for a model with an image encoder; ``waves``: each example's prompt clip [T] (None when
    it has none), for a model with an audio encoder."""
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    P = max(p.numel() for p, _ in examples)
    P = -(-P // prefix_multiple) * prefix_multiple
    A = max(a.numel() for _, a in examples)
    B = len(examples)
    tokens = torch.full((B, P + A), vocab.pad_id, dtype=torch.long)
    padding_mask = torch.zeros(B, P + A, dtype=torch.bool)
    answer_mask = torch.zeros(B, P + A, dtype=torch.bool)
    for i, (prefix, answer) in enumerate(examples):
        tokens[i, P - prefix.numel(): P] = prefix
        tokens[i, P: P + answer.numel()] = answer
        padding_mask[i, P - prefix.numel(): P + answer.numel()] = True
        answer_mask[i, P: P + answer.numel()] = True
    batch = {"tokens": tokens, "padding_mask": padding_mask, "answer_mask": answer_mask}
    if tasks is not None:
        batch["tasks"] = list(tasks)
    if pixels is not None:
        from omnidiff.models.image_encoder import image_inputs

        images = image_inputs([p for p, _ in examples], pixels, vocab)
        if images is not None:
            batch["images"] = images
    if waves is not None:
        from omnidiff.models.audio_encoder import audio_inputs

        audio = audio_inputs([p for p, _ in examples], waves, vocab)
        if audio is not None:
            batch["audio"] = audio
    return batch


PROMPT_INPUTS = ("images", "audio")  # what a batch may carry for the model's encoders besides its tokens


def prompt_inputs(batch: dict, *, times: int = 1, rows: torch.Tensor | None = None) -> dict:
    """The batch's prompt pictures and clips as keyword arguments of the model's forward (``{}`` if none):
    for ``times`` stacked copies of the rows (complementary masking), or for the rows ``rows`` only."""
    found = {}
    for name in PROMPT_INPUTS:
        inputs = batch.get(name)
        if inputs is None:
            continue
        if rows is not None:
            inputs = inputs.select(rows)
        found[name] = inputs.repeat(times) if times != 1 else inputs
    return found
