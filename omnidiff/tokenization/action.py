"""Action tokenizer: continuous robot actions (and proprioceptive state) <-> uniform bins (docs/design.md).

Each action dimension is normalised with statistics fitted on a dataset: values are clipped to the
dimension's [1st, 99th] percentile range and mapped linearly to [-1, 1], which is then cut into
``bins`` equal bins. Percentiles rather than min/max keep a few outliers from stretching the bins
of the common values. Decoding returns the bin centre in robot units, so the round-trip error of
any value inside the fitted range is at most half a bin width (``bin_width / 2``, per dimension).

Binary gripper dimensions (``gripper_dims``) are not binned: a value above ``gripper_threshold``
is "closed" (id ``bins - 1``), anything else "open" (id 0), and decoding returns the typical open
and closed values seen during fitting, so a ±1 gripper command round-trips exactly.

The proprioceptive state has its own per-dimension statistics (it lives in other units than the
actions) but shares the same ``bins`` ids; `omnidiff.tasks.vla` puts it in the "action" range.

Shapes: a chunk is ``[H, D]`` (H time steps of D action dimensions); ids use the same shape, and
the global layout is time-major (``a_1[0..D-1], a_2[0..D-1], ...``) in the vocabulary range
``"action"``.

Folder layout written by `save`: ``omnidiff_tokenizer.json`` holding the settings and the fitted
statistics as plain numbers (no weights, nothing pickled).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from omnidiff.files import read_json
from omnidiff.tokenization.base import single_range_to_global
from omnidiff.tokenization.vocab import Vocab

CONFIG_NAME = "omnidiff_tokenizer.json"
FORMAT = "omnidiff-action-bins/1"


@dataclass
class ActionTokenizerConfig:
    """Settings chosen before fitting (the statistics are fitted, these are not)."""

    bins: int = 256  # ids per value; the vocabulary range "action" has this size
    horizon: int = 8  # steps per action chunk the data were built with (H)
    gripper_dims: list[int] = field(default_factory=list)  # action dims that are binary open/close commands
    gripper_threshold: float = 0.0  # a gripper value above this is "closed"
    low_percentile: float = 1.0  # values below this percentile are clipped
    high_percentile: float = 99.0  # values above this percentile are clipped

    def check(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if not isinstance(self.bins, int) or self.bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {self.bins!r}")
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"horizon must be a positive integer number of steps, got {self.horizon!r}")
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ValueError(f"need 0 <= low_percentile < high_percentile <= 100, got {self.low_percentile} "
                             f"and {self.high_percentile}")
        if len(set(self.gripper_dims)) != len(self.gripper_dims):
            raise ValueError(f"gripper_dims lists a dimension twice: {self.gripper_dims}")


@dataclass
class ActionStats:
    """Fitted per-dimension statistics (robot units)."""

    low: list[float]  # [D] clip/normalisation lower bound (low percentile)
    high: list[float]  # [D] upper bound (high percentile)
    gripper_open: list[float] = field(default_factory=list)  # value decoded for "open", one per gripper dim
    gripper_closed: list[float] = field(default_factory=list)  # value decoded for "closed"
    proprio_low: list[float] | None = None  # [P] or None when no state was fitted
    proprio_high: list[float] | None = None
    num_samples: int = 0  # rows the statistics were computed from


def _as_float_tensor(values, what: str) -> torch.Tensor:
    """Float64 tensor of ``values``; ValueError on NaN/inf so bad data never turns into silent ids."""
    x = torch.as_tensor(np.asarray(values), dtype=torch.float64)
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{what} contains {bad} NaN or infinite value(s); clean the data before tokenizing")
    return x


class ActionTokenizer:
    """Per-dimension uniform binning of action chunks ``[H, D]`` and proprio states ``[P]``.

    Build it with `fit` (from data) or `load` (from a folder written by `save`).
    """

    modality = "action"
    range_name = "action"

    def __init__(self, config: ActionTokenizerConfig, stats: ActionStats):
        config.check()
        self.config, self.stats = config, stats
        self.low = torch.tensor(stats.low, dtype=torch.float64)
        self.high = torch.tensor(stats.high, dtype=torch.float64)
        if self.low.ndim != 1 or self.low.shape != self.high.shape or self.low.numel() == 0:
            raise ValueError(f"stats.low and stats.high must be equal-length non-empty lists, got {len(stats.low)} "
                             f"and {len(stats.high)} values")
        if (self.high < self.low).any():
            raise ValueError("stats.high is below stats.low in some dimension; refit the tokenizer")
        bad_dims = [d for d in config.gripper_dims if not 0 <= d < self.action_dim]
        if bad_dims:
            raise ValueError(f"gripper_dims {bad_dims} are outside the {self.action_dim} action dimensions")
        if len(stats.gripper_open) != len(config.gripper_dims) or len(stats.gripper_closed) != len(config.gripper_dims):
            raise ValueError(f"stats need one open and one closed value per gripper dim ({len(config.gripper_dims)}), "
                             f"got {len(stats.gripper_open)} and {len(stats.gripper_closed)}")
        self.gripper_dims = list(config.gripper_dims)
        self._binned_dims = [d for d in range(self.action_dim) if d not in self.gripper_dims]
        if (stats.proprio_low is None) != (stats.proprio_high is None):
            raise ValueError("stats.proprio_low and stats.proprio_high must both be set or both be None")
        self.proprio_low = None if stats.proprio_low is None else torch.tensor(stats.proprio_low, dtype=torch.float64)
        self.proprio_high = None if stats.proprio_high is None else torch.tensor(stats.proprio_high,
                                                                                 dtype=torch.float64)

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(cls, actions, proprio=None, *, horizon: int = 8, bins: int = 256, gripper_dims: Sequence[int] = (),
            gripper_threshold: float = 0.0, low_percentile: float = 1.0,
            high_percentile: float = 99.0) -> ActionTokenizer:
        """Fit the statistics on ``actions`` [N, D] (and ``proprio`` [N', P], optional).

        Args:
            actions: one row per time step (not per chunk, so overlapping chunks do not count a
                step several times), robot units.
            proprio: proprioceptive states, one row per step; None leaves `encode_proprio` unavailable.
            horizon: chunk length H the data were built with (kept as a setting, used by consumers).
            bins: ids per value.
            gripper_dims: action dims holding binary open/close commands.
            gripper_threshold: a gripper value above it counts as "closed".
            low_percentile, high_percentile: clipping range of every binned dimension.
        """
        config = ActionTokenizerConfig(bins=bins, horizon=horizon, gripper_dims=[int(d) for d in gripper_dims],
                                       gripper_threshold=float(gripper_threshold), low_percentile=low_percentile,
                                       high_percentile=high_percentile)
        config.check()
        acts = _as_float_tensor(actions, "actions")
        if acts.ndim != 2 or acts.shape[0] == 0 or acts.shape[1] == 0:
            raise ValueError(f"actions must be a non-empty array [N, D], got shape {tuple(acts.shape)}")
        low, high = cls._percentiles(acts, config)
        opens, closeds = [], []
        for d in config.gripper_dims:
            if not 0 <= d < acts.shape[1]:
                raise ValueError(f"gripper dim {d} is outside the {acts.shape[1]} action dimensions")
            column = acts[:, d]
            closed = column > config.gripper_threshold
            # The median of each side is a value the robot really sent, so ±1 commands decode exactly.
            opens.append(float(column[~closed].median()) if (~closed).any() else float(column.min()))
            closeds.append(float(column[closed].median()) if closed.any() else float(column.max()))
        p_low = p_high = None
        if proprio is not None:
            state = _as_float_tensor(proprio, "proprio")
            if state.ndim != 2 or state.shape[0] == 0 or state.shape[1] == 0:
                raise ValueError(f"proprio must be a non-empty array [N, P], got shape {tuple(state.shape)}")
            lo, hi = cls._percentiles(state, config)
            p_low, p_high = lo.tolist(), hi.tolist()
        stats = ActionStats(low=low.tolist(), high=high.tolist(), gripper_open=opens, gripper_closed=closeds,
                            proprio_low=p_low, proprio_high=p_high, num_samples=int(acts.shape[0]))
        return cls(config, stats)

    @staticmethod
    def _percentiles(x_ND: torch.Tensor, config: ActionTokenizerConfig) -> tuple[torch.Tensor, torch.Tensor]:
        q = torch.tensor([config.low_percentile / 100.0, config.high_percentile / 100.0], dtype=torch.float64)
        lo_hi = torch.quantile(x_ND, q, dim=0)
        return lo_hi[0], lo_hi[1]

    # ------------------------------------------------------------------ properties
    @property
    def bins(self) -> int:
        return self.config.bins

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def action_dim(self) -> int:
        return int(self.low.numel())

    @property
    def proprio_dim(self) -> int | None:
        return None if self.proprio_low is None else int(self.proprio_low.numel())

    @property
    def tokens_per_chunk(self) -> int:
        """Ids in one chunk of ``horizon`` steps."""
        return self.horizon * self.action_dim

    @property
    def bin_width(self) -> torch.Tensor:
        """Float32 [D]: width of one bin in robot units (0 for gripper dims, which decode exactly)."""
        width = (self.high - self.low) / self.bins
        width[self.gripper_dims] = 0.0
        return width.float()

    @property
    def proprio_bin_width(self) -> torch.Tensor:
        """Float32 [P]: width of one proprio bin in state units."""
        self._need_proprio()
        return ((self.proprio_high - self.proprio_low) / self.bins).float()

    # ------------------------------------------------------------------ binning helpers
    def _values_to_ids(self, x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        span = (high - low).clamp_min(torch.finfo(torch.float64).tiny)
        unit = (x.clamp(min=low, max=high) - low) / span  # [0, 1]
        return (unit * self.bins).floor().clamp(0, self.bins - 1).long()

    def _ids_to_values(self, ids: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        centre = (ids.double() + 0.5) / self.bins  # [0, 1]
        return low + centre * (high - low)

    def _check_ids(self, ids: torch.Tensor, what: str) -> torch.Tensor:
        ids = torch.as_tensor(ids)
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError(f"{what} ids must be an integer tensor, got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.bins):
            raise ValueError(f"{what} ids must be in [0, {self.bins}); got min {int(ids.min())}, max {int(ids.max())}")
        return ids.long()

    def _need_proprio(self) -> None:
        if self.proprio_low is None:
            raise ValueError("this action tokenizer has no proprio statistics; fit it with proprio=... "
                             "(tokenizers/fit_action_bins.py reads proprio.npy when the dataset has it)")

    # ------------------------------------------------------------------ the Tokenizer protocol
    @property
    def vocab_size(self) -> int:
        return self.bins

    def vocab_ranges(self) -> dict[str, int]:
        return {self.range_name: self.bins}

    def encode(self, chunk) -> torch.Tensor:
        """Action chunk float [H, D] (robot units) -> LongTensor [H, D] of local ids.

        Values outside the fitted range are clipped to its edge bins. H may differ from
        ``horizon`` (the setting only records what the data were built with).
        """
        x_HD = _as_float_tensor(chunk, "action chunk")
        if x_HD.ndim != 2 or x_HD.shape[1] != self.action_dim:
            raise ValueError(f"action chunk must have shape [H, {self.action_dim}], got {tuple(x_HD.shape)}")
        ids = self._values_to_ids(x_HD, self.low, self.high)
        for d in self.gripper_dims:
            ids[:, d] = torch.where(x_HD[:, d] > self.config.gripper_threshold, self.bins - 1, 0)
        return ids

    def decode(self, ids) -> torch.Tensor:
        """Ids [H, D] or flat time-major [H*D] -> float32 [H, D] actions in robot units (bin centres)."""
        ids = self._check_ids(ids, "action")
        if ids.ndim == 1:
            if ids.numel() % self.action_dim:
                raise ValueError(f"a flat action id sequence must hold a multiple of {self.action_dim} ids "
                                 f"(whole steps), got {ids.numel()}")
            ids = ids.reshape(-1, self.action_dim)
        if ids.ndim != 2 or ids.shape[1] != self.action_dim:
            raise ValueError(f"action ids must have shape [H, {self.action_dim}] or [H*{self.action_dim}], "
                             f"got {tuple(ids.shape)}")
        x_HD = self._ids_to_values(ids, self.low, self.high)
        for k, d in enumerate(self.gripper_dims):
            closed = ids[:, d] >= self.bins // 2
            x_HD[:, d] = torch.where(closed, self.stats.gripper_closed[k], self.stats.gripper_open[k])
        return x_HD.float()

    def encode_batch(self, chunks: list) -> list[torch.Tensor]:
        return [self.encode(c) for c in chunks]

    def decode_batch(self, ids: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.decode(i) for i in ids]

    def encode_proprio(self, state) -> torch.Tensor:
        """Proprio state float [P] (or [N, P]) -> LongTensor of the same shape, with the state's own statistics."""
        self._need_proprio()
        x = _as_float_tensor(state, "proprio state")
        if x.ndim not in (1, 2) or x.shape[-1] != self.proprio_dim:
            raise ValueError(f"proprio state must have shape [{self.proprio_dim}] or [N, {self.proprio_dim}], "
                             f"got {tuple(x.shape)}")
        return self._values_to_ids(x, self.proprio_low, self.proprio_high)

    def decode_proprio(self, ids) -> torch.Tensor:
        """Ids [P] (or [N, P]) -> float32 proprio state (bin centres)."""
        self._need_proprio()
        ids = self._check_ids(ids, "proprio")
        if ids.ndim not in (1, 2) or ids.shape[-1] != self.proprio_dim:
            raise ValueError(f"proprio ids must have shape [{self.proprio_dim}] or [N, {self.proprio_dim}], "
                             f"got {tuple(ids.shape)}")
        return self._ids_to_values(ids, self.proprio_low, self.proprio_high).float()

    def to_global(self, vocab: Vocab, local_ids: torch.Tensor) -> torch.Tensor:
        """Ids [H, D] -> flat time-major global ids [H*D] in the "action" range."""
        return single_range_to_global(vocab, self.range_name, local_ids)

    def from_global(self, vocab: Vocab, global_ids: torch.Tensor) -> torch.Tensor:
        """Flat global ids [H*D] -> local ids [H, D]."""
        local = vocab.to_local(self.range_name, torch.as_tensor(global_ids).reshape(-1))
        if local.numel() % self.action_dim:
            raise ValueError(f"a flat action id sequence must hold a multiple of {self.action_dim} ids "
                             f"(whole steps), got {local.numel()}")
        return local.reshape(-1, self.action_dim)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "modality": self.modality, "kind": "uniform-bins",
                   "config": asdict(self.config), "stats": asdict(self.stats)}
        tmp = directory / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(directory / CONFIG_NAME)

    @classmethod
    def load(cls, directory: str | Path) -> ActionTokenizer:
        path = Path(directory) / CONFIG_NAME
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: fit an action tokenizer with "
                                    f"`python tokenizers/fit_action_bins.py --out {directory}`")
        payload = read_json(path, "action tokenizer")
        found = payload.get("format") if isinstance(payload, dict) else None
        if found != FORMAT:
            raise ValueError(f"{path} is not an action tokenizer (format {found!r}, expected {FORMAT!r})")
        try:
            return cls(ActionTokenizerConfig(**payload["config"]), ActionStats(**payload["stats"]))
        except (TypeError, KeyError) as err:
            raise ValueError(f"{path} has unexpected settings or statistics: {err}") from None

    def __repr__(self) -> str:
        return (f"ActionTokenizer(bins={self.bins}, horizon={self.horizon}, action_dim={self.action_dim}, "
                f"gripper_dims={self.gripper_dims}, proprio_dim={self.proprio_dim})")
