"""Where each prompt-image feature sits on the picture (``model.image_encoder.grid_positions``).

Rotary positions run along the sequence, and an image enters it in raster order, so the rotary
offset between two codes is ``8 * dy + dx`` on an 8x8 grid: "left of", "above" and "the leftmost
object" are modular arithmetic on that offset, which attention learns slowly. These embeddings give
every grid cell its row and its column directly, as ViT's position embeddings do, but factorised:
cell ``(y, x)`` gets ``row[y] + column[x]``, so each row and column vector is trained by every cell
on it (``2 * grid`` vectors instead of ``grid ** 2``). They are added to the encoder's features,
which ride on rotary positions (`omnidiff.models.image_encoder`), so caches stay exact.
"""

from __future__ import annotations

import torch
from torch import nn


class GridPositions(nn.Module):
    """``[grid * grid, dim]`` raster-order embeddings, ``row[y] + column[x]``."""

    def __init__(self, grid: int, dim: int):
        super().__init__()
        if grid < 1:
            raise ValueError(f"the image code grid must have at least one cell per side, got {grid}")
        self.grid = grid
        self.row = nn.Embedding(grid, dim)
        self.column = nn.Embedding(grid, dim)

    def forward(self) -> torch.Tensor:
        cells = torch.arange(self.grid, device=self.row.weight.device)
        return (self.row(cells)[:, None, :] + self.column(cells)[None, :, :]).flatten(0, 1)
