"""Mixture-of-experts feed-forward: router, dropless sorted dispatch, auxiliary losses, load stats.

Dispatch is dropless and vectorised: the (token, expert) assignments are sorted by expert so each
expert's tokens form one contiguous slice; each expert runs one matmul on its slice (a loop over
E experts, never over tokens), or one grouped matmul where the backend offers it. Outputs are
scattered back with ``index_add_`` weighted by the router scores.

The auxiliary losses are *returned* in `MoEAux` and the training objective decides their weights:
- load balance (Switch/GShard form): ``E * sum_i f_i * P_i`` with f_i the fraction of routed
  assignments that went to expert i and P_i its mean router probability; equals 1 under uniform
  routing, which is its minimum;
- router z-loss (ST-MoE): ``mean(logsumexp(router_logits)^2)``.
An optional per-expert bias (aux-loss-free balancing, DeepSeek-V3) shifts selection only, never
the combine weights; the trainer nudges it with `update_expert_bias`.

Shape legend: N tokens, C model width, F expert hidden width, E experts, K top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.models.layers import SwiGLU


@dataclass(frozen=True)
class MoEConfig:
    num_experts: int = 8
    top_k: int = 2
    expert_hidden: int = 512
    shared_expert_hidden: int = 0  # 0 = no shared expert
    score_func: str = "softmax"  # "softmax" | "sigmoid"
    normalize_top_k: bool = True  # renormalise the k selected scores to sum to 1
    expert_bias: bool = False  # aux-loss-free balancing bias (selection only)

    def __post_init__(self):
        if self.score_func not in ("softmax", "sigmoid"):
            raise ValueError(f"unknown MoE score_func {self.score_func!r}; allowed: ['softmax', 'sigmoid']")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"MoE top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")


@dataclass
class MoEAux:
    """Auxiliary outputs of one or more MoE layers (summed over layers by `combine`)."""

    balance_loss: torch.Tensor
    z_loss: torch.Tensor
    expert_load: torch.Tensor  # [num_moe_layers, E] fraction of assignments per expert
    num_layers: int = 1

    @staticmethod
    def combine(items: list[MoEAux]) -> MoEAux | None:
        if not items:
            return None
        return MoEAux(
            balance_loss=torch.stack([a.balance_loss for a in items]).sum(),
            z_loss=torch.stack([a.z_loss for a in items]).sum(),
            expert_load=torch.cat([a.expert_load for a in items]),
            num_layers=sum(a.num_layers for a in items),
        )


def _grouped_mm_ok(x: torch.Tensor) -> bool:
    """torch._grouped_mm runs fp32 on CPU; on CUDA it wants bf16 (Hopper+ kernels)."""
    return hasattr(torch, "_grouped_mm") and (x.device.type == "cpu" or x.dtype == torch.bfloat16)


class MoEFeedForward(nn.Module):
    def __init__(self, dim: int, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        E, F_ = cfg.num_experts, cfg.expert_hidden
        self.router = nn.Linear(dim, E, bias=False)
        # Experts stored stacked ([E, ...]) so a grouped matmul or expert parallelism can slice them.
        self.w_gate = nn.Parameter(torch.empty(E, dim, F_))
        self.w_up = nn.Parameter(torch.empty(E, dim, F_))
        self.w_down = nn.Parameter(torch.empty(E, F_, dim))
        self.shared = SwiGLU(dim, cfg.shared_expert_hidden) if cfg.shared_expert_hidden else None
        self.register_buffer("bias", torch.zeros(E), persistent=cfg.expert_bias)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        for w in (self.w_gate, self.w_up, self.w_down):
            nn.init.normal_(w, std=std)

    def route(self, x_NC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (router logits [N, E], top-k expert ids [N, K], combine weights [N, K])."""
        logits = self.router(x_NC).float()
        scores = logits.softmax(-1) if self.cfg.score_func == "softmax" else logits.sigmoid()
        select_by = scores + self.bias if self.cfg.expert_bias else scores
        top_idx = select_by.topk(self.cfg.top_k, dim=-1).indices
        top_w = scores.gather(-1, top_idx)
        if self.cfg.normalize_top_k and self.cfg.top_k > 1:
            top_w = top_w / top_w.sum(-1, keepdim=True).clamp_min(1e-9)
        return logits, top_idx, top_w

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, MoEAux]:
        shape = x.shape
        x_NC = x.reshape(-1, shape[-1])
        logits, top_idx, top_w = self.route(x_NC)
        out = self._dispatch(x_NC, top_idx, top_w.to(x.dtype))
        if self.shared is not None:
            out = out + self.shared(x_NC)
        return out.view(shape), self._aux(logits, top_idx)

    def _dispatch(self, x_NC: torch.Tensor, top_idx_NK: torch.Tensor, top_w_NK: torch.Tensor) -> torch.Tensor:
        N, K = top_idx_NK.shape
        flat_expert = top_idx_NK.reshape(-1)
        order = flat_expert.argsort(stable=True)
        token_of = order // K  # which token each sorted assignment belongs to
        counts = torch.bincount(flat_expert, minlength=self.cfg.num_experts).tolist()
        x_sorted = x_NC.index_select(0, token_of)
        if _grouped_mm_ok(x_sorted):
            offsets = torch.tensor(counts, device=x_NC.device).cumsum(0).to(torch.int32)
            h = F.silu(torch._grouped_mm(x_sorted, self.w_gate, offs=offsets))
            h = h * torch._grouped_mm(x_sorted, self.w_up, offs=offsets)
            y_sorted = torch._grouped_mm(h, self.w_down, offs=offsets)
        else:
            y_sorted = self._expert_loop(x_sorted, counts)
        y_sorted = y_sorted * top_w_NK.reshape(-1)[order].unsqueeze(-1)
        return torch.zeros_like(x_NC).index_add_(0, token_of, y_sorted)

    def _expert_loop(self, x_sorted: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Fallback without grouped matmul: one matmul per expert on its contiguous slice."""
        # unbind (not w[e]) so backward stacks the expert gradients once instead of adding E
        # full-size zero-padded gradients.
        w_gate, w_up, w_down = self.w_gate.unbind(0), self.w_up.unbind(0), self.w_down.unbind(0)
        pieces = []
        for e, xs in enumerate(x_sorted.split(counts)):
            if xs.shape[0]:
                pieces.append((F.silu(xs @ w_gate[e]) * (xs @ w_up[e])) @ w_down[e])
        return torch.cat(pieces)

    def _aux(self, logits_NE: torch.Tensor, top_idx_NK: torch.Tensor) -> MoEAux:
        E = self.cfg.num_experts
        probs = logits_NE.softmax(-1)
        counts = torch.bincount(top_idx_NK.reshape(-1), minlength=E).to(probs.dtype)
        f = counts / counts.sum().clamp_min(1)
        balance = E * (f.detach() * probs.mean(0)).sum()
        z = torch.logsumexp(logits_NE, dim=-1).pow(2).mean()
        return MoEAux(balance_loss=balance, z_loss=z, expert_load=f.detach().unsqueeze(0))

    @torch.no_grad()
    def update_expert_bias(self, expert_load: torch.Tensor, rate: float = 1e-3) -> None:
        """Aux-loss-free balancing step: raise the bias of under-loaded experts, lower over-loaded ones."""
        if not self.cfg.expert_bias:
            raise ValueError("update_expert_bias needs MoEConfig(expert_bias=True)")
        self.bias += rate * torch.sign(expert_load.mean() - expert_load).to(self.bias)
