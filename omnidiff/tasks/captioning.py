"""Image captioning: ``<bos><caption><image> img </image> | caption <eos>...``.

The caption is one of the sample's ``json["captions"]`` (a new one each epoch, fixed by the
sample's key; see `sample_rng`), or its ``txt`` member when there is no list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from omnidiff.data.formatting import image_ids, require, sample_rng, specials, text_ids
from omnidiff.tasks.base import MIN_TEXT_ANSWER_LEN, pad_answer


def pick_caption(sample: dict) -> str:
    """One caption of an image sample: from ``json["captions"]`` by the sample's RNG, else ``txt``."""
    meta = sample.get("json") or {}
    captions = [c for c in meta.get("captions", []) if isinstance(c, str) and c.strip()]
    if captions:
        return captions[int(sample_rng(sample, "caption").integers(len(captions)))]
    text = require(sample, "txt")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"sample {sample.get('__key__', '?')} has an empty caption")
    return text


def image_span(sample: dict, toks, vocab) -> torch.Tensor:
    """``<image> codes </image>`` of the sample's picture (``png``/``jpg``)."""
    return image_span_of(require(sample, "png", "jpg", "jpeg"), toks, vocab)


def image_span_of(image, toks, vocab) -> torch.Tensor:
    """``<image> codes </image>`` of a PIL image."""
    return torch.cat([specials(vocab, "<image>"), image_ids(toks, vocab, image), specials(vocab, "</image>")])


@dataclass
class CaptioningTask:
    name: ClassVar[str] = "caption"
    modalities: ClassVar[tuple[str, ...]] = ("image", "text")

    def prompt(self, toks, vocab, image) -> torch.Tensor:
        """The prefix for a PIL image (what inference feeds; `format` builds the same)."""
        return torch.cat([specials(vocab, "<bos>", "<caption>"), image_span_of(image, toks, vocab)])

    def format(self, sample: dict, toks, vocab, answer_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = self.prompt(toks, vocab, require(sample, "png", "jpg", "jpeg"))
        answer = pad_answer(text_ids(toks, vocab, pick_caption(sample)), answer_len, vocab.eos_id)
        return prefix, answer

    def needed_answer_len(self, toks, manifest: dict) -> int:
        return MIN_TEXT_ANSWER_LEN
