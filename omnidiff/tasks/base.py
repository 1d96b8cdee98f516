"""The small protocol every task shares: a sample from the shards -> (prefix ids, answer ids).

Both are 1-D LongTensors of global ids (docs/design.md, "Task sequences"). The answer comes back exactly
``answer_len`` long: cut when longer, padded with <eos> when shorter (the model learns where to
stop). The prefix is never masked; the answer is what the model learns to fill in.

Each task also says the shortest ``answer_len`` it can work with (`needed_answer_len`), so a recipe
whose images, audio or action chunks cannot fit is refused before training instead of having every
sample rejected by the loader.
"""

from __future__ import annotations

from typing import Protocol

import torch

MIN_TEXT_ANSWER_LEN = 2  # one token of text and the <eos> that `pad_answer` always ends with


class Task(Protocol):
    name: str
    modalities: tuple[str, ...]  # tokenizers the task needs, e.g. ("text",) or ("image", "text")

    def format(self, sample: dict, toks, vocab, answer_len: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def needed_answer_len(self, toks, manifest: dict) -> int:
        """The shortest ``answer_len`` that holds every answer `format` makes with ``toks``.

        ``manifest`` is the dataset's manifest.json (``{}`` when unknown); tasks whose answer size
        depends on the data (clip length, chunk horizon) read it from there. Text answers are cut
        to fit, so their tasks need only `MIN_TEXT_ANSWER_LEN`.
        """
        ...


def pad_answer(answer: torch.Tensor, answer_len: int, eos_id: int) -> torch.Tensor:
    """Cut ``answer`` to ``answer_len``-1 tokens and pad with <eos> (at least one <eos> always ends it)."""
    answer = answer[: answer_len - 1]
    pad = torch.full((answer_len - answer.numel(),), eos_id, dtype=torch.long)
    return torch.cat([answer.long(), pad])
