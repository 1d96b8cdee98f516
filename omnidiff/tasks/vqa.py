"""Visual question answering: ``<bos><vqa><image> img </image> question | answer <eos>...``.

The question/answer pair is one of ``json["qa"]`` (``[[question, answer], ...]``), picked by the
sample's RNG so that each epoch may ask a different question about the same image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from omnidiff.data.formatting import require, sample_rng, specials, text_ids
from omnidiff.tasks.base import MIN_TEXT_ANSWER_LEN, pad_answer
from omnidiff.tasks.captioning import image_span_of


def pick_question(sample: dict) -> tuple[str, str]:
    meta = require(sample, "json")
    pairs = [p for p in meta.get("qa", []) if len(p) == 2 and str(p[0]).strip() and str(p[1]).strip()]
    if not pairs:
        raise ValueError(f"sample {sample.get('__key__', '?')} has no question/answer pairs (json['qa'])")
    question, answer = pairs[int(sample_rng(sample, "qa").integers(len(pairs)))]
    return str(question), str(answer)


@dataclass
class VQATask:
    name: ClassVar[str] = "vqa"
    modalities: ClassVar[tuple[str, ...]] = ("image", "text")

    def prompt(self, toks, vocab, image, question: str) -> torch.Tensor:
        """The prefix for a PIL image and a question."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty; pass the text to answer about the image")
        return torch.cat([specials(vocab, "<bos>", "<vqa>"), image_span_of(image, toks, vocab),
                          text_ids(toks, vocab, question)])

    def format(self, sample: dict, toks, vocab, answer_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        question, answer = pick_question(sample)
        prefix = self.prompt(toks, vocab, require(sample, "png", "jpg", "jpeg"), question)
        return prefix, pad_answer(text_ids(toks, vocab, answer), answer_len, vocab.eos_id)

    def needed_answer_len(self, toks, manifest: dict) -> int:
        return MIN_TEXT_ANSWER_LEN
