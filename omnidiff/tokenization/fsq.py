"""Finite scalar quantisation (FSQ; Mentzer et al., 2023), a drop-in for the VQModel's quantizer.

A VQ codebook learned with dead-code re-seeding fills with near-copies of the commonest encoder
outputs: one flat background colour is written with hundreds of different codes (docs/ablations.md,
section 5), which a model that *draws* images must then learn to treat as one. FSQ has no learned
codebook to fill. Each of the ``D = len(levels)`` latent channels is squashed into a bounded range
and rounded to one of ``levels[i]`` values; a code is the tuple of rounded values, its id the
mixed-radix number of that tuple, so ``K = prod(levels)``. Nearby latents round to the same code,
so small context-dependent wobbles of the encoder no longer make synonyms, and every code is used
without re-seeding. Gradients pass the rounding straight through.

    z_b = tanh(z + shift) * half - offset        (bounded; even level counts are shifted half a step)
    q   = round(z_b) / (L // 2)                  (in [-1, 1]; straight-through in training)
    id  = sum_i (round(z_b)_i + L_i // 2) * prod_{j < i} L_j

The module answers the calls `ImageTokenizer` makes of diffusers' ``VectorQuantizer``:
``forward(z) -> (z_q, loss, (None, None, ids))`` with a zero loss, ``get_codebook_entry(ids, shape)``,
and ``embedding.weight``, the ``[K, D]`` grid of every code's vector (for nearest-code lookups and
code embeddings initialised from the codebook).

Tensor legend: ``B`` batch, ``D`` latent channels (= number of levels), ``h, w`` code grid, ``K`` codes.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn


def check_levels(levels) -> tuple[int, ...]:
    """``levels`` as a tuple of ints >= 2, or a clear error."""
    try:
        out = tuple(int(v) for v in levels)
    except (TypeError, ValueError):
        raise ValueError(f"fsq_levels must be a list of integers such as [8, 5, 5, 5], got {levels!r}") from None
    if not out or any(v < 2 for v in out):
        raise ValueError(f"fsq_levels needs at least one level count, each >= 2, such as [8, 5, 5, 5]; got {list(out)}")
    return out


class FiniteScalarQuantizer(nn.Module):
    """Round each of ``len(levels)`` bounded latent channels to ``levels[i]`` values.

    Example:
        >>> fsq = FiniteScalarQuantizer((3, 4))
        >>> z_q, loss, (_, _, ids) = fsq(torch.zeros(1, 2, 2, 2))
        >>> fsq.codebook_size, tuple(ids.shape), float(loss)
        (12, (4,), 0.0)
    """

    def __init__(self, levels, eps: float = 1e-3):
        super().__init__()
        self.levels = check_levels(levels)
        levels_D = torch.tensor(self.levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor((1, *self.levels[:-1]), dtype=torch.long), 0)
        self.register_buffer("levels_D", levels_D, persistent=False)
        self.register_buffer("basis_D", basis, persistent=False)
        half = (levels_D - 1) * (1 - eps) / 2
        offset = (levels_D % 2 == 0).float() * 0.5
        self.register_buffer("half_D", half, persistent=False)
        self.register_buffer("offset_D", offset, persistent=False)
        self.register_buffer("shift_D", torch.atanh(offset / half), persistent=False)
        self.register_buffer("width_D", torch.div(levels_D, 2, rounding_mode="floor"), persistent=False)
        self.register_buffer("grid_KD", self.vectors(torch.arange(self.codebook_size)), persistent=False)

    @property
    def embedding(self) -> SimpleNamespace:
        """The vectors of all K codes as ``embedding.weight``, so callers can treat FSQ like a codebook."""
        return SimpleNamespace(weight=self.grid_KD)

    @property
    def codebook_size(self) -> int:
        return int(torch.tensor(self.levels).prod())

    def _channels_last(self, z_BDhw: torch.Tensor) -> torch.Tensor:
        if z_BDhw.ndim != 4 or z_BDhw.shape[1] != len(self.levels):
            raise ValueError(f"FSQ with levels {list(self.levels)} quantises [B, {len(self.levels)}, h, w] latents, "
                             f"got shape {tuple(z_BDhw.shape)}")
        return z_BDhw.permute(0, 2, 3, 1)

    def _rounded(self, z_BhwD: torch.Tensor) -> torch.Tensor:
        """Bounded latents rounded to integers in ``[-(L // 2), (L - 1) // 2]``, straight-through."""
        bounded = torch.tanh(z_BhwD + self.shift_D) * self.half_D - self.offset_D
        return bounded + (bounded.round() - bounded).detach()

    def _ids_of(self, rounded: torch.Tensor) -> torch.Tensor:
        """Mixed-radix ids of rounded latents ``[..., D]`` (no gradient)."""
        return ((rounded.detach().round().long() + self.width_D.long()) * self.basis_D).sum(-1)

    def ids(self, z_BDhw: torch.Tensor) -> torch.Tensor:
        """``[B, h, w]`` code ids of latents (no gradient)."""
        return self._ids_of(self._rounded(self._channels_last(z_BDhw)))

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` normalised code vectors (in [-1, 1]) of ids ``[...]``."""
        digits = torch.div(ids.long()[..., None], self.basis_D, rounding_mode="floor") % self.levels_D.long()
        return (digits - self.width_D.long()).float() / self.width_D

    def forward(self, z_BDhw: torch.Tensor):
        rounded = self._rounded(self._channels_last(z_BDhw))
        z_q = (rounded / self.width_D).permute(0, 3, 1, 2).contiguous()
        return z_q, z_BDhw.new_zeros(()), (None, None, self._ids_of(rounded).reshape(-1))

    def get_codebook_entry(self, ids: torch.Tensor, shape) -> torch.Tensor:
        """Code vectors of flat ``ids`` laid out as ``shape = (B, h, w, D)`` -> ``[B, D, h, w]``."""
        return self.vectors(ids).view(shape).permute(0, 3, 1, 2).contiguous()
