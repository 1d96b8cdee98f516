"""How a robot policy turns decoded action chunks [H, D] into one action per control step.

- `ChunkQueue(execute)`: replay the first ``execute`` actions of a chunk, then decode a new one from the
  observation of that moment. ``execute = H`` is open-loop chunking; smaller values re-plan more often
  (a receding horizon) at ``H / execute`` times the decoding cost.
- `TemporalEnsemble(decay)`: decode a chunk at every step and act on the weighted mean of what every chunk
  still in reach predicts for this step, chunk k (0 the oldest) weighted ``exp(-decay * k)``: temporal
  ensembling as in ACT (Zhao et al., 2023). It reacts to each observation while averaging out the
  disagreement of successive chunks. ``decay = 0`` is a plain mean; larger values favour older chunks.

Both take the decoder as a callable, so the policy keeps the model and the executor keeps time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np


class ChunkQueue:
    def __init__(self, horizon: int, execute: int | None = None):
        self.horizon = int(horizon)
        self.execute = self.horizon if execute is None else int(execute)
        if not 1 <= self.execute <= self.horizon:
            raise ValueError(f"execute_steps must be in [1, {self.horizon}] (the chunk length), got {execute}")
        self.reset()

    def reset(self) -> None:
        self._queue: list[np.ndarray] = []

    def next(self, decode: Callable[[], np.ndarray]) -> np.ndarray:
        if not self._queue:
            self._queue = list(decode()[: self.execute])
        return self._queue.pop(0)


class TemporalEnsemble:
    execute = 1  # a chunk is decoded at every step

    def __init__(self, horizon: int, decay: float):
        if not (isinstance(decay, int | float) and math.isfinite(decay) and decay >= 0):
            raise ValueError(f"the temporal ensemble's decay must be a finite number >= 0, got {decay!r}")
        self.horizon, self.decay = int(horizon), float(decay)
        self.reset()

    def reset(self) -> None:
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (step it was decoded at, chunk), oldest first
        self._step = 0

    def next(self, decode: Callable[[], np.ndarray]) -> np.ndarray:
        self._chunks.append((self._step, np.asarray(decode(), dtype=np.float32)))
        while self._step - self._chunks[0][0] >= self.horizon:  # the oldest no longer reaches this step
            self._chunks.popleft()
        preds = np.stack([chunk[self._step - start] for start, chunk in self._chunks])
        weights = np.exp(-self.decay * np.arange(len(preds), dtype=np.float64))
        self._step += 1
        return (weights[:, None] * preds).sum(0).astype(np.float32) / np.float32(weights.sum())
