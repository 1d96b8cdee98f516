"""The masked-diffusion training loss (docs/design.md, "Training objective"): `DiffusionLossConfig`, `diffusion_loss`.

For a batch of clean sequences x_0 (prefix + answer), draw a time t per sample (per block in block
diffusion), mask each answer token with probability ``1 - alpha_t`` and score the model's
prediction of every masked token:

    L(b)  = sum_{j masked} w(t_bj) * CE(logits[b, j], x_0[b, j]),     w(t) = -alpha'_t / (1 - alpha_t)
    ELBO  = sum_b L(b) / sum_b A_b                                    (nats per answer token)

where A_b counts sample b's answer tokens (its ``<eos>`` padding included: those are trained on).
The training loss is the same sum normalised per token (``token``, pretraining) or
``mean_b L(b) / A_b`` (``answer_length``, LLaDA SFT). E_t[L(b)] is the negative ELBO of the answer
given the prefix, so ``elbo`` is a Monte-Carlo estimate of the bound in nats per token (with a
mask-rate clip it only covers the clipped range; evaluate with `likelihood.py` instead).

Options:
- ``weighting="flat"`` (MaskGIT, LaViDa): the training loss drops w(t) and scores every masked token
  once, so a lightly masked copy (w = 1/t large) no longer dominates the gradient; ``elbo`` is still
  logged with w(t).
- ``complementary`` (LaViDa): two copies per sample with complementary masked sets, rates p and 1 - p;
  each copy is scored only where it is masked; the ELBO is the mean of the two copies' estimates.
  With ``share_prefix`` (prefix attention) both copies sit in one row against one encoding of the
  prefix (`packing.py`): the same loss, the prefix computed once.
- ``attention="block"`` (BD3-LM): per-block times, input ``x_t ⊕ x_0``; only the x_t half is scored.
- ``shift`` (AR-initialised models): the prediction of token j is read from logits[j - 1].
- ``eos_weight`` < 1: masked ``<eos>`` targets (the padding of a short answer in a long canvas) weigh
  that much in the training loss, so a caption of ~8 tokens in 24 columns is not mostly a lesson in
  its own length; the logged ``elbo`` keeps every token at full weight.
- ``anneal_steps = N`` (DiffuLLaMA): attention starts causal, the way the AR model was trained, and
  each pair the causal mask hides but the target mode allows becomes visible with probability
  step / N; from step N on it is the target mode. The target is ``attention`` itself for
  ``prefix`` and ``full`` (``prefix``: the prefix never sees the answer, so its cache stays exact),
  and ``full`` for ``attention="causal"``. `DiffusionLossConfig.target_attention` names it; validation
  and decoding use it.
- MoE: ``moe_balance_coef * balance + moe_z_coef * z`` is added to the loss and logged apart.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.data.formatting import prompt_inputs
from omnidiff.diffusion.masking import (
    annealed_attention_mask,
    block_input,
    complementary_copies,
    mask_tokens,
    num_blocks,
    per_block_values,
    reveal_probability,
)
from omnidiff.diffusion.packing import pack_copies, packed_values
from omnidiff.diffusion.schedules import NoiseSchedule, TimeSampler
from omnidiff.models.layers import AttentionSpec

NORMALIZATIONS = ("token", "answer_length")
WEIGHTINGS = ("elbo", "flat")
# autoregressive: the AR twin (autoregressive.py); certainty_forcing: few-step distillation (certainty.py)
OBJECTIVE_KINDS = ("diffusion", "autoregressive", "certainty_forcing")
LOSS_ATTENTION_MODES = ("prefix", "full", "block", "causal")


@dataclass
class DiffusionLossConfig:
    """Everything the diffusion objective needs (see the module docstring for the formulas).

    ``mask_id`` must be the vocabulary's ``<mask>`` id (``vocab.mask_id``; 1 with the default
    specials); `DiffusionLossConfig.for_vocab` fills it in.
    """

    schedule: str = "linear"  # "linear" | "cosine" | "loglinear"
    time_sampling: str = "antithetic"  # "uniform" | "antithetic"
    eps: float = 1e-3  # t = (1 - eps) u + eps
    mask_rate_clip: tuple[float, float] | None = None  # BD3-LM (beta, omega)
    normalization: str = "token"  # "token" | "answer_length"
    weighting: str = "elbo"  # "elbo": w(t) = -alpha'_t / (1 - alpha_t) | "flat": every masked token weighs 1
    # (MaskGIT, LaViDa); the logged elbo keeps w(t) either way
    complementary: bool = False
    share_prefix: bool = False  # complementary copies under prefix attention share one prefix encoding
    # (packing.py): same loss and gradients, the prefix computed once instead of twice
    attention: str = "prefix"  # "prefix" | "full" | "block" | "causal"
    block_size: int | None = None  # for attention="block"
    shift: bool = False  # logits at i predict token i + 1 (AR-initialised models)
    anneal_steps: int = 0  # > 0: causal -> target_attention over N steps (not with block)
    moe_balance_coef: float = 0.01
    moe_z_coef: float = 0.001
    mask_id: int = 1
    eos_id: int = 2  # the vocabulary's <eos> (the trainer sets it); only read when eos_weight != 1
    eos_weight: float = 1.0  # weight of masked <eos> targets in the training loss (not in the logged elbo)
    kind: str = "diffusion"  # "diffusion" | "autoregressive" (next-token loss; attention causal, shift true)
    # | "certainty_forcing" (diffusion loss on the model's own answers + entropy where it is right)
    certainty_coef: float = 0.5  # certainty_forcing: weight of the entropy term
    teacher_block_len: int = 8  # certainty_forcing: block length of the one-token-per-step own decode

    def __post_init__(self):
        if isinstance(self.mask_rate_clip, list):
            self.mask_rate_clip = tuple(self.mask_rate_clip)
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; allowed: {list(NORMALIZATIONS)}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; allowed: {list(WEIGHTINGS)}")
        if self.attention not in LOSS_ATTENTION_MODES:
            raise ValueError(f"unknown attention {self.attention!r}; allowed: {list(LOSS_ATTENTION_MODES)}")
        if self.attention == "block" and (self.block_size is None or self.block_size <= 0):
            raise ValueError("attention='block' needs a positive block_size (the BD3-LM block length)")
        if self.attention == "block" and self.shift:
            raise ValueError("shift is not defined for block diffusion (a block's first token would be read "
                             "from the previous block); use shift with 'full', 'prefix' or 'causal' attention")
        if self.share_prefix and not (self.complementary and self.attention == "prefix" and not self.shift):
            raise ValueError("share_prefix packs complementary copies against one prefix encoding: it needs "
                             "complementary=true, attention='prefix' and shift=false")
        if self.anneal_steps < 0 or (self.anneal_steps and self.attention == "block"):
            raise ValueError(f"anneal_steps={self.anneal_steps} must be >= 0 and anneals towards 'prefix', 'full' or "
                             "(from attention='causal') 'full'; block attention is not annealed")
        if not 0 <= self.eos_weight <= 1:
            raise ValueError(f"objective.eos_weight must be in [0, 1], got {self.eos_weight}")
        if self.kind not in OBJECTIVE_KINDS:
            raise ValueError(f"unknown objective kind {self.kind!r}; allowed: {list(OBJECTIVE_KINDS)}")
        if self.kind == "certainty_forcing" and (self.attention == "block" or self.certainty_coef < 0
                                                 or self.teacher_block_len < 0):
            raise ValueError("objective.kind=certainty_forcing needs prefix or full attention, certainty_coef >= 0 and "
                             f"teacher_block_len >= 0 (got attention={self.attention!r}, certainty_coef="
                             f"{self.certainty_coef}, teacher_block_len={self.teacher_block_len})")
        if self.kind == "autoregressive" and self.eos_weight != 1:
            raise ValueError("objective.eos_weight weighs masked <eos> targets of the diffusion loss; the autoregressive "
                             "objective scores every next token alike: leave eos_weight at 1")
        if self.kind == "autoregressive" and (self.attention != "causal" or not self.shift or self.complementary
                                              or self.anneal_steps):
            raise ValueError("objective.kind=autoregressive trains next-token prediction: set attention: causal and "
                             "shift: true, with complementary: false and anneal_steps: 0 (got attention="
                             f"{self.attention!r}, shift={self.shift}, complementary={self.complementary}, "
                             f"anneal_steps={self.anneal_steps})")
        self.time_sampler()  # validates schedule, sampling, eps and clip

    @property
    def target_attention(self) -> str:
        """The attention this objective trains towards: ``attention``, or ``full`` once ``causal`` is annealed."""
        return "full" if self.attention == "causal" and self.anneal_steps else self.attention

    @classmethod
    def for_vocab(cls, vocab, **kwargs) -> DiffusionLossConfig:
        return cls(mask_id=vocab.mask_id, eos_id=vocab.eos_id, **kwargs)

    def time_sampler(self) -> TimeSampler:
        return TimeSampler(NoiseSchedule(self.schedule), self.time_sampling, self.eps, self.mask_rate_clip,
                           symmetric=self.complementary)


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to backprop (MoE aux included)
    metrics: dict[str, float] = field(default_factory=dict)
    expert_load: torch.Tensor | None = None  # [num_moe_layers, E]
    logits: torch.Tensor | None = None  # [N, V] of the scored positions (for losses built on this one)
    targets: torch.Tensor | None = None  # [N] their clean tokens


def check_batch(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, padding_mask, answer_mask) of a collated batch, validated."""
    missing = [k for k in ("tokens", "padding_mask", "answer_mask") if k not in batch]
    if missing:
        raise ValueError(f"batch is missing {missing}; the collator must yield tokens, padding_mask and answer_mask")
    tokens, pad, ans = batch["tokens"], batch["padding_mask"].bool(), batch["answer_mask"].bool()
    if tokens.dim() != 2 or pad.shape != tokens.shape or ans.shape != tokens.shape:
        raise ValueError(f"tokens, padding_mask and answer_mask must all be [B, L]; got {tuple(tokens.shape)}, "
                         f"{tuple(pad.shape)}, {tuple(ans.shape)}")
    if (ans & ~pad).any():
        raise ValueError("answer_mask marks padded positions; answer positions must be real tokens (padding_mask True)")
    if not ans.any(1).all():
        raise ValueError("every sample needs at least one answer position (answer_mask is all False in some row)")
    return tokens, pad, ans


