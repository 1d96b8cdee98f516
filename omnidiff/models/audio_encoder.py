"""Continuous audio features for the prompt (``model.audio_encoder``): the model *hears* the waveform.

A prompt clip (speech recognition's ``<audio> codes </audio>``) still appears as its codec codes, so the
sequence layout, the vocabulary and every cache are unchanged. With an audio encoder the model also
reads the clip's waveform through a speech encoder (`omnidiff.models.speech_backbone`, pretrained with
CTC on the training transcripts by `omnidiff.training.ctc_pretrain` and usually frozen): its features,
projected to model width, take the place of the codes' embeddings (``combine: replace``) or are added to
them (``add``). This is how the field's speech-language models read audio (a Whisper-style encoder in
front of the language model) instead of through a codec's codes, whose many near-synonyms per sound
the transformer would otherwise have to learn from a few thousand transcripts. Generated audio (TTS
answers) stays codes and gets no features.

Code ``j`` of a prompt clip with ``n`` codes (``levels`` interleaved per frame) reads feature frame
``floor(j * frames / n)``: every level of a code frame reads the same feature, and the encoder's frame
count need not equal the codec's exactly. As image features are (`image_encoder.py`), features are
bound to rotary **positions** ``start[b] + j``, which every forward shares (left padding, a prefix
cache, packed complementary copies), so cached and uncached decoding see the same prompt states.

Tensor legend: ``M`` clips, ``T`` samples, ``B`` rows, ``F`` feature frames, ``C`` model width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from omnidiff.models.speech_backbone import SpeechBackbone, SpeechBackboneConfig
from omnidiff.strict import from_known_keys


@dataclass
class AudioEncoderConfig:
    backbone: SpeechBackboneConfig = field(default_factory=SpeechBackboneConfig)
    combine: str = "replace"  # "replace": features take the prompt codes' place | "add": added to their embeddings
    freeze_backbone: bool = False  # keep a pretrained backbone (model.audio_encoder_init) fixed: no gradient, no
    # dropout; the norm and projection after it still train

    def __post_init__(self):
        if isinstance(self.backbone, dict):
            self.backbone = SpeechBackboneConfig.from_dict(self.backbone)
        if self.combine not in ("add", "replace"):
            raise ValueError(f"model.audio_encoder.combine must be 'add' or 'replace', got {self.combine!r}")
        if not isinstance(self.freeze_backbone, bool):
            raise ValueError(f"model.audio_encoder.freeze_backbone must be true or false, got {self.freeze_backbone!r}")

    @classmethod
    def from_dict(cls, d: dict) -> AudioEncoderConfig:
        return from_known_keys(cls, d, "model.audio_encoder")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AudioInputs:
    """The prompt clips of a batch.

    ``waves`` [M, T] zero-padded at the encoder's sample rate, ``lengths`` [M] samples; ``codes`` [M]: how many
    codec codes stand for clip ``m`` in its prompt; ``row_audio`` [B]: which clip row ``b`` reads (-1: none);
    ``start`` [B]: the rotary position of row ``b``'s first audio code; ``features`` / ``frames``: the encoder's
    output when already computed (`AudioEncoder.encode`: a decode runs the encoder once, not per forward).
    """

    waves: torch.Tensor
    lengths: torch.Tensor
    codes: torch.Tensor
    row_audio: torch.Tensor
    start: torch.Tensor
    features: torch.Tensor | None = None
    frames: torch.Tensor | None = None

    def to(self, device) -> AudioInputs:
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return AudioInputs(**{k: None if v is None else v.to(device) for k, v in moved.items()})

    def repeat(self, times: int) -> AudioInputs:
        """The same clips for ``times`` stacked copies of the batch (complementary masking)."""
        return dataclasses.replace(self, row_audio=self.row_audio.repeat(times), start=self.start.repeat(times))

    def select(self, index: torch.Tensor) -> AudioInputs:
        """The audio inputs of batch rows ``index`` only (every clip is kept; rows point into them)."""
        return dataclasses.replace(self, row_audio=self.row_audio[index], start=self.start[index])

    @property
    def rows(self) -> int:
        return self.row_audio.numel()


def audio_code_span(prefix: torch.Tensor, vocab) -> tuple[int, int]:
    """(index of the first audio code, number of audio codes) in a 1-D prompt of real tokens; (-1, 0) if none."""
    if not any(r.modality == "audio" for r in vocab.ranges):
        return -1, 0
    where = vocab.modality_mask("audio")[prefix].nonzero().flatten()
    if not len(where):
        return -1, 0
    first, last = int(where[0]), int(where[-1])
    if last - first + 1 != len(where):
        raise ValueError("a prompt's audio codes must form one contiguous clip")
    return first, len(where)


def pad_waves(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D waves -> (waves [M, T] zero-padded to the longest, lengths [M])."""
    lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
    padded = torch.zeros(len(waves), int(lengths.max()))
    for m, w in enumerate(waves):
        padded[m, : w.numel()] = w
    return padded, lengths


