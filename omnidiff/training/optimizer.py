"""Which optimizer a run trains with (``optim.name``): AdamW, or Muon for the matrices with AdamW for the rest.

- ``adamw``: a torch ``AdamW`` the DeepSpeed engine wraps as its client optimizer; matrices decay,
  norms and biases do not.
- ``muon``: Muon (Jordan et al., 2024; as in nanochat and modded-nanogpt) orthogonalises each matrix's
  momentum by Newton-Schulz iterations before the step, so every direction of the update moves at
  the same rate. DeepSpeed ships it (``"optimizer": {"type": "Muon"}``) for ZeRO stages 0-3: it
  tags every parameter of two or more dimensions whose name holds neither ``embed`` nor ``lm_head``
  for Muon (attention and MLP matrices, each expert of a stacked ``[experts, in, out]`` weight on
  its own, routers, the image projector) and steps the rest (embeddings, the output head, norms,
  biases) with its auxiliary AdamW. Muon's learning rate (``optim.muon_lr``) is in units of
  spectral norm per step, so it is ~10x AdamW's (``optim.lr``); the run's one schedule
  (`omnidiff.training.distributed.lr_lambda`) scales both.

Nothing here imports DeepSpeed: `omnidiff.training.distributed` builds the engine from what these
return.
"""

from __future__ import annotations

import torch
from torch import nn

from omnidiff.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices; leave norms, biases and router/expert biases undecayed."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "norm" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def client_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer | None:
    """The torch optimizer the engine wraps, or None when DeepSpeed builds it from `deepspeed_section`."""
    if optim.name == "adamw":
        return torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr, betas=tuple(optim.betas),
                                 fused=optim.fused)
    return None


def deepspeed_section(optim: OptimConfig) -> dict | None:
    """The ``optimizer`` entry of the DeepSpeed config for optimizers DeepSpeed builds itself, else None."""
    if optim.name != "muon":
        return None
    return {"type": "Muon", "params": {
        "lr": optim.lr, "adam_lr": optim.lr, "muon_lr": optim.muon_lr, "momentum": optim.muon_momentum,
        "betas": list(optim.betas), "eps": 1e-8, "weight_decay": optim.weight_decay}}


def zero_settings(optim: OptimConfig, zero_stage: int) -> dict:
    """What the optimizer needs of the ZeRO section: DeepSpeed's Muon under ZeRO-3 orthogonalises whole
    gathered matrices and refuses reduce-scatter."""
    return {"reduce_scatter": False} if optim.name == "muon" and zero_stage == 3 else {}
