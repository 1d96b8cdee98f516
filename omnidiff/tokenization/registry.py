"""The set of modality tokenizers a model uses, and the `Vocab` they define together.

`TokenizerSet.build_vocab` registers the ranges in one fixed order (text, image, audio levels,
action) after the specials, so the same tokenizers always give the same ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omnidiff.files import read_json
from omnidiff.tokenization.base import register
from omnidiff.tokenization.vocab import Vocab

MODALITIES = ("text", "image", "audio", "action")


# modality -> (module, class): imported lazily so a text-only model never loads diffusers or torchaudio.
LOADERS: dict[str, tuple[str, str]] = {
    "text": ("omnidiff.tokenization.text", "TextTokenizer"),
    "image": ("omnidiff.tokenization.image", "ImageTokenizer"),
    "audio": ("omnidiff.tokenization.audio", "AudioTokenizer"),
    "action": ("omnidiff.tokenization.action", "ActionTokenizer"),
}


def _loader(modality: str):
    if modality not in LOADERS:
        raise ValueError(f"no tokenizer for modality {modality!r}; available: {sorted(LOADERS)}")
    module, name = LOADERS[modality]
    import importlib

    return getattr(importlib.import_module(module), name)


@dataclass
class TokenizerSet:
    text: object | None = None
    image: object | None = None
    audio: object | None = None
    action: object | None = None

    @classmethod
    def load(cls, paths: dict[str, str | Path]) -> TokenizerSet:
        """``{"text": dir, ...}`` -> the loaded tokenizers."""
        unknown = sorted(set(paths) - set(MODALITIES))
        if unknown:
            raise ValueError(f"unknown tokenizer modalities {unknown}; allowed: {list(MODALITIES)}")
        return cls(**{m: _loader(m).load(p) for m, p in paths.items() if p})

    def save(self, directory: str | Path) -> dict[str, str]:
        directory = Path(directory)
        paths = {}
        for m in MODALITIES:
            tok = getattr(self, m)
            if tok is not None:
                tok.save(directory / m)
                paths[m] = m
        (directory / "tokenizers.json").write_text(json.dumps(paths))
        return paths

    @classmethod
    def load_folder(cls, directory: str | Path) -> TokenizerSet:
        directory = Path(directory)
        index = directory / "tokenizers.json"
        if not index.exists():
            raise FileNotFoundError(f"{index} is missing: not a folder written by TokenizerSet.save")
        paths = read_json(index, "tokenizer index")
        if not isinstance(paths, dict) or not all(isinstance(p, str) for p in paths.values()):
            raise ValueError(f"{index} must map modalities to sub-folders, e.g. {{\"text\": \"text\"}}; save the "
                             "tokenizers again")
        return cls.load({m: directory / p for m, p in paths.items()})

    def present(self) -> list[str]:
        return [m for m in MODALITIES if getattr(self, m) is not None]

    def build_vocab(self) -> Vocab:
        vocab = Vocab()
        for m in self.present():
            register(vocab, getattr(self, m))
        return vocab
