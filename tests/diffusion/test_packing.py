"""Complementary copies packed against one prefix encoding give exactly the unpacked loss and gradients."""

import pytest
import torch

from omnidiff.diffusion.objectives import DiffusionLossConfig, diffusion_loss
from omnidiff.diffusion.packing import pack_copies
from omnidiff.models.presets import preset_config
from omnidiff.models.transformer import Transformer

V = 200


def ragged_batch():
    """Left-padded prefixes of 3, 5 and 7 tokens; right-aligned answers of 4, 4 and 2 tokens."""
    g = torch.Generator().manual_seed(3)
    L = 11
    tokens = torch.randint(5, V, (3, L), generator=g)
    pad = torch.zeros(3, L, dtype=torch.bool)
    ans = torch.zeros(3, L, dtype=torch.bool)
    for row, (p, a) in enumerate(((3, 4), (5, 4), (7, 2))):
        pad[row, L - p - a:] = True
        ans[row, L - a:] = True
    tokens[~pad] = 0
    return {"tokens": tokens, "padding_mask": pad, "answer_mask": ans, "tasks": ["a", "b", "a"]}


def loss_and_grads(share: bool, normalization: str):
    torch.manual_seed(0)
    model = Transformer(preset_config("debug", V))
    # the MoE balance and z terms average over the tokens a forward sees, and packing shows each
    # prefix token once instead of twice; leave them out to compare the diffusion term exactly
    cfg = DiffusionLossConfig(complementary=True, share_prefix=share, normalization=normalization,
                              moe_balance_coef=0.0, moe_z_coef=0.0)
    out = diffusion_loss(model, ragged_batch(), cfg, generator=torch.Generator().manual_seed(7))
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("normalization", ["token", "answer_length"])
def test_packed_copies_give_the_same_loss_metrics_and_gradients(normalization):
    plain, plain_grads = loss_and_grads(False, normalization)
    packed, packed_grads = loss_and_grads(True, normalization)
    for key in ("diffusion_loss", "elbo", "mask_rate", "num_masked", "ce_masked", "elbo/a", "elbo/b"):
        assert packed.metrics[key] == pytest.approx(plain.metrics[key], rel=1e-5, abs=1e-6), key
    assert set(packed_grads) == set(plain_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_packed_attention_keeps_copies_apart_and_the_prefix_blind():
    batch = ragged_batch()
    pad, ans = batch["padding_mask"], batch["answer_mask"]
    copies = [batch["tokens"].clone(), batch["tokens"].clone()]
    packed = pack_copies(pad, ans, copies, [ans, ans])
    L, A = pad.shape[1], packed.width
    assert packed.tokens.shape == (3, L + A) and A == 4
    allowed = packed.allowed[0]  # row 0: prefix columns 4..6, copy 0 answer 7..10, copy 1 answer 11..14
    assert not allowed[4:7, 7:].any()  # the prefix sees no answer
    assert allowed[7:11, 4:11].all() and not allowed[7:11, 11:].any()  # copy 0: prefix + itself
    assert allowed[11:, 4:7].all() and allowed[11:, 11:].all() and not allowed[11:, 7:11].any()
    assert packed.positions[0, 11:].tolist() == packed.positions[0, 7:11].tolist()
    # row 2 has a 2-token answer: its first two slots of copy 1 are unused padding
    assert packed.padding_mask[2, L:].tolist() == [False, False, True, True]


def test_share_prefix_needs_complementary_prefix_attention():
    with pytest.raises(ValueError, match="share_prefix"):
        DiffusionLossConfig(share_prefix=True)
    with pytest.raises(ValueError, match="share_prefix"):
        DiffusionLossConfig(share_prefix=True, complementary=True, attention="full")
