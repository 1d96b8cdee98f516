"""Image captioning: ``<bos><caption><image> img </image> | caption <eos>...``.

The answer is the sample's canonical caption (``txt``, the first of ``json["captions"]``) by
default. ``captions: random`` trains on one of ``json["captions"]`` drawn per epoch instead (fixed by
the sample's key; see `sample_rng`). Measured: random templates make the target a mixture ("a blue
triangle ...", "two objects: ...", "a triangle and a circle"), which a parallel decoder blends into
non-captions ("the handit", "a small triangle and a green square"): trained alone on 64 scenes for
200 steps, random templates reached 6% exact (benchmarks/overfit.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from omnidiff.data.formatting import image_ids, require, sample_rng, specials, text_ids
from omnidiff.tasks.base import MIN_TEXT_ANSWER_LEN, pad_answer

CAPTION_CHOICES = ("first", "random")


def pick_caption(sample: dict, choice: str = "random") -> str:
    """One caption of an image sample.

    ``random``: one of ``json["captions"]`` by the sample's RNG; ``first``: the canonical one
    (``txt``, else the first of the list). Either falls back to the other source when one is missing.
    """
    if choice not in CAPTION_CHOICES:
        raise ValueError(f"captions must be one of {list(CAPTION_CHOICES)}, got {choice!r}")
    meta = sample.get("json") or {}
    captions = [c for c in meta.get("captions", []) if isinstance(c, str) and c.strip()]
    text = sample.get("txt")
    if choice == "first" and isinstance(text, str) and text.strip():
        return text
    if captions:
        return captions[0] if choice == "first" else captions[int(sample_rng(sample, "caption").integers(len(captions)))]
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
    captions: str = "first"  # "first": the canonical caption; "random": any of json["captions"] per epoch

    def __post_init__(self):
        if self.captions not in CAPTION_CHOICES:
            raise ValueError(f"caption option 'captions' must be one of {list(CAPTION_CHOICES)}, got {self.captions!r}")

    def prompt(self, toks, vocab, image) -> torch.Tensor:
        """The prefix for a PIL image (what inference feeds; `format` builds the same)."""
        return torch.cat([specials(vocab, "<bos>", "<caption>"), image_span_of(image, toks, vocab)])

    def format(self, sample: dict, toks, vocab, answer_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = self.prompt(toks, vocab, require(sample, "png", "jpg", "jpeg"))
        answer = pad_answer(text_ids(toks, vocab, pick_caption(sample, self.captions)), answer_len, vocab.eos_id)
        return prefix, answer

    def needed_answer_len(self, toks, manifest: dict) -> int:
        return MIN_TEXT_ANSWER_LEN
