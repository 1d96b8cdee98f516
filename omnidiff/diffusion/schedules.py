"""Noise schedules and time draws of the masked-diffusion forward process (docs/design.md, "Training objective").

A schedule maps time ``t in [0, 1]`` to ``alpha_t``, the probability that a token is still clean;
each answer token is masked with probability ``1 - alpha_t``. The continuous-time ELBO weights the
cross-entropy of a masked token by

    w(t) = -alpha'_t / (1 - alpha_t)

- ``linear``:     alpha_t = 1 - t                      w(t) = 1 / t
- ``cosine``:     alpha_t = cos(pi t / 2)              w(t) = (pi/2) sin(pi t/2) / (1 - cos(pi t/2))
- ``loglinear``:  alpha_t = exp(-sigma_t), sigma_t = -log(1 - (1 - d) t)   (MDLM/SEDD, d = 1e-3)
                  i.e. alpha_t = 1 - (1 - d) t, w(t) = (1 - d) / ((1 - d) t); never fully masked.

Time draws (`TimeSampler`): ``uniform`` draws i.i.d. u ~ U(0, 1); ``antithetic`` stratifies the n
draws of a batch, u_i = (i + u) / n with one shared offset u (lower-variance, MDLM). The draw is
then mapped into ``[t_lo, t_hi]``: by default ``t = (1 - eps) u + eps`` (the eps floor keeps w(t)
finite); with a mask-rate clip ``[beta, omega]`` (BD3-LM) the interval is the times whose mask
rate ``1 - alpha_t`` lies in ``[beta, omega]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("linear", "cosine", "loglinear")
TIME_SAMPLINGS = ("uniform", "antithetic")
LOGLINEAR_DELTA = 1e-3


@dataclass(frozen=True)
class NoiseSchedule:
    """``alpha(t)``, ``alpha'(t)``, the ELBO weight and the inverse map from mask rate to time."""

    name: str = "linear"

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {self.name!r}; allowed: {list(SCHEDULES)}")

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        if self.name == "linear":
            return 1.0 - t
        if self.name == "cosine":
            return torch.cos(0.5 * math.pi * t)
        return 1.0 - (1.0 - LOGLINEAR_DELTA) * t

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        if self.name == "linear":
            return -torch.ones_like(t)
        if self.name == "cosine":
            return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)
        return torch.full_like(t, -(1.0 - LOGLINEAR_DELTA))

    def mask_rate(self, t: torch.Tensor) -> torch.Tensor:
        """Probability ``1 - alpha_t`` that a token is masked at time ``t``."""
        return 1.0 - self.alpha(t)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """ELBO weight ``-alpha'_t / (1 - alpha_t)``; infinite at t = 0, so draw t >= eps."""
        return -self.alpha_prime(t) / self.mask_rate(t)

    def time_of_rate(self, rate: torch.Tensor | float) -> torch.Tensor:
        """The time whose mask rate ``1 - alpha_t`` equals ``rate`` (inverse of `mask_rate`)."""
        rate = torch.as_tensor(rate, dtype=torch.float64)
        if self.name == "linear":
            return rate
        if self.name == "cosine":
            return torch.arccos((1.0 - rate).clamp(-1.0, 1.0)) * (2.0 / math.pi)
        return (rate / (1.0 - LOGLINEAR_DELTA)).clamp(max=1.0)


@dataclass(frozen=True)
class TimeSampler:
    """Draws diffusion times in ``[t_lo, t_hi]`` for a schedule.

    Args:
        schedule: the `NoiseSchedule` (used to turn a mask-rate clip into a time interval).
        sampling: ``uniform`` or ``antithetic`` (stratified over the draws of one call).
        eps: floor on t, ``t = (1 - eps) u + eps``; ignored when a clip is given.
        clip: optional ``(beta, omega)`` bounds on the mask rate, 0 <= beta < omega <= 1.
        symmetric: also keep ``1 - rate`` inside the range (complementary masking draws a rate
            for one copy and uses its complement for the other).
    """

    schedule: NoiseSchedule
    sampling: str = "uniform"
    eps: float = 1e-3
    clip: tuple[float, float] | None = None
    symmetric: bool = False

    def __post_init__(self):
        if self.sampling not in TIME_SAMPLINGS:
            raise ValueError(f"unknown time sampling {self.sampling!r}; allowed: {list(TIME_SAMPLINGS)}")
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"eps must be in [0, 1), got {self.eps}")
        if self.clip is not None:
            beta, omega = self.clip
            if not 0.0 <= beta < omega <= 1.0:
                raise ValueError(f"mask-rate clip must satisfy 0 <= beta < omega <= 1, got {self.clip}")
        self.interval()  # validate the symmetric case early

    def rate_interval(self) -> tuple[float, float]:
        """The allowed mask-rate range ``[lo, hi]``."""
        if self.clip is not None:
            lo, hi = float(self.clip[0]), float(self.clip[1])
        else:
            lo = float(self.schedule.mask_rate(torch.tensor(self.eps, dtype=torch.float64)))
            hi = float(self.schedule.mask_rate(torch.tensor(1.0, dtype=torch.float64)))
        if self.symmetric:
            lo, hi = max(lo, 1.0 - hi), min(hi, 1.0 - lo)
            if not lo < hi:
                raise ValueError(
                    f"complementary masking needs a mask-rate range symmetric around 0.5, but "
                    f"{self.clip or (self.eps, 1.0)} leaves nothing; use a clip containing 0.5 such as (0.1, 0.9)"
                )
        return lo, hi

    def interval(self) -> tuple[float, float]:
        """The time range ``[t_lo, t_hi]`` the draws are mapped into."""
        if self.clip is None and not self.symmetric:
            return self.eps, 1.0
        lo, hi = self.rate_interval()
        return float(self.schedule.time_of_rate(lo)), float(self.schedule.time_of_rate(hi))

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` times in ``[t_lo, t_hi]`` (float32, on ``device``)."""
        gen_device = generator.device if generator is not None else device
        if self.sampling == "uniform":
            u = torch.rand(n, generator=generator, device=gen_device)
        else:
            offset = torch.rand(1, generator=generator, device=gen_device)
            u = (torch.arange(n, device=gen_device) + offset) / n
            # Shuffle the strata so position in the batch does not correlate with noise level.
            u = u[torch.randperm(n, generator=generator, device=gen_device)]
        t_lo, t_hi = self.interval()
        return (t_lo + (t_hi - t_lo) * u).to(device=device, dtype=torch.float32)