def audio_inputs(prefixes: list[torch.Tensor], waves: list[torch.Tensor | None], vocab) -> AudioInputs | None:
    """`AudioInputs` of prompts with their waveforms (None where a prompt has no audio); None if none has one.

    A prompt that holds audio codes must come with its waveform, and the other way round.
    """
    if len(prefixes) != len(waves):
        raise ValueError(f"got {len(prefixes)} prompts but {len(waves)} waveforms")
    kept, rows, starts, codes = [], [], [], []
    for prefix, wave in zip(prefixes, waves, strict=True):
        start, count = audio_code_span(prefix, vocab)
        if (start < 0) != (wave is None):
            raise ValueError("a prompt with audio codes needs its waveform and a prompt without needs none "
                             f"(audio codes {'found' if start >= 0 else 'absent'}, waveform "
                             f"{'absent' if wave is None else 'given'})")
        rows.append(len(kept) if wave is not None else -1)
        starts.append(max(start, 0))
        if wave is not None:
            kept.append(wave.float().flatten())
            codes.append(count)
    if not kept:
        return None
    return AudioInputs(*pad_waves(kept), torch.tensor(codes, dtype=torch.long), torch.tensor(rows, dtype=torch.long),
                       torch.tensor(starts, dtype=torch.long))


class AudioEncoder(nn.Module):
    """Waves [M, T] -> features [M, F, C] at model width, and each clip's real frames [M]."""

    def __init__(self, cfg: AudioEncoderConfig, dim: int):
        super().__init__()
        self.cfg = cfg
        self.backbone = SpeechBackbone(cfg.backbone)
        self.norm = nn.LayerNorm(self.backbone.channels)
        self.proj = nn.Linear(self.backbone.channels, dim)
        if cfg.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> AudioEncoder:
        """As `nn.Module.train`, but a frozen backbone stays in eval mode (no dropout)."""
        super().train(mode)
        if self.cfg.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, waves_MT: torch.Tensor, lengths_M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, frames = self.backbone(waves_MT, lengths_M)
        return self.proj(self.norm(feats.to(self.proj.weight.dtype))), frames

    def encode(self, audio: AudioInputs) -> AudioInputs:
        """``audio`` with its features computed, for a decode whose forwards all read the same clips."""
        features, frames = self.forward(audio.waves, audio.lengths)
        return dataclasses.replace(audio, features=features, frames=frames)

    def add_to(self, x_BLC: torch.Tensor, positions_BL: torch.Tensor, audio: AudioInputs) -> torch.Tensor:
        """``x`` with row b's clip features where ``positions`` fall on its codes (``replace``: instead of them)."""
        if audio.rows != x_BLC.shape[0]:
            raise ValueError(f"audio inputs describe {audio.rows} rows but the batch has {x_BLC.shape[0]}")
        if audio.features is None:
            audio = self.encode(audio)
        feats_MFC, frames_M = audio.features.to(x_BLC.dtype), audio.frames
        F = feats_MFC.shape[1]
        clip_B = audio.row_audio.clamp_min(0)
        codes_B, frames_B = audio.codes[clip_B].view(-1, 1), frames_M[clip_B].view(-1, 1)
        index_BL = positions_BL - audio.start.view(-1, 1)
        hit_BL = (index_BL >= 0) & (index_BL < codes_B) & (audio.row_audio.view(-1, 1) >= 0)
        frame_BL = (index_BL.clamp_min(0) * frames_B // codes_B.clamp_min(1)).clamp(max=F - 1)
        added = feats_MFC.reshape(-1, feats_MFC.shape[-1])[clip_B.view(-1, 1) * F + frame_BL]  # [B, L, C]
        hit = hit_BL.unsqueeze(-1).to(x_BLC.dtype)
        if self.cfg.combine == "replace":
            return x_BLC * (1 - hit) + added * hit
        return x_BLC + added * hit
