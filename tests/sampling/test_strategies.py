"""Commit strategies and schedules as pure functions."""

import pytest
import torch

from omnidiff.sampling.schedules import commit_counts
from omnidiff.sampling.strategies import propose, score, select_threshold, select_top_k


def test_even_schedule_is_llada_split():
    assert commit_counts(10, 4, "even").tolist() == [3, 3, 2, 2]
    assert commit_counts(8, 8, "even").tolist() == [1] * 8


@pytest.mark.parametrize("kind", ["cosine", "shifted"])
def test_schedules_sum_to_the_masked_count_with_at_least_one_per_step(kind):
    for m, s in [(16, 4), (64, 64), (256, 32), (7, 3)]:
        c = commit_counts(m, s, kind)
        assert c.sum() == m and (c >= 1).all() and len(c) == s


def test_shifted_schedule_front_loads_and_cosine_back_loads():
    even, shifted, cosine = (commit_counts(64, 8, k) for k in ("even", "shifted", "cosine"))
    assert shifted[0] > even[0] > cosine[0]


def test_schedule_rejects_more_steps_than_tokens():
    with pytest.raises(ValueError, match="at most 4 steps"):
        commit_counts(4, 5)


def test_select_top_k_and_threshold():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.2, 0.3, 0.95, 0.1]], dtype=torch.float64)
    cand = torch.tensor([[True, False, True, True], [True, True, True, True]])
    top = select_top_k(scores, cand, torch.tensor([2, 1]))
    assert top.tolist() == [[False, False, True, True], [False, False, True, False]]
    thr = select_threshold(scores, cand, 0.96)  # nobody above: the best one per row anyway
    assert thr.sum(1).tolist() == [1, 1] and thr[0, 3] and thr[1, 2]
    assert select_threshold(scores, cand, 0.25)[1].tolist() == [False, True, True, False]


def test_scores_margin_and_entropy():
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]], dtype=torch.float64)
    ids = probs.argmax(-1)
    assert torch.allclose(score("margin", ids, probs), torch.tensor([[0.5, 0.05]], dtype=torch.float64))
    neg_h = score("entropy", ids, probs)
    assert neg_h[0, 0] > neg_h[0, 1]  # the peaked column is more certain
    assert torch.allclose(score("low_confidence", ids, probs), torch.tensor([[0.7, 0.4]], dtype=torch.float64))


def test_gumbel_max_samples_the_tempered_softmax():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).view(1, 1, 4).expand(1, 20000, 4)
    ids, _ = propose(logits, 1.0, [torch.Generator().manual_seed(0)])
    freq = torch.bincount(ids.flatten(), minlength=4).double() / ids.numel()
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64), atol=0.015)
    ids_cold, _ = propose(logits, 0.05, [torch.Generator().manual_seed(0)])
    assert (ids_cold == 0).double().mean() > 0.99


def test_sampling_needs_a_generator():
    with pytest.raises(ValueError, match="needs a generator"):
        propose(torch.zeros(1, 2, 3), 1.0, None)
