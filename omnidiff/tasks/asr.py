"""Speech recognition: ``<bos><asr><audio> audio codes </audio> | transcript <eos>...``.

``audio_levels`` keeps only the first k residual codec levels in the prefix (``None``: all): the
coarse levels carry the words, and the prefix is k/levels as long (8 -> 2 levels: 4x fewer tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from omnidiff.data.formatting import audio_ids, need, require, specials, text_ids
from omnidiff.tasks.base import MIN_TEXT_ANSWER_LEN, pad_answer


def transcript(sample: dict) -> str:
    text = require(sample, "txt")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"speech sample {sample.get('__key__', '?')} has an empty transcript")
    return text.strip()


@dataclass
class ASRTask:
    name: ClassVar[str] = "asr"
    modalities: ClassVar[tuple[str, ...]] = ("audio", "text")
    audio_levels: int | None = None

    def prompt(self, toks, vocab, wav: dict) -> torch.Tensor:
        """The prefix for ``{"array": float32 [T], "sample_rate": int}`` mono audio."""
        audio = audio_ids(toks, vocab, wav, self.audio_levels)
        return torch.cat([specials(vocab, "<bos>", "<asr>", "<audio>"), audio, specials(vocab, "</audio>")])

    def format(self, sample: dict, toks, vocab, answer_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = self.prompt(toks, vocab, require(sample, "wav"))
        return prefix, pad_answer(text_ids(toks, vocab, transcript(sample)), answer_len, vocab.eos_id)

    def needed_answer_len(self, toks, manifest: dict) -> int:
        need(toks, "audio").check_levels(self.audio_levels)  # a bad option stops the recipe before training
        return MIN_TEXT_ANSWER_LEN