def shift_selection(masked_BL: torch.Tensor) -> torch.Tensor:
    """Positions whose logits predict the masked tokens under ``shift``: token j is read at j - 1.

    The map j -> j - 1 keeps row-major order, so the selected logits line up with ``x_0[masked]``.
    Column 0 is never an answer position (`check_shift`).
    """
    sel = torch.zeros_like(masked_BL)
    sel[:, :-1] = masked_BL[:, 1:]
    return sel


def attention_spec(cfg: DiffusionLossConfig, pad_BL: torch.Tensor, ans_BL: torch.Tensor,
                   mode: str | None = None) -> AttentionSpec:
    """The `AttentionSpec` of a non-annealed forward over [B, L] tokens (in ``mode``, default ``cfg.attention``)."""
    mode = mode or cfg.attention
    if mode == "prefix":
        return AttentionSpec("prefix", prefix_lengths=ans_BL.int().argmax(1), padding_mask=pad_BL)
    if mode == "block":
        return AttentionSpec("block", block_size=cfg.block_size, padding_mask=pad_BL)
    return AttentionSpec(mode, padding_mask=pad_BL)


def model_logits(model: nn.Module, x_t: torch.Tensor, x_0: torch.Tensor, pad: torch.Tensor, ans: torch.Tensor,
                 masked: torch.Tensor, cfg: DiffusionLossConfig, *, step: int = 0,
                 generator: torch.Generator | None = None):
    """(logits [N, V] of the N masked positions, in the order of ``x_0[masked]``; MoEAux or None).

    Only the positions a loss reads get logits: at this model size the LM head over every prefix
    and unmasked column would cost more than the transformer trunk (an ASR prefix is 600+ codes).
    """
    select = shift_selection(masked) if cfg.shift else masked
    if cfg.attention == "block":
        select = torch.cat([select, torch.zeros_like(select)], 1)  # the x_0 half only serves as context
        return model(block_input(x_t, x_0), attention=attention_spec(cfg, pad, ans), return_aux=True,
                     logits_mask=select)
    spec = attention_spec(cfg, pad, ans, cfg.target_attention)
    if cfg.anneal_steps and reveal_probability(step, cfg.anneal_steps) < 1.0:
        # The target's mask ANDed with "causal or revealed": the causal pairs (all inside the target)
        # plus each other pair the target allows, with the reveal probability.
        pattern = annealed_attention_mask(pad, reveal_probability(step, cfg.anneal_steps), generator=generator)
        spec = dataclasses.replace(spec, allowed=pattern)
    return model(x_t, attention=spec, return_aux=True, logits_mask=select)


