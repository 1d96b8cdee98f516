"""Text continuation: ``TextPipeline(prompts) -> continuations``."""

from __future__ import annotations

import torch

from omnidiff.pipelines.base import DiffusionPipeline


class TextPipeline(DiffusionPipeline):
    task = "text"

    def __call__(self, prompts: list[str], *, answer_len: int | None = None, seed: int = 0, config=None) -> list[str]:
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ValueError("every prompt must be non-empty text")
        tok, vocab = self.tokenizers.text, self.vocab
        ids = [torch.cat([torch.tensor([vocab.bos_id]), tok.to_global(vocab, tok.encode(p)).long()]) for p in prompts]
        answers, _ = self.decode(ids, self.answer_len(answer_len, 64), seed=seed, config=config)
        return [self.text_of(a) for a in answers]
