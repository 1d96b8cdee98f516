"""LLaDA-style Monte-Carlo log-likelihood bound."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from omnidiff.diffusion.likelihood import LikelihoodConfig, answer_log_likelihood, stratified_counts
from omnidiff.models.presets import preset_config
from omnidiff.models.transformer import Transformer
from omnidiff.tokenization.vocab import Vocab

VOCAB = Vocab()
VOCAB.add_range("text", 32)
CFG = LikelihoodConfig(num_samples=8, batch_size=5, mask_id=VOCAB.mask_id, pad_id=VOCAB.pad_id)


def _pairs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    text = VOCAB.range("text")
    prompts = [torch.randint(text.offset, text.end, (n,), generator=g) for n in (3, 6, 1)]
    answers = [torch.randint(text.offset, text.end, (n,), generator=g) for n in (5, 4, 2)]  # distinct totals 8, 10, 3
    return prompts, answers


class Uniform(nn.Module):
    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, tokens, *, attention="full", return_aux=False, logits_mask=None):
        logits = torch.zeros(*tokens.shape, VOCAB.size) + self.dummy
        return (logits if logits_mask is None else logits[logits_mask]), None


class Copier(nn.Module):
    """Knows the clean sequence: the logits put all mass on the true token at every column."""

    def __init__(self, prompts, answers):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.clean = {len(p) + len(a): torch.cat([p, a]) for p, a in zip(prompts, answers, strict=True)}

    def forward(self, tokens, *, attention="full", return_aux=False, logits_mask=None):
        L = tokens.shape[1]
        rows = []
        for row, pad in zip(tokens, attention.padding_mask, strict=True):
            seq = row.clone()
            seq[pad] = self.clean[int(pad.sum())]
            rows.append(seq)
        logits = 50.0 * nn.functional.one_hot(torch.stack(rows), VOCAB.size).float().view(-1, L, VOCAB.size)
        return (logits if logits_mask is None else logits[logits_mask]), None


def test_stratified_counts_cover_the_range():
    assert sorted(stratified_counts(7, 7).tolist()) == list(range(1, 8))
    k = stratified_counts(5, 40, torch.Generator().manual_seed(0))
    assert k.min() == 1 and k.max() == 5 and torch.bincount(k)[1:].tolist() == [8] * 5


def test_uniform_model_bound_is_exact():
    prompts, answers = _pairs()
    out = answer_log_likelihood(Uniform(), prompts, answers, CFG, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([5.0, 4.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(out.log_likelihood, -lengths * math.log(VOCAB.size))
    torch.testing.assert_close(out.nats_per_token, torch.full((3,), math.log(VOCAB.size), dtype=torch.float64))
    assert out.std_error.abs().max() < 1e-9


def test_perfect_model_has_zero_nll():
    prompts, answers = _pairs()
    out = answer_log_likelihood(Copier(prompts, answers), prompts, answers, CFG)
    assert out.log_likelihood.abs().max() < 1e-6


def test_batching_and_padding_do_not_change_results():
    torch.manual_seed(0)
    model = Transformer(preset_config("debug", VOCAB.size)).eval()
    prompts, answers = _pairs(1)
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    together = answer_log_likelihood(model, prompts, answers, CFG, generator=g())
    one_batch = answer_log_likelihood(model, prompts, answers, LikelihoodConfig(num_samples=8, batch_size=64), generator=g())
    alone = answer_log_likelihood(model, prompts[:1], answers[:1], CFG, generator=g())
    torch.testing.assert_close(together.log_likelihood, one_batch.log_likelihood, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(together.log_likelihood[:1], alone.log_likelihood, atol=1e-4, rtol=1e-5)
    assert (together.log_likelihood < 0).all() and (together.std_error > 0).all()


def test_bad_input():
    prompts, answers = _pairs()
    with pytest.raises(ValueError, match="answers"):
        answer_log_likelihood(Uniform(), prompts, answers[:2], CFG)
    with pytest.raises(ValueError, match="at least one token"):
        answer_log_likelihood(Uniform(), prompts[:1], [torch.tensor([], dtype=torch.long)], CFG)
    with pytest.raises(ValueError, match="attention"):
        LikelihoodConfig(attention="block")
