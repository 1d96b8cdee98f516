"""Text continuation: ``<bos> prompt | continuation <eos>...``.

The first quarter of the document's tokens (at least one, at most ``max_prompt_tokens``) is the
prompt; the rest, up to the answer length, is the continuation to fill in.
"""

from __future__ import annotations

import torch

from omnidiff.tasks.base import MIN_TEXT_ANSWER_LEN, pad_answer


class TextTask:
    name = "text"
    modalities = ("text",)

    def __init__(self, prompt_fraction: float = 0.25, max_prompt_tokens: int = 64):
        self.prompt_fraction, self.max_prompt_tokens = prompt_fraction, max_prompt_tokens

    def split(self, num_tokens: int) -> int:
        return max(1, min(self.max_prompt_tokens, int(num_tokens * self.prompt_fraction)))

    def format(self, sample: dict, toks, vocab, answer_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        text = sample.get("txt")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text sample {sample.get('__key__', '?')} has no 'txt' member")
        ids = toks.text.to_global(vocab, toks.text.encode(text))
        cut = self.split(ids.numel())
        prefix = torch.cat([torch.tensor([vocab.bos_id]), ids[:cut]])
        return prefix, pad_answer(ids[cut:], answer_len, vocab.eos_id)

    def needed_answer_len(self, toks, manifest: dict) -> int:
        return MIN_TEXT_ANSWER_LEN
