"""Certainty-forcing distillation for few-step decoding (after dParallel, Chen et al. 2025).

A confidence-threshold sampler commits every token whose probability passes tau, so it is fast
exactly where the model is sure. Certainty forcing fine-tunes a trained model (``model.init_run``)
to be sure where it is right, on its own outputs:

1. **The teacher's own answers.** For every row whose answer is text (captions, VQA, ASR, text), the
   teacher, a frozen copy of the model as the run started (``model.init_run``), decodes the prompt
   one token per step (the slow, careful trajectory: ``teacher_block_len`` blocks, exact prefix
   cache), and that answer replaces the dataset's. Rows of other tasks keep their dataset answers.
   The teacher must stay frozen: re-answering with the student itself lets the targets drift with it
   (measured on a small model: answer accuracy 77% -> 41% in 40 steps, certainty term or not).
2. **Consistency.** The usual masked-diffusion loss on those answers, so the model keeps producing
   what its slow decode produces.
3. **Certainty.** On the masked positions it already predicts right (argmax = target), the mean
   entropy of its prediction is added with weight ``certainty_coef``: a push from "right but unsure"
   to "right and sure", which is what lets a threshold sampler commit many tokens per forward.

    L = L_diffusion(own answers) + certainty_coef * mean_{masked j : argmax_j = x_j} H(p_j)

``objective.kind: certainty_forcing`` selects it; ``configs/distill.yaml`` is the recipe and
docs/decoding.md reports tokens per forward and quality before and after.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from omnidiff.data.formatting import prompt_inputs
from omnidiff.diffusion.objectives import DiffusionLossConfig, LossOutput, check_batch, diffusion_loss


def text_answer_rows(x_0: torch.Tensor, ans: torch.Tensor, vocab) -> torch.Tensor:
    """[B] rows whose every answer token is text or <eos> (the rows the model re-answers itself)."""
    allowed = vocab.modality_mask("text", specials=("<eos>",)).to(x_0.device)
    return (allowed[x_0] | ~ans).all(1)


@torch.no_grad()
def own_answers(model: nn.Module, batch: dict, cfg: DiffusionLossConfig, vocab) -> dict:
    """``batch`` with the answers of its text-answer rows replaced by ``model``'s slow decode."""
    from omnidiff.sampling import SamplerConfig, generate

    x_0, pad, ans = check_batch(batch)
    rows = text_answer_rows(x_0, ans, vocab)
    lengths = ans.sum(1)
    if not rows.any():
        return batch
    module = getattr(model, "module", model)  # a DeepSpeed engine decodes through its module
    was_training = module.training
    module.eval()
    tokens = x_0.clone()
    try:
        for A in sorted(set(lengths[rows].tolist())):
            sel = (rows & (lengths == A)).nonzero().flatten()
            prompts = [x_0[b][pad[b] & ~ans[b]] for b in sel.tolist()]
            block = cfg.teacher_block_len if cfg.teacher_block_len and A % cfg.teacher_block_len == 0 else None
            attention = cfg.target_attention if cfg.target_attention in ("prefix", "full") else "full"
            sampler = SamplerConfig(attention=attention, cache="prefix" if attention == "prefix" else "none",
                                    block_len=block, shift=cfg.shift)
            out = generate(module, prompts, answer_len=int(A), vocab=vocab, config=sampler,
                           **prompt_inputs(batch, rows=sel))
            for i, b in enumerate(sel.tolist()):
                tokens[b, ans[b]] = out.tokens[i]
    finally:
        module.train(was_training)
    return {**batch, "tokens": tokens}


def certainty_forcing_loss(model: nn.Module, batch: dict, cfg: DiffusionLossConfig, *,
                           generator: torch.Generator | None = None, step: int = 0, vocab=None,
                           teacher: nn.Module | None = None) -> LossOutput:
    """The distillation loss of one batch (see the module docstring); ``vocab`` is the model's `Vocab`,
    ``teacher`` the frozen model whose answers are distilled."""
    if vocab is None or teacher is None:
        raise ValueError("certainty forcing decodes the teacher's answers: it needs vocab= and teacher= (in a "
                         "train.py run, model.init_run names the teacher)")
    teacher = own_answers(teacher, batch, cfg, vocab)
    out = diffusion_loss(model, teacher, dataclasses.replace(cfg, kind="diffusion"), generator=generator, step=step)
    logits, targets = out.logits.float(), out.targets
    logp = logits.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    right = logits.detach().argmax(-1) == targets
    certainty = (entropy * right).sum() / right.sum().clamp_min(1)
    loss = out.loss + cfg.certainty_coef * certainty
    changed = float((teacher["tokens"] != batch["tokens"]).any(1).float().mean())
    metrics = {**out.metrics, "loss": float(loss.detach()), "certainty": float(certainty.detach()),
               "right_share": float(right.float().mean()), "own_answers_differ": changed}
    return LossOutput(loss=loss, metrics=metrics, expert_load=out.expert_load)
