"""Weighted multi-task mixing: task streams -> formatted examples -> collated batches, resumable exactly.

Each task reads its own `ShardStream` and has its own answer length. Batch ``g`` (counted from the
start of training on this rank) draws its tasks with a counter-based RNG
``default_rng([seed, rank, g])``, so the mixture holds no hidden random state.

Workers. With ``num_workers = W > 0`` a torch DataLoader runs W *virtual workers*; virtual worker v
makes the batches ``g`` with ``g % W == v`` from its own share of every task stream (each stream
group is split by position, see shards.py). The DataLoader returns its workers' outputs
round-robin, so batches arrive in order; each batch carries its maker's position *after* that
batch, and the loader keeps the position of the last batch it handed out per virtual worker.
Batches prefetched but never consumed are therefore made again after a resume: no repeat, no gap.
A position saved with W workers resumes with W workers (the sample-to-worker split depends on W).

`collate` (in formatting.py, re-exported here) builds the batch dict of the contract.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from omnidiff.data.formatting import audio_wave, collate, image_pixels, require
from omnidiff.data.shards import ShardStream, split_shards
from omnidiff.models.audio_encoder import audio_code_span
from omnidiff.models.image_encoder import image_code_start
from omnidiff.tasks import get_task
from omnidiff.tokenization.code_cache import enable_code_caches

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_FORMAT_ERRORS = 200


@dataclass
class TaskDataConfig:
    task: str = "text"
    path: str = "runs/data/text"
    weight: float = 1.0
    answer_len: int = 64
    split: str = "train"
    options: dict = field(default_factory=dict)  # task settings, e.g. {uncond_prob: 0.1} or {use_proprio: true}
    group: str = ""  # with data.group_by_task: tasks with the same group share batches (row by row, by weight);
    # "": a group of its own. Caption and VQA of one image set belong together (docs/ablations.md, section 15)
    start: float = 0.0  # a curriculum: the task joins the mixture after this fraction of the run's steps (before
    # it, weight 0), so a recipe shrunk with train.steps keeps its stages. Image-to-text tasks first, so the
    # model learns to read pictures before other tasks share its steps (docs/ablations.md, section 16)


def start_step(task: TaskDataConfig, steps: int) -> int:
    """The training step at which ``task`` joins a run of ``steps`` steps (0 without a curriculum)."""
    return int(task.start * steps)


def check_starts(tasks: list[TaskDataConfig], steps: int) -> None:
    """Refuse a curriculum that cannot run: a ``start`` outside [0, 1), or no task with a positive weight
    drawn from the first step of a ``steps``-step run."""
    starts = [t.start for t in tasks]
    if any(isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1 for s in starts):
        raise ValueError(f"task start must be a fraction of the run in [0, 1), got {starts}")
    if sum(t.weight for t in tasks if start_step(t, steps) == 0) <= 0:
        raise ValueError(f"no task with a positive weight starts at once (start {starts}); the first batches "
                         "would have nothing to draw from")


def task_with_options(name: str, options: dict):
    """Task ``name`` with ``options`` applied (unknown options are an error)."""
    task = get_task(name)
    if not options:
        return task
    allowed = {f.name for f in dataclasses.fields(task)} if dataclasses.is_dataclass(task) else set()
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"task {name!r} has no options {unknown}; allowed: {sorted(allowed) or 'none'}")
    return dataclasses.replace(task, **options)


def configured_task(spec: TaskDataConfig):
    """The task object of ``spec`` with its ``options`` applied (unknown options are an error)."""
    return task_with_options(spec.task, spec.options)


def dataset_manifest(path: str | Path) -> dict:
    """The ``manifest.json`` a builder wrote into dataset folder ``path`` (``{}`` when there is none)."""
    file = Path(path) / "manifest.json"
    if not file.is_file():
        return {}
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{file} is not readable JSON ({err}); rebuild the dataset") from None
    return manifest if isinstance(manifest, dict) else {}


def check_task(spec: TaskDataConfig, toks) -> None:
    """A ValueError when ``spec`` cannot be formatted with ``toks``: unknown options, a missing tokenizer,
    or an ``answer_len`` shorter than the answers its task makes (`Task.needed_answer_len`).

    Run when a loader is built and by the trainer before anything else, so a recipe whose images,
    clips or action chunks do not fit stops at once with the length to use, instead of the loader
    rejecting every sample.
    """
    task = configured_task(spec)
    missing = [m for m in task.modalities if getattr(toks, m, None) is None]
    if missing:
        raise ValueError(f"task {spec.task!r} needs the {missing} tokenizer(s); add them under tokenizers:")
    if spec.answer_len <= 0:
        raise ValueError(f"answer_len of task {spec.task!r} must be positive, got {spec.answer_len}")
    needed = task.needed_answer_len(toks, dataset_manifest(spec.path))
    if spec.answer_len < needed:
        raise ValueError(f"task {spec.task!r} ({spec.path}): answer_len {spec.answer_len} is too short; its answers "
                         f"need {needed} tokens with these tokenizers: set answer_len to at least {needed}")


@dataclass
class MixtureConfig:
    tasks: list[TaskDataConfig] = field(default_factory=lambda: [TaskDataConfig()])
    root: str = ""  # relative task paths (here and in val_data) are read under this folder; the resolved
    # config written into the run folder holds the joined paths
    batch_size: int = 8
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes (0: read and format in the training process)
    shuffle_buffer: int = 0  # min samples shuffled together (0: one shard at a time)
    group_by_task: bool = False  # True: every batch holds one task group (drawn by weight; `group` of a task,
    # else the task alone), so short-sequence tasks are never padded to the length of long ones (speech,
    # images) in the same batch
    prefix_multiple: int = 1  # answers start at a multiple of this column (the trainer sets the block size
    # under block attention)
    code_cache: int = 50_000  # image/audio codes remembered per tokenizer and process, so an epoch after the
    # first encodes nothing (tokenization/code_cache.py); 0: encode every time
    image_inputs: bool = False  # batches also carry the prompt images' pixels (the trainer sets it when the
    # model has an image encoder)
    audio_inputs: bool = False  # batches also carry the prompt clips' waveforms (set when it has an audio encoder)
    batches_per_step: int = 1  # batches one training step consumes per rank (the trainer sets grad_accum) and
    steps: int = 0  # the run's steps (the trainer sets train.steps): a task's start step is start * steps


def batch_groups(tasks: list[TaskDataConfig]) -> list[np.ndarray]:
    """Indices of the tasks that share batches under ``group_by_task``: one list per ``group`` name, and
    one per task without a group, in order of first appearance."""
    keys = [t.group or f"#{i}" for i, t in enumerate(tasks)]
    return [np.array([i for i, k in enumerate(keys) if k == key]) for key in dict.fromkeys(keys)]


class _BatchMaker:
    """One virtual worker: its share of every task stream, formatting, and collation."""

    def __init__(self, cfg: MixtureConfig, toks, vocab, *, rank: int, world_size: int, worker: int, num_workers: int):
        self.cfg, self.toks, self.vocab, self.rank = cfg, toks, vocab, rank
        self.tasks = [configured_task(t) for t in cfg.tasks]
        self.streams = [ShardStream(split_shards(t.path, t.split), seed=cfg.seed + 7919 * i, rank=rank,
                                    world_size=world_size, shuffle_buffer=cfg.shuffle_buffer, worker=worker,
                                    num_workers=num_workers) for i, t in enumerate(cfg.tasks)]
        self.weights = np.array([t.weight for t in cfg.tasks], dtype=np.float64)
        self.starts = np.array([start_step(t, cfg.steps) for t in cfg.tasks])
        self.groups = batch_groups(cfg.tasks)
        self.format_errors = 0
        self._iters = [iter(s) for s in self.streams]

    def state_dict(self) -> dict:
        return {"streams": [s.state_dict() for s in self.streams], "format_errors": self.format_errors}

    def load_state_dict(self, state: dict) -> None:
        if len(state["streams"]) != len(self.streams):
            raise ValueError(f"data position has {len(state['streams'])} task streams, the mixture has "
                             f"{len(self.streams)}: resume with the same data.tasks")
        for stream, st in zip(self.streams, state["streams"], strict=True):
            stream.load_state_dict(st)
        self.format_errors = state.get("format_errors", 0)
        self._iters = [iter(s) for s in self.streams]

    def example(self, i: int) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """((prefix, answer), the prompt image's pixels or None, the prompt clip's wave or None) of the next
        sample of task ``i``."""
        spec = self.cfg.tasks[i]
        for _ in range(MAX_CONSECUTIVE_FORMAT_ERRORS):
            sample = next(self._iters[i])
            try:
                pair = self.tasks[i].format(sample, self.toks, self.vocab, spec.answer_len)
                return pair, self.prompt_pixels(pair[0], sample), self.prompt_wave(pair[0], sample)
            except (ValueError, KeyError, OSError) as err:
                self.format_errors += 1
                log.warning("skipping sample %s of %s (task %s): %s", sample.get("__key__"), sample.get("__shard__"),
                            spec.task, err)
        raise ValueError(f"{MAX_CONSECUTIVE_FORMAT_ERRORS} samples in a row of task {spec.task!r} ({spec.path}) "
                         f"could not be formatted; see the warnings above (answer_len {spec.answer_len} too short?)")

    def prompt_pixels(self, prefix: torch.Tensor, sample: dict) -> torch.Tensor | None:
        """The sample's picture as pixels when image inputs are on and its prompt holds image codes."""
        if not self.cfg.image_inputs or image_code_start(prefix, self.vocab) < 0:
            return None
        return image_pixels(self.toks, require(sample, "png", "jpg", "jpeg"))

    def prompt_wave(self, prefix: torch.Tensor, sample: dict) -> torch.Tensor | None:
        """The sample's clip as a waveform when audio inputs are on and its prompt holds audio codes."""
        if not self.cfg.audio_inputs or audio_code_span(prefix, self.vocab)[0] < 0:
            return None
        return audio_wave(self.toks, require(sample, "wav"))

    def probs(self, batch_index: int) -> np.ndarray:
        """Each task's share of batch ``batch_index``: its weight once its start step is reached, else 0."""
        weights = np.where(self.starts <= batch_index // self.cfg.batches_per_step, self.weights, 0.0)
        return weights / weights.sum()

    def make(self, batch_index: int) -> dict:
        rng = np.random.default_rng([self.cfg.seed, self.rank, batch_index])
        probs = self.probs(batch_index)
        if self.cfg.group_by_task:
            live = [g for g in self.groups if probs[g].sum() > 0]
            members = live[int(rng.choice(len(live), p=[probs[g].sum() for g in live]))]
            within = probs[members] / probs[members].sum()
            picks = [int(i) for i in rng.choice(members, size=self.cfg.batch_size, p=within)]
        else:
            picks = rng.choice(len(self.tasks), size=self.cfg.batch_size, p=probs).tolist()
        examples, pixels, waves = zip(*[self.example(i) for i in picks], strict=True)
        return collate(list(examples), self.vocab, [self.cfg.tasks[i].task for i in picks], self.cfg.prefix_multiple,
                       list(pixels) if self.cfg.image_inputs else None, list(waves) if self.cfg.audio_inputs else None)


class _WorkerBatches(torch.utils.data.IterableDataset):
    """What each DataLoader worker runs: batches ``start + w, start + w + W, ...`` with their positions."""

    def __init__(self, loader: MixtureLoader):
        super().__init__()
        self.args = (loader.cfg, loader.toks, loader.vocab)
        self.rank, self.world_size = loader.rank, loader.world_size
        self.start, self.states = loader.batches, list(loader.worker_states)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        assert info is not None, "_WorkerBatches only runs inside DataLoader workers"
        num_workers = info.num_workers
        batch_index = self.start + info.id
        virtual = batch_index % num_workers
        maker = _BatchMaker(*self.args, rank=self.rank, world_size=self.world_size, worker=virtual,
                            num_workers=num_workers)
        if self.states[virtual] is not None:
            maker.load_state_dict(self.states[virtual])
        while True:
            batch = maker.make(batch_index)
            yield batch, virtual, maker.state_dict()
            batch_index += num_workers


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # W workers plus the trainer share the cores: no nested thread pools


class MixtureLoader:
    """Infinite iterator of collated batches drawn from several tasks by weight; see the module docstring."""

    def __init__(self, cfg: MixtureConfig, toks, vocab, *, rank: int = 0, world_size: int = 1):
        if cfg.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {cfg.batch_size}")
        if not cfg.tasks:
            raise ValueError("the data mixture has no tasks")
        if cfg.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {cfg.num_workers}")
        weights = [t.weight for t in cfg.tasks]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"task weights must be >= 0 with a positive sum, got {weights}")
        check_starts(cfg.tasks, cfg.steps)
        if cfg.batches_per_step < 1:
            raise ValueError(f"batches_per_step must be >= 1, got {cfg.batches_per_step}")
        for t in cfg.tasks:
            check_task(t, toks)
        if cfg.code_cache < 0:
            raise ValueError(f"data.code_cache must be >= 0 entries (0 turns it off), got {cfg.code_cache}")
        enable_code_caches(toks, cfg.code_cache)
        self.cfg, self.toks, self.vocab = cfg, toks, vocab
        self.rank, self.world_size = rank, world_size
        self.batches = 0
        self.num_workers = cfg.num_workers
        # num_workers == 0: one in-process maker; else one saved position per virtual worker.
        self._maker = None if self.num_workers else self._new_maker(0, 1)
        self.worker_states: list[dict | None] = [None] * self.num_workers
        self._it = None

    def _new_maker(self, worker: int, num_workers: int) -> _BatchMaker:
        return _BatchMaker(self.cfg, self.toks, self.vocab, rank=self.rank, world_size=self.world_size,
                           worker=worker, num_workers=num_workers)

    @property
    def streams(self) -> list[ShardStream]:
        """The task streams (in-process loaders only: with workers the streams live in the workers)."""
        if self._maker is None:
            raise AttributeError("a loader with num_workers > 0 has no in-process streams")
        return self._maker.streams

    def _states(self) -> list[dict]:
        return [self._maker.state_dict()] if self._maker is not None else [s for s in self.worker_states if s]

    @property
    def skipped(self) -> int:
        """Corrupt or unreadable samples skipped so far (as of the last batch handed out)."""
        return sum(st["skipped"] for s in self._states() for st in s["streams"])

    @property
    def format_errors(self) -> int:
        return sum(s["format_errors"] for s in self._states())

    def state_dict(self) -> dict:
        if self._maker is not None:
            return {"batches": self.batches, "num_workers": 0, "workers": [self._maker.state_dict()]}
        return {"batches": self.batches, "num_workers": self.num_workers, "workers": list(self.worker_states)}

    def load_state_dict(self, state: dict) -> None:
        if "workers" not in state:  # positions written before worker support: one in-process maker
            state = {"batches": state["batches"], "num_workers": 0,
                     "workers": [{"streams": state["streams"], "format_errors": 0}]}
        saved_workers = state.get("num_workers", 0)
        if saved_workers != self.num_workers:
            raise ValueError(f"data position was saved with data.num_workers={saved_workers}, this loader has "
                             f"{self.num_workers}: resume with the same number of workers")
        self.close()
        self.batches = state["batches"]
        if self._maker is not None:
            self._maker.load_state_dict(state["workers"][0])
        else:
            self.worker_states = list(state["workers"])

    def close(self) -> None:
        """Stop the worker processes (they restart on the next batch)."""
        self._it = None

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._maker is not None:
            batch = self._maker.make(self.batches)
            self.batches += 1
            return batch
        if self._it is None:
            loader = torch.utils.data.DataLoader(_WorkerBatches(self), batch_size=None, num_workers=self.num_workers,
                                                 worker_init_fn=_worker_init, prefetch_factor=2)
            self._it = iter(loader)
        batch, virtual, state = next(self._it)
        assert virtual == self.batches % self.num_workers, "DataLoader returned batches out of order"
        self.worker_states[virtual] = state
        self.batches += 1
        return batch


def build_mixture_loader(cfg: MixtureConfig, toks, vocab, *, rank: int = 0, world_size: int = 1) -> MixtureLoader:
    """The training/evaluation loader for ``cfg`` (see MixtureLoader)."""
    return MixtureLoader(cfg, toks, vocab, rank=rank, world_size=world_size)


__all__ = ["MixtureConfig", "MixtureLoader", "TaskDataConfig", "build_mixture_loader", "check_task", "collate"]