def check_shift(pad: torch.Tensor, ans: torch.Tensor) -> None:
    start = ans.int().argmax(1)
    before = pad.gather(1, (start - 1).clamp_min(0).view(-1, 1)).squeeze(1)
    if (start == 0).any() or not before.all():
        raise ValueError("shift reads answer token j from logits at j - 1, so every answer needs at least one "
                         "real prefix token before it; give each sample a prefix (e.g. <bos> or a task token)")


def diffusion_loss(model: nn.Module, batch: dict, cfg: DiffusionLossConfig, *,
                   generator: torch.Generator | None = None, step: int = 0) -> LossOutput:
    """The diffusion loss and its metrics for one collated batch.

    Args:
        model: a `Transformer` (or anything with its forward signature and ``return_aux``).
        batch: dict with ``tokens``, ``padding_mask``, ``answer_mask`` [B, L] and optional ``tasks``.
        cfg: the objective's config.
        generator: RNG for time draws and masks (reproducible evaluation).
        step: training step (drives attention annealing).
    """
    x_0, pad, ans = check_batch(batch)
    if cfg.shift:
        check_shift(pad, ans)
    B, L = x_0.shape
    device = x_0.device
    schedule, sampler = NoiseSchedule(cfg.schedule), cfg.time_sampler()

    if cfg.attention == "block":
        K = num_blocks(L, cfg.block_size)
        t = per_block_values(sampler.sample(B * K, generator=generator, device=device).view(B, K), L, cfg.block_size)
    else:
        t = sampler.sample(B, generator=generator, device=device)
    rate = schedule.mask_rate(t)
    tasks = list(batch.get("tasks") or [])
    inputs = prompt_inputs(batch)  # prompt images and clips (models/*_encoder.py), bound to the model's calls
    forward = functools.partial(model, **inputs) if inputs else model
    if cfg.complementary and cfg.share_prefix:  # both copies in one row each, one prefix encoding
        x_t, masked, rate = complementary_copies(x_0, ans, rate, cfg.mask_id, generator=generator)
        packed = pack_copies(pad, ans, [x_t[:B], x_t[B:]], [masked[:B], masked[B:]])
        t_CB = torch.stack([t, schedule.time_of_rate(1.0 - rate[:B]).to(t)])
        spec = AttentionSpec("full", padding_mask=packed.padding_mask, allowed=packed.allowed)
        logits_NV, aux = forward(packed.tokens, attention=spec, positions=packed.positions, return_aux=True,
                               logits_mask=packed.masked)
        masked, rows = packed.masked, B
        targets = torch.cat([x_0, x_0[:, L - packed.width:]], 1)[masked]
        weight_BL = packed_values(schedule.weight(t_CB), L, packed.width)
        num_answer = 2 * ans.sum(1)
    else:
        if cfg.complementary:
            x_t, masked, rate = complementary_copies(x_0, ans, rate, cfg.mask_id, generator=generator)
            t = torch.cat([t, schedule.time_of_rate(1.0 - rate[:B]).to(t)])
            x_0, pad, ans, tasks = torch.cat([x_0, x_0]), torch.cat([pad, pad]), torch.cat([ans, ans]), tasks * 2
            if inputs:
                forward = functools.partial(model, **prompt_inputs(batch, times=2))
        else:
            x_t, masked = mask_tokens(x_0, ans, rate, cfg.mask_id, generator=generator)
        logits_NV, aux = model_logits(forward, x_t, x_0, pad, ans, masked, cfg, step=step, generator=generator)
        rows = x_0.shape[0]
        targets = x_0[masked]
        weight_BL = schedule.weight(t.view(rows, -1)).expand(rows, L)
        num_answer = ans.sum(1)
    row_idx = masked.nonzero(as_tuple=True)[0]
    ce = F.cross_entropy(logits_NV.float(), targets, reduction="none")
    per_row = torch.zeros(rows, device=device, dtype=ce.dtype).index_add(0, row_idx, ce * weight_BL[masked])
    num_answer = num_answer.to(per_row.dtype)

    elbo = per_row.sum() / num_answer.sum()
    scored = ce if cfg.weighting == "flat" else ce * weight_BL[masked]
    if cfg.eos_weight != 1:
        scored = scored * torch.where(targets == cfg.eos_id, cfg.eos_weight, 1.0).to(ce.dtype)
    per_row_loss = torch.zeros(rows, device=device, dtype=ce.dtype).index_add(0, row_idx, scored)
    diff_loss = (per_row_loss.sum() / num_answer.sum() if cfg.normalization == "token"
                 else (per_row_loss / num_answer).mean())
    balance = aux.balance_loss if aux is not None else torch.zeros((), device=device)
    z = aux.z_loss if aux is not None else torch.zeros((), device=device)
    loss = diff_loss + cfg.moe_balance_coef * balance + cfg.moe_z_coef * z

    num_masked = int(masked.sum())
    metrics = {
        "loss": float(loss.detach()),
        "diffusion_loss": float(diff_loss.detach()),
        "elbo": float(elbo.detach()),
        "moe_balance": float(balance.detach()),
        "moe_z": float(z.detach()),
        "mask_rate": num_masked / max(1, int(num_answer.sum())),
        "num_masked": float(num_masked),
        "ce_masked": float(ce.detach().mean()) if num_masked else 0.0,
    }
    if num_masked:
        pred = logits_NV.detach().argmax(-1)
        metrics["acc_masked"] = float((pred == targets).float().mean())
    if tasks:
        if len(tasks) != rows:
            raise ValueError(f"batch['tasks'] has {len(tasks) // (rows // B)} names for {B} samples")
        per_row_d, num_answer_d = per_row.detach(), num_answer.detach()
        for task in sorted(set(tasks)):
            sel = torch.tensor([name == task for name in tasks], device=device)
            metrics[f"elbo/{task}"] = float(per_row_d[sel].sum() / num_answer_d[sel].sum())
    expert_load = aux.expert_load.detach() if aux is not None else None
    return LossOutput(loss=loss, metrics=metrics, expert_load=expert_load, logits=logits_NV, targets=targets)
