"""The small interface every modality tokenizer shares (docs/design.md, "Tokenizers").

A tokenizer maps raw data of one modality to *local* ids ``0..vocab_size-1`` and back. It owns
one or more named ranges of the unified `Vocab` (``vocab_ranges``) and knows how to lay its local
ids out as one flat sequence of *global* ids (``to_global``/``from_global``); a multi-level audio
codec, for instance, interleaves its levels into per-level ranges. Weights are saved as
safetensors and settings as JSON, so ``load(dir)`` never unpickles anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from omnidiff.tokenization.vocab import Vocab


@runtime_checkable
class Tokenizer(Protocol):
    """What the task formatters and pipelines rely on."""

    modality: str  # "text" | "image" | "audio" | "action"

    @property
    def vocab_size(self) -> int:
        """Number of local ids over all of this tokenizer's ranges."""
        ...

    def vocab_ranges(self) -> dict[str, int]:
        """``{range_name: size}`` to register in the `Vocab`, in order."""
        ...

    def encode(self, raw: Any) -> torch.Tensor:
        """Raw example -> LongTensor of local ids (shape is tokenizer-specific, e.g. [T] or [T, levels])."""
        ...

    def decode(self, ids: torch.Tensor) -> Any:
        """Local ids (as returned by `encode`) -> raw example."""
        ...

    def encode_batch(self, raws: list[Any]) -> list[torch.Tensor]: ...

    def decode_batch(self, ids: list[torch.Tensor]) -> list[Any]: ...

    def to_global(self, vocab: Vocab, local_ids: torch.Tensor) -> torch.Tensor:
        """Local ids from `encode` -> flat 1-D LongTensor of global ids."""
        ...

    def from_global(self, vocab: Vocab, global_ids: torch.Tensor) -> torch.Tensor:
        """Inverse of `to_global`."""
        ...

    def save(self, directory: str | Path) -> None: ...

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer: ...


def register(vocab: Vocab, tokenizer: Tokenizer) -> None:
    """Add every range of ``tokenizer`` to ``vocab``."""
    for name, size in tokenizer.vocab_ranges().items():
        vocab.add_range(name, size, modality=tokenizer.modality)


def single_range_to_global(vocab: Vocab, name: str, local_ids: torch.Tensor) -> torch.Tensor:
    """`to_global` for tokenizers with one range: flatten, then offset."""
    return vocab.to_global(name, torch.as_tensor(local_ids).reshape(-1))
