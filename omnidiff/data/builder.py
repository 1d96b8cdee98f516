"""Shared scaffolding for the dataset builders in the top-level ``data/`` folder.

Every builder is ``python data/build_X.py --out DIR --num N --seed S [...]``: deterministic for a
seed, a progress bar, train/val/test splits written as webdataset tar shards, and a
``manifest.json`` with counts and sources. This module owns the command line, the checks on it
and the shard writing, so each builder only yields samples.

A sample is a dict in webdataset form: ``{"__key__": str, "png": bytes, "txt": str, "json": dict, ...}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")


class MissingSystemPackage(RuntimeError):
    """A system tool the builder needs is absent; the message names the make target that installs it."""


def require_binary(name: str, package: str) -> str:
    """Path of executable ``name`` or a MissingSystemPackage naming the Debian package and make target."""
    path = shutil.which(name)
    if path is None:
        raise MissingSystemPackage(
            f"'{name}' is not installed (Debian package '{package}'); run `make data-deps` to install the data builders' system packages"
        )
    return path


@dataclass
class BuildArgs:
    out: Path
    num: int
    seed: int
    split_fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
    shard_size: int = 1000
    extra: dict = field(default_factory=dict)

    def split_counts(self) -> dict[str, int]:
        n_val = max(1, round(self.num * self.split_fractions[1])) if self.num >= 3 else 0
        n_test = max(1, round(self.num * self.split_fractions[2])) if self.num >= 3 else 0
        return {"train": self.num - n_val - n_test, "val": n_val, "test": n_test}


def parse_args(description: str, add_args: Callable[[argparse.ArgumentParser], None] | None = None,
               argv: list[str] | None = None, default_num: int = 1000) -> BuildArgs:
    """Parse and validate the common builder arguments (exits with status 2 on bad input)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", required=True, type=Path, help="output folder (its parent must exist)")
    parser.add_argument("--num", type=int, default=default_num, help="number of samples over all splits (> 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per tar shard")
    if add_args is not None:
        add_args(parser)
    ns = parser.parse_args(argv)
    if ns.num <= 0:
        parser.error(f"--num must be a positive number of samples, got {ns.num}")
    if ns.shard_size <= 0:
        parser.error(f"--shard-size must be positive, got {ns.shard_size}")
    if not ns.out.parent.exists():
        parser.error(f"the parent of --out does not exist: {ns.out.parent} (create it first)")
    extra = {k: v for k, v in vars(ns).items() if k not in ("out", "num", "seed", "shard_size")}
    return BuildArgs(out=ns.out, num=ns.num, seed=ns.seed, shard_size=ns.shard_size, extra=extra)


def write_split(out_dir: Path, split: str, samples: Iterable[dict], shard_size: int) -> dict:
    """Write ``samples`` as ``{split}-%06d.tar`` shards; returns {"count", "shards", "bytes"}."""
    import webdataset as wds

    out_dir.mkdir(parents=True, exist_ok=True)
    pattern = str(out_dir / f"{split}-%06d.tar")
    count = 0
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
        for sample in samples:
            sink.write(sample)
            count += 1
    shards = sorted(p.name for p in out_dir.glob(f"{split}-*.tar"))
    size = sum((out_dir / s).stat().st_size for s in shards)
    return {"count": count, "shards": shards, "bytes": size}


def build_dataset(args: BuildArgs, name: str, make_samples: Callable[[str, int, int], Iterator[dict]],
                  sources: list[str], extra_manifest: dict | None = None) -> dict:
    """Run ``make_samples(split, n, seed)`` for each split, write shards and ``manifest.json``.

    Each split gets its own derived seed so splits never share samples for a given ``--seed``.
    """
    from tqdm import tqdm

    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {"dataset": name, "seed": args.seed, "sources": sources, "splits": {}, **(extra_manifest or {})}
    for split_index, (split, n) in enumerate(args.split_counts().items()):
        if n == 0:
            continue
        seed = args.seed * 1000 + split_index
        samples = tqdm(make_samples(split, n, seed), total=n, desc=f"{name}/{split}", unit="sample")
        manifest["splits"][split] = write_split(args.out, split, samples, args.shard_size)
    manifest["build_seconds"] = round(time.time() - start, 2)
    tmp = args.out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(args.out / "manifest.json")
    return manifest


def run_builder(main: Callable[[], dict]) -> None:
    """Call a builder's main, turning expected user errors into a message and exit status 1."""
    try:
        manifest = main()
    except (MissingSystemPackage, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    print(f"wrote {manifest['dataset']} {counts} in {manifest['build_seconds']}s")
