"""Forward masking: only answer positions, complementary copies, block draws, annealing masks."""

from __future__ import annotations

import pytest
import torch

from omnidiff.diffusion.masking import (
    annealed_attention_mask,
    block_input,
    complementary_copies,
    mask_tokens,
    per_block_values,
    reveal_probability,
)
from omnidiff.models.layers import AttentionSpec, build_attention_mask

MASK = 1


def _batch():
    # Left pads (id 0), a prefix, then an answer; row 1 has a shorter prefix.
    tokens = torch.randint(5, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    pad = torch.ones(2, 12, dtype=torch.bool)
    pad[1, :3] = False
    tokens[~pad] = 0
    ans = torch.zeros(2, 12, dtype=torch.bool)
    ans[:, 6:] = True
    return tokens, pad, ans


def test_only_answer_positions_are_masked():
    tokens, pad, ans = _batch()
    g = torch.Generator().manual_seed(1)
    x_t, masked = mask_tokens(tokens, ans, torch.ones(2), MASK, generator=g)  # rate 1: every answer token
    assert masked.equal(ans)
    assert (x_t[ans] == MASK).all() and x_t[~ans].equal(tokens[~ans])
    x_t, masked = mask_tokens(tokens, ans, torch.full((2,), 0.5), MASK, generator=g)
    assert not (masked & ~ans).any() and x_t[~pad].eq(0).all()


def test_mask_rate_matches_probability():
    tokens = torch.full((64, 200), 7)
    ans = torch.ones(64, 200, dtype=torch.bool)
    _, masked = mask_tokens(tokens, ans, torch.full((64,), 0.3), MASK, generator=torch.Generator().manual_seed(2))
    assert masked.float().mean().item() == pytest.approx(0.3, abs=0.01)


def test_complementary_copies_partition_the_answer():
    tokens, pad, ans = _batch()
    rate = torch.tensor([0.2, 0.7])
    x_t, masked, rates = complementary_copies(tokens, ans, rate, MASK, generator=torch.Generator().manual_seed(3))
    a, b = masked[:2], masked[2:]
    assert ((a.int() + b.int()) == ans.int()).all()  # each answer position masked in exactly one copy
    assert not (masked & ~torch.cat([ans, ans])).any()
    assert torch.equal(x_t[:2][~ans], tokens[~ans]) and torch.equal(x_t[2:][~ans], tokens[~ans])
    torch.testing.assert_close(rates, torch.tensor([0.2, 0.7, 0.8, 0.3]))


def test_per_block_values_and_block_input():
    vals = torch.tensor([[1, 5, 9]])
    out = per_block_values(vals, 12, 4)
    assert out.tolist() == [[1] * 4 + [5] * 4 + [9] * 4]
    with pytest.raises(ValueError, match="divide"):
        per_block_values(vals, 10, 4)
    x = torch.arange(6).view(1, 6)
    assert block_input(x + 10, x).tolist() == [[10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5]]


def test_annealed_mask_between_causal_and_full():
    pad = torch.ones(3, 40, dtype=torch.bool)
    pad[0, :5] = False
    causal = torch.ones(40, 40).tril().bool()
    assert reveal_probability(0, 100) == 0.0 and reveal_probability(50, 100) == 0.5 and reveal_probability(500, 100) == 1.0
    m0 = annealed_attention_mask(pad, 0.0)
    assert (m0[1] == causal).all()
    pattern = annealed_attention_mask(pad, 0.4, generator=torch.Generator().manual_seed(4))
    m = build_attention_mask(AttentionSpec("full", padding_mask=pad, allowed=pattern), 3, 40, 40)
    upper = ~causal
    frac = m[1:, 0][:, upper].float().mean().item()
    assert frac == pytest.approx(0.4, abs=0.03)
    assert m[1:, 0][:, causal].all()  # causal pairs always visible
    assert not m[0, 0, 10:, :5].any()  # padded keys stay hidden
    with pytest.raises(ValueError):
        reveal_probability(3, 0)
