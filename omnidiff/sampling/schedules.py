"""How many tokens to commit at each denoising step of a block.

Given m masked tokens and s steps, ``commit_counts`` returns s non-negative counts summing to m:

- ``even`` (LLaDA): k_i = floor(m / s) + [i < m mod s].
- ``cosine`` (MaskGIT): the masked fraction after step i is cos(pi/2 * (i + 1) / s).
- ``shifted`` (LaViDa timestep shift): the masked fraction after step i is
  t' = a t / (1 + (a - 1) t) with t = 1 - (i + 1) / s; a < 1 front-loads commits (a = 1/3 default).
"""

from __future__ import annotations

import math

import torch

COMMIT_SCHEDULES = ("even", "cosine", "shifted")


def masked_fraction(kind: str, step: int, num_steps: int, shift_a: float = 1 / 3) -> float:
    """Fraction of the block still masked after step ``step`` (0-based) of ``num_steps``."""
    t = 1.0 - (step + 1) / num_steps
    if kind == "even":
        return t
    if kind == "cosine":
        return math.cos(math.pi / 2 * (step + 1) / num_steps)
    if kind == "shifted":
        return shift_a * t / (1 + (shift_a - 1) * t)
    raise ValueError(f"unknown commit schedule {kind!r}; allowed: {list(COMMIT_SCHEDULES)}")


def commit_counts(num_masked: int, num_steps: int, kind: str = "even", shift_a: float = 1 / 3) -> torch.Tensor:
    """LongTensor [num_steps] of tokens to commit per step, summing to ``num_masked``."""
    if num_steps <= 0:
        raise ValueError(f"steps must be positive, got {num_steps}")
    if num_steps > num_masked:
        raise ValueError(f"{num_steps} steps for {num_masked} masked tokens: every step must commit at least one "
                         f"token; use at most {num_masked} steps per block")
    if kind == "even":
        base, extra = divmod(num_masked, num_steps)
        return torch.tensor([base + (i < extra) for i in range(num_steps)], dtype=torch.long)
    remaining = [math.floor(num_masked * masked_fraction(kind, i, num_steps, shift_a) + 1e-9) for i in range(num_steps)]
    remaining[-1] = 0
    counts, before = [], num_masked
    for i, r in enumerate(remaining):
        # At least one per step, and leave at least one for each later step.
        r = min(max(r, num_steps - 1 - i), before - 1)
        counts.append(before - r)
        before = r
    return torch.tensor(counts, dtype=torch.long)
