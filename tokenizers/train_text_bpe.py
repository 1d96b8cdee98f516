"""Train the text BPE: ``python tokenizers/train_text_bpe.py [--data runs/data/text] [--out runs/text_recipe/tokenizer]``.

Reads the train split of a text dataset built by ``data/build_text.py`` (or, without ``--data``,
the corpora directly), trains a byte-level BPE and reports its size and tokens per word on the
validation split. ``--task-data DIR ...`` adds the texts of task datasets (captions, questions,
answers, transcripts of their train splits), so the words the tasks answer with are whole tokens:
trained on the corpora alone, "triangle" is three tokens and "cyan" two, and a parallel decoder
can then mix pieces of different words ("a tr circle"). The report lists every task word that is
still split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omnidiff.tokenization.text import TextTokenizer  # noqa: E402


def read_texts(data: Path, split: str, limit: int | None = None) -> list[str]:
    import webdataset as wds

    shards = sorted(str(p) for p in data.glob(f"{split}-*.tar"))
    if not shards:
        raise FileNotFoundError(f"no {split} shards in {data}; build them with `python data/build_text.py --out {data}`")
    texts = []
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        texts.append(sample["txt"].decode("utf-8"))
        if limit and len(texts) >= limit:
            break
    return texts


def task_texts(data: Path) -> list[str]:
    """Every text a task dataset's train split teaches: ``txt`` plus the JSON's captions and Q/A."""
    import webdataset as wds

    shards = sorted(str(p) for p in data.glob("train-*.tar"))
    if not shards:
        raise FileNotFoundError(f"no train shards in {data}; build that dataset first (see `make data`)")
    texts = []
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        if "txt" in sample:
            texts.append(sample["txt"].decode("utf-8"))
        meta = json.loads(sample["json"]) if "json" in sample else {}
        texts.extend(meta.get("captions", []))
        texts.extend(" ".join(pair) for pair in meta.get("qa", []))
    return texts


def split_words(tok: TextTokenizer, texts: list[str]) -> list[str]:
    """The distinct words of ``texts`` that the tokenizer writes with more than one token."""
    words = {w for t in texts for w in t.lower().split() if w.isalpha()}
    return sorted(w for w in words if len(tok.encode(" " + w)) > 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("runs/data/text"))
    parser.add_argument("--out", type=Path, default=Path("runs/text_recipe/tokenizer"))
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--max-docs", type=int, default=None)
    parser.add_argument("--task-data", type=Path, nargs="*", default=[],
                        help="task datasets (shapes, digits, speech) whose captions, Q/A and transcripts join the corpus")
    args = parser.parse_args()
    try:
        train = read_texts(args.data, "train", args.max_docs)
        val = read_texts(args.data, "val", 2000)
        tasks = [t for d in args.task_data for t in task_texts(d)]
        start = time.time()
        tok = TextTokenizer.train(train + tasks, vocab_size=args.vocab_size)
        seconds = time.time() - start
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    tok.save(args.out)
    words = sum(len(t.split()) for t in val)
    tokens = sum(len(tok.encode(t)) for t in val)
    report = {"vocab_size": tok.vocab_size, "train_docs": len(train), "train_seconds": round(seconds, 1),
              "val_tokens_per_word": round(tokens / max(words, 1), 3), "task_texts": len(tasks),
              "task_words_split": split_words(tok, tasks)}
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
