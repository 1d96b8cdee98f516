"""Text: continuation, ``TextPipeline(prompts) -> continuations``, and fill-in-the-middle,
``TextPipeline.fill_middle(prefixes, suffixes, middle_len) -> middles``.

Fill-in-the-middle needs no reordering: the prefix text is the prompt, and the answer is
``middle_len`` masked columns followed by the suffix text, given in place (the answer of a text
sample holds given and masked tokens side by side in training too). The sampler decodes only the
masked span, so the middle is written seeing both what comes before and what comes after it. A
suffix shorter than the batch's longest is followed by <eos>, as short answers are in training.
"""

from __future__ import annotations

import torch

from omnidiff.pipelines.base import DiffusionPipeline


class TextPipeline(DiffusionPipeline):
    task = "text"

    def __call__(self, prompts: list[str], *, answer_len: int | None = None, seed: int = 0, config=None) -> list[str]:
        prompts = self._texts(prompts, "prompt")
        answers, _ = self.decode([self._prompt_ids(p) for p in prompts], self.answer_len(answer_len, 64), seed=seed,
                                 config=config)
        return [self.text_of(a) for a in answers]

    def fill_middle(self, prefixes: list[str], suffixes: list[str], middle_len: int, *, seed: int = 0,
                    config=None) -> list[str]:
        """The ``middle_len`` tokens between each prefix and suffix, decoded as text.

        Args:
            prefixes: the text before each span (non-empty).
            suffixes: the text after each span (may be empty), one per prefix.
            middle_len: how many tokens to fill.
        """
        prefixes, suffixes = self._texts(prefixes, "prefix"), [suffixes] if isinstance(suffixes, str) else suffixes
        if not isinstance(suffixes, list | tuple) or len(suffixes) != len(prefixes) or \
                not all(isinstance(s, str) for s in suffixes):
            raise ValueError(f"give one suffix text per prefix ({len(prefixes)}), got {suffixes!r}")
        if isinstance(middle_len, bool) or not isinstance(middle_len, int) or middle_len <= 0:
            raise ValueError(f"middle_len must be a positive number of tokens, got {middle_len!r}")
        tok, vocab = self.tokenizers.text, self.vocab
        tails = [tok.to_global(vocab, tok.encode(s)).long() if s else torch.zeros(0, dtype=torch.long) for s in suffixes]
        answer_len = middle_len + max(t.numel() for t in tails)
        init = torch.full((len(prefixes), answer_len), vocab.eos_id, dtype=torch.long)
        init[:, :middle_len] = vocab.mask_id
        for row, tail in enumerate(tails):
            init[row, middle_len: middle_len + tail.numel()] = tail
        answers, _ = self.decode([self._prompt_ids(p) for p in prefixes], answer_len, seed=seed, config=config,
                                 answer_init=init)
        return [tok.decode_global(vocab, a[:middle_len], stop_at_eos=False) for a in answers]

    def _prompt_ids(self, text: str) -> torch.Tensor:
        tok, vocab = self.tokenizers.text, self.vocab
        return torch.cat([torch.tensor([vocab.bos_id]), tok.to_global(vocab, tok.encode(text)).long()])

    @staticmethod
    def _texts(texts, what: str) -> list[str]:
        if isinstance(texts, str):
            texts = [texts]
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ValueError(f"every {what} must be non-empty text")
        return list(texts)
