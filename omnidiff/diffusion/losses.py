"""The training loss a recipe names (``objective.kind``): `training_loss` dispatches to it.

- ``diffusion``: the masked-diffusion ELBO (`objectives.diffusion_loss`), every option of it.
- ``autoregressive``: the AR twin's next-token loss (`autoregressive.autoregressive_loss`).

Both take the same collated batch and return a `LossOutput` whose ``elbo`` is nats per answer token.
"""

from __future__ import annotations

import torch
from torch import nn

from omnidiff.diffusion.autoregressive import autoregressive_loss
from omnidiff.diffusion.objectives import DiffusionLossConfig, LossOutput, diffusion_loss

LOSSES = {"diffusion": diffusion_loss, "autoregressive": autoregressive_loss}


def training_loss(model: nn.Module, batch: dict, cfg: DiffusionLossConfig, *,
                  generator: torch.Generator | None = None, step: int = 0) -> LossOutput:
    """The loss of ``cfg.kind`` on one batch (see `diffusion_loss` for the arguments)."""
    return LOSSES[cfg.kind](model, batch, cfg, generator=generator, step=step)
