"""Reading webdataset shards with an explicit, checkpointable position.

A `ShardStream` walks the shards of one split forever. Epoch e visits the shards (of this rank)
in an order permuted by ``(seed, e)`` and each shard's samples in an order permuted by
``(seed, e, shard)``; the position is ``(epoch, shard cursor, sample cursor)``, so `state_dict` /
`load_state_dict` resume exactly where reading stopped: no sample repeated, none skipped.
Shards are dealt to ranks round-robin (``shard_index % world_size == rank``).

Members are decoded here (``.txt``/``.json``/``.png``/``.wav``/``.npy``/``.cls``). A member that
fails to decode, or a truncated shard, is skipped, counted in ``skipped`` and logged with its
shard and key: never a crash mid-run, never silent.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def decode_member(ext: str, data: bytes):
    """Decode one webdataset member by its extension (unknown extensions stay bytes)."""
    if ext in ("txt", "text"):
        return data.decode("utf-8")
    if ext == "json":
        return json.loads(data.decode("utf-8"))
    if ext == "cls":
        return int(data.decode("utf-8"))
    if ext == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if ext == "png" or ext in ("jpg", "jpeg"):
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")
    if ext == "wav":
        import soundfile as sf

        wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
        return {"array": wave, "sample_rate": sr}
    return data


def split_shards(directory: str | Path, split: str) -> list[str]:
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"dataset folder {directory} does not exist; build it with the matching "
                                f"`python data/build_<name>.py --out {directory}`")
    shards = sorted(str(p) for p in directory.glob(f"{split}-*.tar"))
    if not shards:
        raise FileNotFoundError(f"no '{split}' shards ({split}-*.tar) in {directory}")
    return shards


class ShardStream:
    """Decoded samples of one split, forever, from an exact resumable position."""

    def __init__(self, shards: list[str], *, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        self.shards = [s for i, s in enumerate(shards) if i % world_size == rank]
        if not self.shards:
            raise ValueError(f"{len(shards)} shards cannot feed {world_size} ranks; write smaller shards "
                             f"(--shard-size) or use fewer ranks")
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.shard_cursor, self.sample_cursor = 0, 0, 0
        self.skipped = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard_cursor": self.shard_cursor, "sample_cursor": self.sample_cursor,
                "skipped": self.skipped, "num_shards": len(self.shards)}

    def load_state_dict(self, state: dict) -> None:
        if state["num_shards"] != len(self.shards):
            raise ValueError(f"data position was saved for {state['num_shards']} shards, this stream has "
                             f"{len(self.shards)}: the dataset or the number of ranks changed")
        self.epoch, self.shard_cursor = state["epoch"], state["shard_cursor"]
        self.sample_cursor, self.skipped = state["sample_cursor"], state["skipped"]

    def _order(self, n: int, *key: int) -> list[int]:
        if not self.shuffle:
            return list(range(n))
        return np.random.default_rng([self.seed, *key]).permutation(n).tolist()

    def _read_shard(self, path: str) -> list[dict]:
        import webdataset as wds

        samples: list[dict] = []

        def on_error(exn: Exception) -> bool:
            self.skipped += 1
            log.warning("skipping unreadable data in shard %s: %s", path, exn)
            return True

        # One explicit shard per call: rank/worker splitting is ours (above), not webdataset's.
        keep_all = lambda urls: urls  # noqa: E731
        for raw in wds.WebDataset(path, shardshuffle=False, empty_check=False, handler=on_error,
                                  nodesplitter=keep_all, workersplitter=keep_all):
            key = raw.get("__key__", "?")
            try:
                sample = {"__key__": key, "__shard__": path}
                for name, value in raw.items():
                    if not name.startswith("__"):
                        sample[name] = decode_member(name.rsplit(".", 1)[-1], value)
            except Exception as exn:  # a corrupt member: skip the sample, say where
                self.skipped += 1
                log.warning("skipping corrupt sample %s in shard %s: %s", key, path, exn)
                continue
            samples.append(sample)
        return samples

    def __iter__(self) -> Iterator[dict]:
        while True:
            shard_order = self._order(len(self.shards), self.epoch)
            while self.shard_cursor < len(self.shards):
                shard_id = shard_order[self.shard_cursor]
                samples = self._read_shard(self.shards[shard_id])
                order = self._order(len(samples), self.epoch, shard_id)
                while self.sample_cursor < len(samples):
                    sample = samples[order[self.sample_cursor]]
                    self.sample_cursor += 1  # advanced before yielding: the state names the next sample
                    yield sample
                self.shard_cursor, self.sample_cursor = self.shard_cursor + 1, 0
            self.epoch, self.shard_cursor = self.epoch + 1, 0
