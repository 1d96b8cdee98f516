"""In-batch softmax (objective.softmax: batch): the training loss scores against the batch's answer ids only,
ids outside them get no gradient, the logged ELBO keeps the full softmax, and bad settings are refused."""

from __future__ import annotations

import math

import pytest
import torch

from omnidiff.diffusion.candidates import candidate_ids, training_cross_entropy
from omnidiff.diffusion.objectives import DiffusionLossConfig, diffusion_loss
from tests.diffusion.test_objectives import VOCAB, Uniform, debug_model, reverse_task


def test_candidates_are_exactly_the_answer_ids():
    batch = reverse_task(8, seed=1)
    keep = candidate_ids(batch["tokens"], batch["answer_mask"], VOCAB.size)
    answer_ids = set(batch["tokens"][batch["answer_mask"]].tolist())
    assert set(keep.nonzero().flatten().tolist()) == answer_ids
    assert not keep[VOCAB.bos_id]  # prefix-only ids are not candidates


def test_batch_cross_entropy_is_the_softmax_over_the_candidates():
    torch.manual_seed(0)
    logits = torch.randn(5, 12)
    targets = torch.tensor([1, 3, 3, 7, 1])
    keep = torch.zeros(12, dtype=torch.bool)
    keep[[1, 3, 7, 9]] = True
    got = training_cross_entropy(logits, targets, "batch", keep)
    sub = logits[:, [1, 3, 7, 9]]
    want = -torch.log_softmax(sub, -1)[torch.arange(5), torch.tensor([0, 1, 1, 2, 0])]
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(training_cross_entropy(logits, targets, "full"),
                          torch.nn.functional.cross_entropy(logits, targets, reduction="none"))
    with pytest.raises(ValueError, match="hold every target"):
        training_cross_entropy(logits, torch.tensor([2, 3, 3, 7, 1]), "batch", keep)


@pytest.mark.parametrize("kw", [{}, {"complementary": True}])
def test_uniform_model_scores_log_of_the_candidate_count_and_logs_the_full_elbo(kw):
    batch = reverse_task(32, seed=3)
    n = int(candidate_ids(batch["tokens"], batch["answer_mask"], VOCAB.size).sum())
    assert n < VOCAB.size
    full = diffusion_loss(Uniform(), batch, DiffusionLossConfig.for_vocab(VOCAB, weighting="flat", **kw),
                          generator=torch.Generator().manual_seed(4))
    inbatch = diffusion_loss(Uniform(), batch, DiffusionLossConfig.for_vocab(VOCAB, weighting="flat", softmax="batch", **kw),
                             generator=torch.Generator().manual_seed(4))
    assert inbatch.metrics["elbo"] == pytest.approx(full.metrics["elbo"])
    assert inbatch.metrics["diffusion_loss"] == pytest.approx(math.log(n) * inbatch.metrics["mask_rate"])


def test_ids_outside_the_batch_get_no_gradient():
    model = debug_model(1)
    batch = reverse_task(16, seed=5)
    keep = candidate_ids(batch["tokens"], batch["answer_mask"], VOCAB.size)
    out = diffusion_loss(model, batch, DiffusionLossConfig.for_vocab(VOCAB, softmax="batch", moe_balance_coef=0.0,
                                                                     moe_z_coef=0.0),
                         generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    grad_rows = model.lm_head.weight.grad.abs().sum(1)
    assert float(grad_rows[~keep].max()) == 0.0 and float(grad_rows[keep].min()) > 0.0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown objective.softmax"):
        DiffusionLossConfig(softmax="sampled")
    with pytest.raises(ValueError, match="is for the diffusion loss"):
        DiffusionLossConfig(softmax="batch", kind="autoregressive", attention="causal", shift=True)
