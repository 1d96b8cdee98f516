"""The training loss a recipe names (``objective.kind``): `training_loss` dispatches to it.

- ``diffusion``: the masked-diffusion ELBO (`objectives.diffusion_loss`), every option of it.
- ``autoregressive``: the AR twin's next-token loss (`autoregressive.autoregressive_loss`).
- ``certainty_forcing``: few-step distillation on the model's own answers (`certainty.certainty_forcing_loss`).

Both take the same collated batch and return a `LossOutput` whose ``elbo`` is nats per answer token.
"""

from __future__ import annotations

import torch
from torch import nn

from omnidiff.diffusion.autoregressive import autoregressive_loss
from omnidiff.diffusion.certainty import certainty_forcing_loss
from omnidiff.diffusion.objectives import DiffusionLossConfig, LossOutput, diffusion_loss

LOSSES = {"diffusion": diffusion_loss, "autoregressive": autoregressive_loss,
          "certainty_forcing": certainty_forcing_loss}


def training_loss(model: nn.Module, batch: dict, cfg: DiffusionLossConfig, *,
                  generator: torch.Generator | None = None, step: int = 0, **extra) -> LossOutput:
    """The loss of ``cfg.kind`` on one batch (see `diffusion_loss` for the arguments; ``extra``: what
    `loss_inputs` gives the kinds that need more than the batch)."""
    return LOSSES[cfg.kind](model, batch, cfg, generator=generator, step=step, **extra)


def loss_inputs(cfg: DiffusionLossConfig, vocab, init_run: str = "", device: str = "cpu") -> dict:
    """What a run's loss needs beyond the batch, built once: for certainty forcing the vocabulary and
    the frozen teacher, loaded from ``init_run`` (the model the run starts from)."""
    if cfg.kind != "certainty_forcing":
        return {}
    if not init_run:
        raise ValueError("objective.kind=certainty_forcing distils a trained model into a faster decoder: set "
                         "model.init_run to its exported folder (e.g. runs/results/model)")
    from omnidiff.models.hf import OmniDiffModel

    teacher = OmniDiffModel.from_pretrained(init_run, expected_vocab=vocab).model.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return {"vocab": vocab, "teacher": teacher}
