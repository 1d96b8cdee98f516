"""Reading webdataset shards with an explicit, checkpointable position.

A `ShardStream` walks the shards of one split forever. Three deterministic choices make its
position a handful of integers instead of a buffer snapshot:

- shards are dealt to ranks round-robin (``shard_index % world_size == rank``);
- epoch e visits this rank's shards in an order permuted by ``(seed, e)``;
- consecutive shards (in that order) are read into a *group* of at least ``shuffle_buffer`` samples
  (one shard when the buffer is smaller than a shard), and the group is permuted by
  ``(seed, e, first shard of the group)``. The group plays the role of a shuffle buffer, but its
  order is a pure function of the position, so it can be rebuilt on resume.

The position is ``(epoch, shard cursor at the start of the group, sample cursor in the group)``:
`state_dict` / `load_state_dict` resume exactly where reading stopped, with no sample repeated and
none skipped. DataLoader workers split a group by position (``position % num_workers == worker``),
so every worker re-reads the tar bytes but decodes only its own samples.

Members are decoded here by extension (``.txt``/``.json``/``.cls``/``.png``/``.jpg``/``.wav``/``.npy``,
also compound names such as ``actions.npy``). A member that fails to decode, or a truncated
shard, is skipped, counted in ``skipped`` and logged with its shard and key: never a crash mid-run,
never silent.
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
    """Decode one webdataset member by its (last) extension; unknown extensions stay bytes."""
    if ext in ("txt", "text"):
        return data.decode("utf-8")
    if ext == "json":
        return json.loads(data.decode("utf-8"))
    if ext == "cls":
        return int(data.decode("utf-8"))
    if ext == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if ext in ("png", "jpg", "jpeg"):
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.load()  # forces the full decode, so a truncated file fails here and not in a task
            return im.convert("RGB")
    if ext == "wav":
        import soundfile as sf

        check_wav_length(data)
        wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
        return {"array": wave, "sample_rate": sr}
    return data


def check_wav_length(data: bytes, file_size: int | None = None) -> None:
    """Refuse a WAV whose data chunk is shorter than its header says (libsndfile would read it silently).

    ``data`` is the file's bytes, or only its first bytes when ``file_size`` gives the whole length.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return  # not RIFF/WAVE: soundfile decides
    total = len(data) if file_size is None else file_size
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos: pos + 4], int.from_bytes(data[pos + 4: pos + 8], "little")
        if chunk == b"data":
            if pos + 8 + size > total:
                raise ValueError(f"truncated WAV: the header declares {size} bytes of audio, the file holds "
                                 f"{total - pos - 8}")
            return
        pos += 8 + size + (size & 1)


def decode_sample(raw: dict) -> dict:
    """Decode every member of a raw webdataset sample; ``__``-prefixed fields are kept as they are."""
    sample = {k: v for k, v in raw.items() if k.startswith("__")}
    for name, value in raw.items():
        if not name.startswith("__"):
            sample[name] = decode_member(name.rsplit(".", 1)[-1], value)
    return sample


def split_shards(directory: str | Path, split: str) -> list[str]:
    """Sorted ``{split}-*.tar`` shard paths of a built dataset folder."""
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"dataset folder {directory} does not exist; build it with the matching "
                                f"`python data/build_<name>.py --out {directory}`")
    shards = sorted(str(p) for p in directory.glob(f"{split}-*.tar"))
    if not shards:
        raise FileNotFoundError(f"no '{split}' shards ({split}-*.tar) in {directory}")
    return shards


