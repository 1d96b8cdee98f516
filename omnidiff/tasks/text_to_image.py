"""Text to image: ``<bos><t2i> caption <image> | img </image> <eos>...``.

With probability ``uncond_prob`` the caption is replaced by ``<uncond>`` (decided by the sample's
RNG), which trains the unconditional model that classifier-free guidance needs. The image answer is
never cut: an ``answer_len`` shorter than codes + 1 rejects the sample with a clear message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from omnidiff.data.formatting import fit_answer, image_ids, need, require, sample_rng, specials, text_ids
from omnidiff.tasks.captioning import pick_caption


@dataclass
class TextToImageTask:
    name: ClassVar[str] = "t2i"
    modalities: ClassVar[tuple[str, ...]] = ("image", "text")
    uncond_prob: float = 0.1

    def prompt(self, toks, vocab, caption: str | None) -> torch.Tensor:
        """The prefix for a caption; ``None`` gives the unconditional prefix (``<uncond>``) for guidance."""
        if caption is None:
            condition = specials(vocab, "<uncond>")
        elif not isinstance(caption, str) or not caption.strip():
            raise ValueError("the caption is empty; describe the image to draw (or pass None for unconditional)")
        else:
            condition = text_ids(toks, vocab, caption)
        return torch.cat([specials(vocab, "<bos>", "<t2i>"), condition, specials(vocab, "<image>")])

    def format(self, sample: dict, toks, vocab, answer_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = require(sample, "png", "jpg", "jpeg")
        uncond = sample_rng(sample, "uncond").random() < self.uncond_prob
        prefix = self.prompt(toks, vocab, None if uncond else pick_caption(sample))
        answer = torch.cat([image_ids(toks, vocab, image), specials(vocab, "</image>")])
        return prefix, fit_answer(answer, answer_len, vocab.eos_id, f"the image of sample {sample.get('__key__')}")

    def needed_answer_len(self, toks, manifest: dict) -> int:
        """Every image has the tokenizer's codes (images are resized to its size) and ``</image>``."""
        return need(toks, "image").tokens_per_image + 1
