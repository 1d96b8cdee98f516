"""Text tokenizer: a byte-level BPE (Hugging Face ``tokenizers``) trained here, or a local transformers tokenizer.

Local ids are the BPE's own ids; the tokenizer owns one range of the `Vocab`, named ``text``.
Byte-level BPE never produces an unknown token, so any string round-trips exactly. Special tokens
(<bos>, <eos>, <mask>, ...) are not part of the BPE: they live in the `Vocab`'s specials.

Folder layout written by `save`: ``tokenizer.json`` (the BPE) + ``omnidiff_tokenizer.json``
(``{"modality": "text", "kind": "bpe"}``). `load` also accepts a folder written by a
transformers tokenizer's ``save_pretrained`` (``tokenizer_config.json``), read offline.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

from omnidiff.files import read_json
from omnidiff.tokenization.base import single_range_to_global
from omnidiff.tokenization.vocab import Vocab

CONFIG_NAME = "omnidiff_tokenizer.json"


class TextTokenizer:
    modality = "text"
    range_name = "text"

    def __init__(self, backend, kind: str = "bpe"):
        self.backend, self.kind = backend, kind  # a tokenizers.Tokenizer, or a transformers tokenizer

    # ------------------------------------------------------------------ construction
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2,
              show_progress: bool = True) -> TextTokenizer:
        """Train a byte-level BPE of ``vocab_size`` ids on ``texts``."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise ValueError(f"a byte-level BPE needs vocab_size >= 257 (256 bytes + merges), got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=show_progress,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok, "bpe")

    @classmethod
    def load(cls, directory: str | Path) -> TextTokenizer:
        directory = Path(directory)
        settings = read_json(directory / CONFIG_NAME, "tokenizer settings") if (directory / CONFIG_NAME).exists() else None
        # A transformers tokenizer saved by `save` reloads as one: its own encode adds no special
        # tokens, where the raw tokenizer.json of e.g. a Llama-3 would prepend its BOS to every text.
        saved_by_transformers = isinstance(settings, dict) and settings.get("kind") == "transformers"
        if (directory / "tokenizer.json").exists() and settings is not None and not saved_by_transformers:
            from tokenizers import Tokenizer

            try:
                return cls(Tokenizer.from_file(str(directory / "tokenizer.json")), "bpe")
            except Exception as err:  # the Rust library raises a bare Exception for a file it cannot parse
                raise ValueError(f"{directory / 'tokenizer.json'} is not a readable BPE ({err}); save the "
                                 "tokenizer again") from None
        if (directory / "tokenizer_config.json").exists():
            from transformers import AutoTokenizer

            return cls(AutoTokenizer.from_pretrained(str(directory), local_files_only=True), "transformers")
        raise FileNotFoundError(f"{directory} holds no text tokenizer: expected tokenizer.json + {CONFIG_NAME} "
                                f"(TextTokenizer.save) or tokenizer_config.json (a transformers tokenizer folder)")

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.kind == "bpe":
            self.backend.save(str(directory / "tokenizer.json"))
        else:
            self.backend.save_pretrained(str(directory))
        (directory / CONFIG_NAME).write_text(json.dumps({"modality": "text", "kind": self.kind}))

    # ------------------------------------------------------------------ the Tokenizer protocol
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size() if self.kind == "bpe" else len(self.backend)

    def vocab_ranges(self) -> dict[str, int]:
        return {self.range_name: self.vocab_size}

    def encode(self, text: str) -> torch.Tensor:
        if not isinstance(text, str):
            raise ValueError(f"text tokenizer encodes str, got {type(text).__name__}")
        ids = self.backend.encode(text).ids if self.kind == "bpe" else self.backend.encode(text, add_special_tokens=False)
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        ids = torch.as_tensor(ids).reshape(-1).tolist()
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"text ids must be in [0, {self.vocab_size}); got {bad[:5]}")
        if self.kind == "bpe":
            return self.backend.decode(ids, skip_special_tokens=False)
        return self.backend.decode(ids)

    def encode_batch(self, texts: list[str]) -> list[torch.Tensor]:
        return [self.encode(t) for t in texts]

    def decode_batch(self, ids: list[torch.Tensor]) -> list[str]:
        return [self.decode(i) for i in ids]

    def to_global(self, vocab: Vocab, local_ids: torch.Tensor) -> torch.Tensor:
        return single_range_to_global(vocab, self.range_name, local_ids)

    def from_global(self, vocab: Vocab, global_ids: torch.Tensor) -> torch.Tensor:
        return vocab.to_local(self.range_name, torch.as_tensor(global_ids).reshape(-1))

    def decode_global(self, vocab: Vocab, global_ids: torch.Tensor, stop_at_eos: bool = True) -> str:
        """Text of global ids: stops at the first <eos>, drops other specials."""
        ids = torch.as_tensor(global_ids).reshape(-1)
        if stop_at_eos and (ids == vocab.eos_id).any():
            ids = ids[: int((ids == vocab.eos_id).int().argmax())]
        text_range = vocab.range(self.range_name)
        ids = ids[(ids >= text_range.offset) & (ids < text_range.end)]
        return self.decode(self.from_global(vocab, ids))
