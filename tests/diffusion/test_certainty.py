"""Certainty forcing: the model's own answers become the targets, and training on them makes it sure where right."""

from __future__ import annotations

import copy

import pytest
import torch

from omnidiff.diffusion.certainty import own_answers, text_answer_rows
from omnidiff.diffusion.losses import training_loss
from omnidiff.diffusion.objectives import DiffusionLossConfig, diffusion_loss
from omnidiff.sampling import SamplerConfig, generate
from tests.diffusion.test_objectives import VOCAB, debug_model, reverse_task

CF = dict(kind="certainty_forcing", certainty_coef=1.0, teacher_block_len=4)


def prompts_of(batch):
    return [t[p & ~a] for t, p, a in zip(batch["tokens"], batch["padding_mask"], batch["answer_mask"], strict=True)]


def test_text_rows_are_re_answered_by_the_models_own_slow_decode():
    batch, model = reverse_task(4), debug_model()
    mixed = batch["tokens"].clone()
    mixed[0, -1] = VOCAB.mask_id  # not text: row 0 keeps its answer
    batch = {**batch, "tokens": mixed}
    assert text_answer_rows(mixed, batch["answer_mask"], VOCAB).tolist() == [False, True, True, True]
    cfg = DiffusionLossConfig.for_vocab(VOCAB, **CF)
    got = own_answers(model, batch, cfg, VOCAB)["tokens"]
    assert torch.equal(got[0], mixed[0])
    slow = generate(model.eval(), prompts_of(batch)[1:], answer_len=8, vocab=VOCAB,
                    config=SamplerConfig(cache="prefix", block_len=4))
    assert torch.equal(got[1:, -8:], slow.tokens)
    assert torch.equal(got[:, :-8], mixed[:, :-8])  # prompts untouched


def test_loss_adds_the_entropy_of_right_predictions_and_reports_it():
    batch, model = reverse_task(6), debug_model()
    teacher = copy.deepcopy(model).eval()
    out = training_loss(model, batch, DiffusionLossConfig.for_vocab(VOCAB, **CF), vocab=VOCAB, teacher=teacher,
                        generator=torch.Generator().manual_seed(0))
    m = out.metrics
    assert m["certainty"] >= 0 and 0 <= m["right_share"] <= 1 and m["own_answers_differ"] == 1.0
    assert m["loss"] == pytest.approx(m["diffusion_loss"] + 0.01 * m["moe_balance"] + 0.001 * m["moe_z"]
                                      + m["certainty"], rel=1e-4)
    out.loss.backward()
    with pytest.raises(ValueError, match="needs vocab= and teacher="):
        training_loss(model, batch, DiffusionLossConfig.for_vocab(VOCAB, **CF))


def threshold_decode(model, batch):
    cfg = SamplerConfig(cache="prefix", strategy="threshold", threshold=0.9, block_len=4)
    return generate(model.eval(), prompts_of(batch), answer_len=8, vocab=VOCAB, config=cfg)


def test_distilling_a_trained_model_raises_tokens_per_forward_and_keeps_its_answers():
    batch, model = reverse_task(16), debug_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    plain = DiffusionLossConfig.for_vocab(VOCAB)
    for step in range(120):  # a partly trained teacher
        out = diffusion_loss(model.train(), batch, plain, generator=g, step=step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    before = threshold_decode(model, batch)
    slow_before = generate(model.eval(), prompts_of(batch), answer_len=8, vocab=VOCAB,
                           config=SamplerConfig(cache="prefix", block_len=4)).tokens
    cf = DiffusionLossConfig.for_vocab(VOCAB, **CF)
    teacher = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(100):
        out = training_loss(model.train(), batch, cf, generator=g, step=step, vocab=VOCAB, teacher=teacher)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = threshold_decode(model, batch)
    assert after.stats["tokens_per_forward"] > before.stats["tokens_per_forward"]
    agree = float((after.tokens == slow_before).float().mean())
    assert agree >= 0.9, f"the distilled fast decode agrees with the teacher's slow decode on {agree:.0%} of tokens"


@pytest.mark.parametrize("kw, message", [
    ({"attention": "block", "block_size": 4}, "prefix or full attention"),
    ({"certainty_coef": -1.0}, "certainty_coef >= 0"),
])
def test_bad_certainty_configs_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        DiffusionLossConfig(**{**CF, **kw})
