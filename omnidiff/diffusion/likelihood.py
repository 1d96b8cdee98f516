"""Monte-Carlo log-likelihood bound of an answer given a prompt, evaluated as LLaDA does.

For an answer of A tokens, each Monte-Carlo sample i masks exactly k_i answer tokens chosen
uniformly at random and scores them:

    NLL_i = (A / k_i) * sum_{j masked} -log p_theta(x_j | x_masked)
    log p(answer | prompt) >= -mean_i NLL_i

which is the masked-diffusion ELBO with the time integral replaced by a uniform draw of the number
of masked tokens (LLaDA, eq. 6; lower variance than drawing t). The counts are stratified over
1..A: k_i = 1 + floor(A (i + u) / n) with one offset u ~ U(0, 1) per answer, so n samples cover
the range evenly. All (answer, sample) rows are batched together, left-padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.diffusion.objectives import DiffusionLossConfig, model_logits


@dataclass(frozen=True)
class LikelihoodConfig:
    num_samples: int = 32  # Monte-Carlo samples per answer
    batch_size: int = 32  # rows per forward
    attention: str = "prefix"  # "prefix" | "full" | "causal"
    shift: bool = False
    mask_id: int = 1  # vocab.mask_id
    pad_id: int = 0  # vocab.pad_id

    def __post_init__(self):
        if self.num_samples <= 0 or self.batch_size <= 0:
            raise ValueError(f"num_samples and batch_size must be positive, got {self.num_samples}, {self.batch_size}")
        if self.attention not in ("prefix", "full", "causal"):
            raise ValueError(f"likelihood attention must be 'prefix', 'full' or 'causal', got {self.attention!r}")


@dataclass
class LikelihoodOutput:
    log_likelihood: torch.Tensor  # [N] lower bound on log p(answer | prompt), nats
    nats_per_token: torch.Tensor  # [N] -log_likelihood / answer length
    std_error: torch.Tensor  # [N] Monte-Carlo standard error of log_likelihood


def stratified_counts(answer_len: int, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num_samples`` mask counts in 1..answer_len, one per stratum of equal width."""
    u = torch.rand(1, generator=generator, device=generator.device if generator is not None else "cpu").cpu()
    k = 1 + torch.floor(answer_len * (torch.arange(num_samples) + u) / num_samples).long()
    return k.clamp(1, answer_len)


def _as_list(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x] if x.dim() == 1 else list(x)
    return list(x)


@torch.no_grad()
def answer_log_likelihood(
    model: nn.Module, prompts, answers, cfg: LikelihoodConfig = LikelihoodConfig(), *,
    generator: torch.Generator | None = None,
) -> LikelihoodOutput:
    """ELBO lower bound of ``log p(answer | prompt)`` for each pair.

    Args:
        model: the diffusion `Transformer` (put it in eval mode first).
        prompts: list of 1-D LongTensors (or one 1-D tensor / a [N, P] tensor).
        answers: the matching answers, same forms; each non-empty.
        cfg: number of samples, batching, attention mode and special ids.
        generator: RNG for the mask draws.
    """
    prompts, answers = _as_list(prompts), _as_list(answers)
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
    if any(a.numel() == 0 for a in answers):
        raise ValueError("every answer needs at least one token")
    if cfg.shift and any(p.numel() == 0 for p in prompts):
        raise ValueError("shift needs a non-empty prompt (answer token j is read from logits at j - 1)")
    device = next(model.parameters()).device
    L = max(p.numel() + a.numel() for p, a in zip(prompts, answers, strict=True))
    n = cfg.num_samples

    # One row per (pair, sample): left pads, prompt, answer with exactly k answer tokens masked.
    rows_x0, rows_pad, rows_ans, rows_masked, rows_scale = [], [], [], [], []
    for p, a in zip(prompts, answers, strict=True):
        A, P = a.numel(), p.numel()
        seq = torch.cat([torch.full((L - P - A,), cfg.pad_id, dtype=torch.long), p.long().cpu(), a.long().cpu()])
        pad = torch.arange(L) >= L - P - A
        ans = torch.arange(L) >= L - A
        ks = stratified_counts(A, n, generator)
        gen_device = generator.device if generator is not None else "cpu"
        scores = torch.rand(n, A, generator=generator, device=gen_device).cpu()
        rank = scores.argsort(1).argsort(1)  # a uniformly random permutation of 0..A-1 per row
        chosen = rank < ks.view(-1, 1)
        masked = torch.zeros(n, L, dtype=torch.bool)
        masked[:, L - A:] = chosen
        rows_x0.append(seq.expand(n, L))
        rows_pad.append(pad.expand(n, L))
        rows_ans.append(ans.expand(n, L))
        rows_masked.append(masked)
        rows_scale.append(A / ks.double())
    x0, pad, ans = torch.cat(rows_x0), torch.cat(rows_pad), torch.cat(rows_ans)
    masked, scale = torch.cat(rows_masked), torch.cat(rows_scale)

    loss_cfg = DiffusionLossConfig(attention=cfg.attention, shift=cfg.shift, mask_id=cfg.mask_id)
    nll = torch.zeros(x0.shape[0], dtype=torch.float64)
    for start in range(0, x0.shape[0], cfg.batch_size):
        sl = slice(start, start + cfg.batch_size)
        b_x0, b_pad, b_ans, b_m = (t[sl].to(device) for t in (x0, pad, ans, masked))
        x_t = torch.where(b_m, torch.full_like(b_x0, cfg.mask_id), b_x0)
        logits_NV, _ = model_logits(model, x_t, b_x0, b_pad, b_ans, b_m, loss_cfg)
        ce = F.cross_entropy(logits_NV.float(), b_x0[b_m], reduction="none").double()
        rows = b_m.nonzero(as_tuple=True)[0]
        nll[sl] = torch.zeros(b_x0.shape[0], dtype=torch.float64, device=device).index_add(0, rows, ce).cpu()
    estimates = (nll * scale).view(len(answers), n)
    lengths = torch.tensor([a.numel() for a in answers], dtype=torch.float64)
    bound = -estimates.mean(1)
    std = estimates.std(1) / n**0.5 if n > 1 else torch.zeros_like(bound)
    return LikelihoodOutput(log_likelihood=bound, nats_per_token=-bound / lengths, std_error=std)
