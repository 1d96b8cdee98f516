"""Small on-disk datasets and tokenizers built in a temporary folder, shared by several test files."""

from __future__ import annotations

from pathlib import Path

from omnidiff.data.builder import write_split
from omnidiff.tokenization.text import TextTokenizer

SENTENCES = [
    "the red circle is left of the blue square",
    "a small green triangle sits above a large yellow circle",
    "in the beginning god created the heaven and the earth",
    "fold: the act of folding; he gave the napkins a double fold",
    "the only thing cheaper than hardware is talk",
    "seven handwritten digits on a white page",
]


def text_docs(n: int) -> list[str]:
    return [f"{SENTENCES[i % len(SENTENCES)]} number {i} and {SENTENCES[(i * 7 + 3) % len(SENTENCES)]}"
            for i in range(n)]


def build_text_dataset(root: Path, n_train: int = 60, n_val: int = 12, shard_size: int = 16) -> Path:
    out = root / "text"
    for split, n in (("train", n_train), ("val", n_val)):
        docs = text_docs(n) if split == "train" else text_docs(n + 1000)[-n:]
        write_split(out, split, ({"__key__": f"{split}-{i:05d}", "txt": d, "json": {"i": i}}
                                 for i, d in enumerate(docs)), shard_size)
    return out


def build_text_tokenizer(root: Path) -> Path:
    out = root / "bpe"
    TextTokenizer.train(text_docs(200), vocab_size=300, show_progress=False).save(out)
    return out
