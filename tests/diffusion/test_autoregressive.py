"""The AR twin's objective: exact next-token NLL under causal attention, learnable, decodable, validated."""

from __future__ import annotations

import math

import pytest
import torch

from omnidiff.diffusion.losses import training_loss
from omnidiff.diffusion.objectives import DiffusionLossConfig
from omnidiff.models.layers import AttentionSpec
from omnidiff.sampling import SamplerConfig, generate
from tests.diffusion.test_objectives import VOCAB, debug_model, reverse_task

AR = dict(kind="autoregressive", attention="causal", shift=True)


def test_loss_is_the_exact_next_token_nll_per_answer_token():
    batch, model = reverse_task(6), debug_model()
    out = training_loss(model, batch, DiffusionLossConfig.for_vocab(VOCAB, **AR))
    with torch.no_grad():
        logits = model(batch["tokens"], attention=AttentionSpec("causal", padding_mask=batch["padding_mask"]))
    logp = logits.float().log_softmax(-1)
    ans = batch["answer_mask"]
    total, count = 0.0, 0
    for b, j in ans.nonzero().tolist():  # token j is predicted at column j - 1
        total -= float(logp[b, j - 1, batch["tokens"][b, j]])
        count += 1
    assert out.metrics["nll"] == pytest.approx(total / count, rel=1e-5)
    assert out.metrics["elbo"] == out.metrics["nll"]
    assert math.isfinite(out.metrics["elbo/copy"]) and math.isfinite(out.metrics["elbo/reverse"])
    assert out.metrics["loss"] == pytest.approx(
        out.metrics["ar_loss"] + 0.01 * out.metrics["moe_balance"] + 0.001 * out.metrics["moe_z"], rel=1e-5)


def test_a_later_token_never_changes_an_earlier_tokens_loss():
    batch, model = reverse_task(4), debug_model()
    cfg = DiffusionLossConfig.for_vocab(VOCAB, **AR)
    last = batch["tokens"].clone()
    last[:, -1] = VOCAB.range("text").offset  # only the final answer token changes
    first = training_loss(model, batch, cfg).metrics["nll"]
    second = training_loss(model, {**batch, "tokens": last}, cfg).metrics["nll"]
    A = int(batch["answer_mask"].sum())
    # Only the final tokens' own terms may differ; everything before them is scored on the same inputs.
    with torch.no_grad():
        logits = model(batch["tokens"], attention=AttentionSpec("causal", padding_mask=batch["padding_mask"]))
    logp = logits.float().log_softmax(-1)[:, -2]
    delta = float((logp.gather(1, batch["tokens"][:, -1:]) - logp.gather(1, last[:, -1:])).sum())
    assert second * A == pytest.approx(first * A + delta, rel=1e-4, abs=1e-4)


def test_a_model_trained_with_it_memorises_and_decodes_greedily_with_the_causal_cache():
    batch, model = reverse_task(12, answer_len=6, max_prefix=5), debug_model()
    cfg = DiffusionLossConfig.for_vocab(VOCAB, **AR)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(250):
        out = training_loss(model, batch, cfg)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.metrics["nll"] < 0.05
    model.eval()
    prompts = [t[p & ~a] for t, p, a in zip(batch["tokens"], batch["padding_mask"], batch["answer_mask"], strict=True)]
    answers = [t[a] for t, a in zip(batch["tokens"], batch["answer_mask"], strict=True)]
    config = SamplerConfig(attention="causal", cache="causal", block_len=1, shift=True, early_stop=False)
    decoded = generate(model, prompts, answer_len=6, vocab=VOCAB, config=config)
    assert torch.equal(decoded.tokens, torch.stack(answers))
    assert decoded.stats["nfe"] == 6  # the prompt, then one forward per committed token but the last


@pytest.mark.parametrize("kw, message", [
    ({"attention": "prefix"}, "attention: causal"),
    ({"shift": False}, "shift: true"),
    ({"complementary": True}, "complementary: false"),
    ({"anneal_steps": 10}, "anneal_steps: 0"),
])
def test_inconsistent_ar_configs_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        DiffusionLossConfig(**{**AR, **kw})


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown objective kind 'gpt'"):
        DiffusionLossConfig(kind="gpt")