class ShardStream:
    """Decoded samples of one split, forever, from an exact resumable position.

    Args:
        shards: shard paths of the split (all ranks; this rank keeps its share).
        seed: seeds the shard and sample orders.
        rank, world_size: data-parallel position; ranks read disjoint shards.
        shuffle: False reads shards and samples in stored order (tests, evaluation).
        shuffle_buffer: minimum number of samples permuted together (0: one shard at a time).
        worker, num_workers: DataLoader worker position; workers take disjoint samples of each group.
    """

    def __init__(self, shards: list[str], *, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 shuffle_buffer: int = 0, worker: int = 0, num_workers: int = 1):
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        if num_workers <= 0 or not 0 <= worker < num_workers:
            raise ValueError(f"worker {worker} must be in [0, num_workers={num_workers})")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0 samples, got {shuffle_buffer}")
        self.shards = [s for i, s in enumerate(shards) if i % world_size == rank]
        if not self.shards:
            raise ValueError(f"{len(shards)} shards cannot feed {world_size} ranks; write smaller shards "
                             f"(--shard-size) or use fewer ranks")
        self.seed, self.shuffle, self.shuffle_buffer = seed, shuffle, shuffle_buffer
        self.worker, self.num_workers = worker, num_workers
        self.epoch, self.shard_cursor, self.sample_cursor = 0, 0, 0
        self.skipped = 0  # corrupt samples and unreadable shard data seen by this stream
        self._group_read_errors = 0  # tar-level errors of the current group (re-counted when it is re-read)

    # ------------------------------------------------------------------ position
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard_cursor": self.shard_cursor, "sample_cursor": self.sample_cursor,
                "skipped": self.skipped, "group_read_errors": self._group_read_errors,
                "num_shards": len(self.shards), "shuffle_buffer": self.shuffle_buffer,
                "worker": self.worker, "num_workers": self.num_workers}

    def load_state_dict(self, state: dict) -> None:
        if state["num_shards"] != len(self.shards):
            raise ValueError(f"data position was saved for {state['num_shards']} shards, this stream has "
                             f"{len(self.shards)}: the dataset or the number of ranks changed")
        for name in ("shuffle_buffer", "num_workers", "worker"):
            if name in state and state[name] != getattr(self, name):
                raise ValueError(f"data position was saved with {name}={state[name]}, this stream has "
                                 f"{name}={getattr(self, name)}: resume with the same data settings")
        self.epoch, self.shard_cursor = state["epoch"], state["shard_cursor"]
        self.sample_cursor = state["sample_cursor"]
        # The current group is read again on resume; its shard-level errors will be counted again.
        self._group_read_errors = state.get("group_read_errors", 0)
        self.skipped = state["skipped"] - self._group_read_errors

    # ------------------------------------------------------------------ reading
    def _order(self, n: int, *key: int) -> list[int]:
        if not self.shuffle:
            return list(range(n))
        return np.random.default_rng([self.seed, *key]).permutation(n).tolist()

    def _read_raw(self, path: str) -> list[dict]:
        """Raw (undecoded) samples of one shard; a truncated or garbled tar yields what it can."""
        import webdataset as wds

        samples: list[dict] = []

        def on_error(exn: Exception) -> bool:
            self._group_read_errors += 1
            if self.worker == 0:  # every worker reads the same bytes; one of them reports
                self.skipped += 1
                log.warning("skipping unreadable data in shard %s: %s", path, exn)
            return True

        # One explicit shard per call: rank/worker splitting is ours (above), not webdataset's.
        keep_all = lambda urls: urls  # noqa: E731
        for raw in wds.WebDataset(path, shardshuffle=False, empty_check=False, handler=on_error,
                                  nodesplitter=keep_all, workersplitter=keep_all):
            raw["__shard__"] = path
            samples.append(raw)
        return samples

    def _read_group(self, shard_order: list[int], start: int) -> tuple[list[dict], int]:
        """Raw samples of the group starting at ``start`` and the cursor of the next group."""
        self._group_read_errors = 0
        group: list[dict] = []
        cursor = start
        while cursor < len(shard_order) and (cursor == start or len(group) < self.shuffle_buffer):
            group.extend(self._read_raw(self.shards[shard_order[cursor]]))
            cursor += 1
        return group, cursor

    def __iter__(self) -> Iterator[dict]:
        while True:
            shard_order = self._order(len(self.shards), self.epoch)
            whole_epoch, epoch_samples = self.shard_cursor == 0, 0
            while self.shard_cursor < len(self.shards):
                group, next_cursor = self._read_group(shard_order, self.shard_cursor)
                epoch_samples += len(group)
                order = self._order(len(group), self.epoch, self.shard_cursor)
                while self.sample_cursor < len(group):
                    position = self.sample_cursor
                    self.sample_cursor += 1  # advanced before yielding: the state names the next sample
                    if position % self.num_workers != self.worker:
                        continue
                    raw = group[order[position]]
                    try:
                        sample = decode_sample(raw)
                    except Exception as exn:  # a corrupt member: skip the sample, say where
                        self.skipped += 1
                        log.warning("skipping corrupt sample %s in shard %s: %s", raw.get("__key__"),
                                    raw["__shard__"], exn)
                        continue
                    sample.pop("__url__", None)
                    sample["__epoch__"] = self.epoch
                    yield sample
                self.shard_cursor, self.sample_cursor = next_cursor, 0
            if whole_epoch and epoch_samples == 0:
                raise ValueError(f"no readable samples in {len(self.shards)} shards ({self.shards[0]} ...): "
                                 f"rebuild the dataset")
            self.epoch, self.shard_cursor = self.epoch + 1, 0


def read_split(directory: str | Path, split: str, num: int | None = None) -> list[dict]:
    """The first ``num`` samples of a split in shard order, each at most once (a smaller split, or any split
    when ``num`` is None, is read whole)."""
    samples = []
    for sample in ShardStream(split_shards(directory, split), shuffle=False):
        if sample["__epoch__"] > 0 or len(samples) == num:  # the stream loops forever
            break
        samples.append(sample)
    return samples
