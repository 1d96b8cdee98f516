"""Build the offline text corpus as webdataset shards: ``python data/build_text.py --out runs/data/text --num 20000``.

Documents from the KJV, WordNet glosses, fortunes and GCIDE (`omnidiff.data.sources.text`) are
pooled, cut to at most ``--max-chars`` at a word boundary, shuffled with the seed and dealt into
disjoint train/val/test splits. Each sample is ``{"txt": document, "json": {"source": corpus}}``.

``--min-chars N`` first joins consecutive documents of one corpus (verses into passages, glosses
into runs of entries), one per line, until each holds at least N characters: long documents for
recipes whose answers are long (the 256-token text recipe uses ``--min-chars 1200 --max-chars 1500``).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omnidiff.data.builder import build_dataset, parse_args, run_builder  # noqa: E402
from omnidiff.data.sources.text import CORPORA, load_corpus  # noqa: E402


def add_args(parser):
    parser.add_argument("--corpora", default=",".join(CORPORA), help=f"comma-separated subset of {list(CORPORA)}")
    parser.add_argument("--max-chars", type=int, default=600, help="longer documents are cut at a word boundary")
    parser.add_argument("--min-chars", type=int, default=0,
                        help="join consecutive documents of a corpus (one per line) until each has this many characters")


def cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0]


def join_until(docs, min_chars: int):
    """Consecutive documents joined with newlines into pieces of at least ``min_chars`` (the tail is dropped)."""
    if min_chars <= 0:
        yield from docs
        return
    piece: list[str] = []
    size = 0
    for doc in docs:
        piece.append(doc)
        size += len(doc) + 1
        if size >= min_chars:
            yield "\n".join(piece)
            piece, size = [], 0


def main() -> dict:
    args = parse_args(__doc__.splitlines()[0], add_args, default_num=20000)
    names = [c.strip() for c in args.extra["corpora"].split(",") if c.strip()]
    unknown = sorted(set(names) - set(CORPORA))
    if unknown:
        raise ValueError(f"unknown corpora {unknown}; available: {list(CORPORA)}")
    if args.extra["min_chars"] > args.extra["max_chars"]:
        raise ValueError(f"--min-chars {args.extra['min_chars']} is larger than --max-chars {args.extra['max_chars']}")
    pool = [(name, cut(doc, args.extra["max_chars"])) for name in names
            for doc in join_until(load_corpus(name), args.extra["min_chars"])]
    if args.num > len(pool):
        raise ValueError(f"--num {args.num} exceeds the {len(pool)} documents of {names}")
    random.Random(args.seed).shuffle(pool)
    starts, begin = {}, 0
    for split, n in args.split_counts().items():
        starts[split] = begin
        begin += n

    def samples(split: str, n: int, seed: int):
        for i in range(n):
            source, doc = pool[starts[split] + i]
            yield {"__key__": f"{split}-{i:08d}", "txt": doc, "json": {"source": source}}

    return build_dataset(args, "text", samples, sources=[f"debian:{n}" for n in names],
                         extra_manifest={"corpora": names, "max_chars": args.extra["max_chars"],
                                         "min_chars": args.extra["min_chars"]})


if __name__ == "__main__":
    run_builder(main)
