"""The AR twin's objective: next-token cross-entropy over the answer, under causal attention.

``objective.kind: autoregressive`` trains the very same `Transformer` (same preset, data, tasks,
prompts and answers) the way a GPT is trained, so that diffusion and AR can be compared at equal
compute (docs/design.md, "The AR twin"). With ``shift`` the logits at column j - 1 predict token j:

    NLL(b) = sum_{j in answer(b)} CE(logits[b, j - 1], x_0[b, j]),    NLL = sum_b NLL(b) / sum_b A_b

Nothing is masked: every answer token is scored once, given every token before it. NLL is an exact
negative log-likelihood in nats per answer token (``<eos>`` padding included, as the diffusion ELBO
counts it), so it is logged as ``elbo`` too: the validation curves, learning curves and per-task
``elbo/<task>`` entries of both kinds of run line up, and since the ELBO bounds the diffusion model's
NLL from above, a diffusion ELBO below the AR NLL is a real win.

Decoding follows from the same settings: `omnidiff.sampling` decodes ``attention="causal"`` models one
token per forward against an exact KV cache (``cache="causal"``), as any AR decoder does.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.data.formatting import prompt_inputs
from omnidiff.diffusion.objectives import (
    DiffusionLossConfig,
    LossOutput,
    attention_spec,
    check_batch,
    check_shift,
    shift_selection,
)


def autoregressive_loss(model: nn.Module, batch: dict, cfg: DiffusionLossConfig, *,
                        generator: torch.Generator | None = None, step: int = 0) -> LossOutput:
    """Next-token loss of the answers of one collated batch (``generator`` and ``step`` are unused:
    the objective draws nothing and has no schedule; they keep the signature of `diffusion_loss`)."""
    del generator, step
    x_0, pad, ans = check_batch(batch)
    check_shift(pad, ans)
    device = x_0.device
    inputs = prompt_inputs(batch)
    forward = functools.partial(model, **inputs) if inputs else model
    logits_NV, aux = forward(x_0, attention=attention_spec(cfg, pad, ans, "causal"), return_aux=True,
                             logits_mask=shift_selection(ans))
    targets = x_0[ans]
    ce = F.cross_entropy(logits_NV.float(), targets, reduction="none")
    rows = ans.nonzero(as_tuple=True)[0]
    per_row = torch.zeros(x_0.shape[0], device=device, dtype=ce.dtype).index_add(0, rows, ce)
    num_answer = ans.sum(1).to(per_row.dtype)
    nll = per_row.sum() / num_answer.sum()
    ar_loss = nll if cfg.normalization == "token" else (per_row / num_answer).mean()
    balance = aux.balance_loss if aux is not None else torch.zeros((), device=device)
    z = aux.z_loss if aux is not None else torch.zeros((), device=device)
    loss = ar_loss + cfg.moe_balance_coef * balance + cfg.moe_z_coef * z
    metrics = {
        "loss": float(loss.detach()),
        "ar_loss": float(ar_loss.detach()),
        "nll": float(nll.detach()),
        "elbo": float(nll.detach()),  # exact here; the shared name keeps AR and diffusion curves comparable
        "moe_balance": float(balance.detach()),
        "moe_z": float(z.detach()),
        "acc_next": float((logits_NV.detach().argmax(-1) == targets).float().mean()),
    }
    tasks = list(batch.get("tasks") or [])
    if tasks:
        if len(tasks) != x_0.shape[0]:
            raise ValueError(f"batch['tasks'] has {len(tasks)} names for {x_0.shape[0]} samples")
        for task in sorted(set(tasks)):
            sel = torch.tensor([name == task for name in tasks], device=device)
            metrics[f"elbo/{task}"] = float(per_row.detach()[sel].sum() / num_answer[sel].sum())
    return LossOutput(loss=loss, metrics=metrics,
                      expert_load=aux.expert_load.detach() if aux is not None else None)
