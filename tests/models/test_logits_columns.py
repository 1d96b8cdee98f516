"""``logits_columns``: logits for a slice of columns equal the full forward's, and the cache is unchanged."""

import pytest
import torch

from omnidiff.models.layers import AttentionSpec
from omnidiff.models.presets import preset_config
from omnidiff.models.transformer import Transformer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(preset_config("debug", vocab_size=300)).eval()


@pytest.mark.parametrize("mode", ["full", "prefix", "causal"])
def test_sliced_logits_equal_full_forward(model, mode):
    tokens = torch.randint(0, 300, (3, 20))
    pad = torch.ones(3, 20, dtype=torch.bool)
    pad[1, :4] = False
    spec = AttentionSpec(mode, padding_mask=pad, prefix_lengths=torch.tensor([6, 8, 5]) if mode == "prefix" else None)
    full = model(tokens, attention=spec)
    for cols in (slice(8, 16), slice(0, 1), slice(19, 20)):
        part = model(tokens, attention=spec, logits_columns=cols)
        assert part.shape == (3, cols.stop - cols.start, 300)
        torch.testing.assert_close(part, full[:, cols], rtol=1e-5, atol=1e-5)


def test_sliced_logits_with_cache_extend_it_like_a_full_forward(model):
    prefix, answer = torch.randint(0, 300, (2, 7)), torch.randint(0, 300, (2, 12))
    caches = []
    for cols in (None, slice(4, 8)):
        cache = model.new_cache()
        model(prefix, kv_cache=cache)
        out = model(answer, kv_cache=cache, logits_columns=cols)
        caches.append((cache, out))
    (full_cache, full), (part_cache, part) = caches
    torch.testing.assert_close(part, full[:, 4:8], rtol=1e-5, atol=1e-5)
    for k_full, k_part in zip(full_cache.keys, part_cache.keys, strict=True):
        torch.testing.assert_close(k_part, k_full)
    assert torch.equal(full_cache.key_padding, part_cache.key_padding)


@pytest.mark.parametrize("mode", ["full", "prefix", "block"])
def test_logits_mask_gives_the_full_forwards_logits_at_the_marked_positions(model, mode):
    L = 16
    tokens = torch.randint(0, 300, (3, 2 * L if mode == "block" else L))
    pad = torch.ones(3, L, dtype=torch.bool)
    pad[2, :3] = False
    spec = AttentionSpec(mode, padding_mask=pad, block_size=4 if mode == "block" else None,
                         prefix_lengths=torch.tensor([6, 8, 5]) if mode == "prefix" else None)
    select = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    full, aux_full = model(tokens, attention=spec, return_aux=True)
    part, aux_part = model(tokens, attention=spec, return_aux=True, logits_mask=select)
    assert part.shape == (int(select.sum()), 300)
    torch.testing.assert_close(part, full[select], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aux_part.balance_loss, aux_full.balance_loss)  # the trunk is untouched


def test_logits_mask_of_the_wrong_shape_is_refused(model):
    with pytest.raises(ValueError, match="logits_mask must be bool"):
        model(torch.randint(0, 300, (2, 10)), logits_mask=torch.ones(2, 9, dtype=torch.bool))
