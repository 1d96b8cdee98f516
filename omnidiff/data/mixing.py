"""Weighted multi-task mixing and collation into the batch dict the objectives consume.

Each task reads its own `ShardStream`; batch i picks its tasks with a counter-based RNG
``default_rng([seed, rank, i])``, so the mixture needs no hidden state: the loader's position is the
batch counter plus every stream's position (`state_dict`), and resuming reproduces the exact
sequence of batches.

Batch dict (``collate``): ``tokens`` [B, L] (left pads, prefix, answer, then right pads when answer
lengths differ), ``padding_mask`` [B, L] (True on prefix and answer), ``answer_mask`` [B, L]
(True on answer columns), ``tasks`` (names).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from omnidiff.data.shards import ShardStream, split_shards
from omnidiff.tasks import get_task

log = logging.getLogger(__name__)


@dataclass
class TaskDataConfig:
    task: str = "text"
    path: str = "runs/data/text"
    weight: float = 1.0
    answer_len: int = 64
    split: str = "train"


@dataclass
class MixtureConfig:
    tasks: list[TaskDataConfig] = field(default_factory=lambda: [TaskDataConfig()])
    batch_size: int = 8
    seed: int = 0


def collate(examples: list[tuple[torch.Tensor, torch.Tensor]], vocab, tasks: list[str] | None = None) -> dict:
    """Pack (prefix, answer) pairs: prefixes right-aligned to a common answer start column."""
    P = max(p.numel() for p, _ in examples)
    A = max(a.numel() for _, a in examples)
    B = len(examples)
    tokens = torch.full((B, P + A), vocab.pad_id, dtype=torch.long)
    pad = torch.zeros(B, P + A, dtype=torch.bool)
    ans = torch.zeros(B, P + A, dtype=torch.bool)
    for i, (p, a) in enumerate(examples):
        tokens[i, P - p.numel(): P] = p
        tokens[i, P: P + a.numel()] = a
        pad[i, P - p.numel(): P + a.numel()] = True
        ans[i, P: P + a.numel()] = True
    batch = {"tokens": tokens, "padding_mask": pad, "answer_mask": ans}
    if tasks is not None:
        batch["tasks"] = list(tasks)
    return batch


class MixtureLoader:
    """Infinite iterator of collated batches drawn from several tasks by weight."""

    def __init__(self, cfg: MixtureConfig, toks, vocab, *, rank: int = 0, world_size: int = 1):
        if cfg.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {cfg.batch_size}")
        if not cfg.tasks:
            raise ValueError("the data mixture has no tasks")
        self.cfg, self.toks, self.vocab, self.rank = cfg, toks, vocab, rank
        self.tasks = [get_task(t.task) for t in cfg.tasks]
        for t, task in zip(cfg.tasks, self.tasks, strict=True):
            missing = [m for m in task.modalities if getattr(toks, m, None) is None]
            if missing:
                raise ValueError(f"task {t.task!r} needs the {missing} tokenizer(s); add them under tokenizers:")
        self.streams = [ShardStream(split_shards(t.path, t.split), seed=cfg.seed + 7919 * i, rank=rank,
                                    world_size=world_size) for i, t in enumerate(cfg.tasks)]
        self._iters = [iter(s) for s in self.streams]
        w = np.array([t.weight for t in cfg.tasks], dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"task weights must be >= 0 with a positive sum, got {w.tolist()}")
        self.probs = w / w.sum()
        self.batches = 0
        self.format_errors = 0

    def state_dict(self) -> dict:
        return {"batches": self.batches, "streams": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["streams"]) != len(self.streams):
            raise ValueError(f"data position has {len(state['streams'])} task streams, the mixture has "
                             f"{len(self.streams)}")
        self.batches = state["batches"]
        for s, st in zip(self.streams, state["streams"], strict=True):
            s.load_state_dict(st)
        self._iters = [iter(s) for s in self.streams]

    def _example(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.cfg.tasks[i]
        while True:
            sample = next(self._iters[i])
            try:
                return self.tasks[i].format(sample, self.toks, self.vocab, spec.answer_len)
            except (ValueError, KeyError, OSError) as err:
                self.format_errors += 1
                log.warning("skipping sample %s of %s (task %s): %s", sample.get("__key__"), sample.get("__shard__"),
                            spec.task, err)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        rng = np.random.default_rng([self.cfg.seed, self.rank, self.batches])
        picks = rng.choice(len(self.tasks), size=self.cfg.batch_size, p=self.probs).tolist()
        examples = [self._example(i) for i in picks]
        self.batches += 1
        return collate(examples, self.vocab, [self.cfg.tasks[i].task for i in picks])


def build_mixture_loader(cfg: MixtureConfig, toks, vocab, *, rank: int = 0, world_size: int = 1) -> MixtureLoader:
    return MixtureLoader(cfg, toks, vocab, rank=rank, world_size=world_size)
