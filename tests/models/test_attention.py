"""The one mask builder against brute-force rules, and the properties exact caches rely on."""

import pytest
import torch

from omnidiff.models.layers import AttentionSpec, build_attention_mask
from omnidiff.models.presets import preset_config
from omnidiff.models.transformer import Transformer


def reference_allowed(mode, b, q, k, *, L, prefix=None, block=None, pad=None):
    """The attention rules of docs/design.md in plain Python, for one (sample, query, key) triple."""
    if q == k:
        return True
    if pad is not None and not pad[b][k]:
        return False
    if mode == "full":
        return True
    if mode == "causal":
        return k <= q
    if mode == "prefix":
        p = prefix[b]
        return k < p if q < p else True
    if mode == "block":
        n = L // 2
        q_x0, k_x0 = q >= n, k >= n
        qb, kb = (q % n) // block, (k % n) // block
        if not q_x0 and not k_x0:
            return qb == kb
        if not q_x0 and k_x0:
            return kb < qb
        if q_x0 and k_x0:
            return kb <= qb
        return False
    raise AssertionError(mode)


def make_padding(batch, length, gen):
    lefts = torch.randint(0, length // 3, (batch,), generator=gen)
    return torch.arange(length).unsqueeze(0) >= lefts.unsqueeze(1)


@pytest.mark.parametrize("mode", ["full", "causal", "prefix", "block"])
def test_mask_matches_brute_force(mode):
    gen = torch.Generator().manual_seed(0)
    B, L = 3, 12
    prefix = torch.tensor([3, 5, 0]) if mode == "prefix" else None
    block = 3 if mode == "block" else None
    pad_L = make_padding(B, L // 2 if mode == "block" else L, gen)
    spec = AttentionSpec(mode=mode, prefix_lengths=prefix, block_size=block, padding_mask=pad_L)
    got = build_attention_mask(spec, B, L, L)
    pad_full = torch.cat([pad_L, pad_L], 1) if mode == "block" else pad_L
    expected = torch.tensor(
        [[[reference_allowed(mode, b, q, k, L=L, prefix=prefix, block=block, pad=pad_full.tolist())
           for k in range(L)] for q in range(L)] for b in range(B)]
    )
    assert got.shape == (B, 1, L, L)
    assert torch.equal(got[:, 0], expected)


def test_explicit_allowed_mask_is_anded_and_keeps_diagonal():
    allowed = torch.zeros(1, 3, 3, dtype=torch.bool)
    allowed[0, 2, 0] = True
    got = build_attention_mask(AttentionSpec("full", allowed=allowed), 1, 3, 3)[0, 0]
    assert got.tolist() == [[True, False, False], [False, True, False], [True, False, True]]


def test_mask_queries_are_last_slots_with_cache():
    spec = AttentionSpec(mode="causal")
    got = build_attention_mask(spec, 1, 2, 5)[0, 0]
    assert got.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def debug_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return Transformer(preset_config("debug", 300, **overrides)).eval()


def test_prefix_mode_prefix_hidden_states_ignore_answer():
    model = debug_model()
    B, L, P = 2, 16, 6
    tokens = torch.randint(0, 300, (B, L))
    changed = tokens.clone()
    changed[:, P:] = torch.randint(0, 300, (B, L - P))
    spec = AttentionSpec("prefix", prefix_lengths=torch.full((B,), P))
    with torch.no_grad():
        _, h1 = model(tokens, attention=spec, return_hidden=True)
        _, h2 = model(changed, attention=spec, return_hidden=True)
    for a, b in zip(h1, h2, strict=True):
        assert torch.equal(a[:, :P], b[:, :P])
    assert not torch.allclose(h1[-1][:, P:], h2[-1][:, P:])
    # Under full attention the same change does leak into the prefix (the test can fail).
    with torch.no_grad():
        f1, f2 = model(tokens), model(changed)
    assert not torch.allclose(f1[:, :P], f2[:, :P])


def test_block_mode_x0_ignores_xt():
    model = debug_model()
    B, L, blk = 2, 8, 4
    x0 = torch.randint(0, 300, (B, L))
    xt1, xt2 = torch.randint(0, 300, (B, L)), torch.randint(0, 300, (B, L))
    spec = AttentionSpec("block", block_size=blk)
    with torch.no_grad():
        out1 = model(torch.cat([xt1, x0], 1), attention=spec)
        out2 = model(torch.cat([xt2, x0], 1), attention=spec)
        # x_t of block 1 depends on x_t of block 1 but not on x_t of block 0.
        xt3 = xt1.clone()
        xt3[:, :blk] = xt2[:, :blk]
        out3 = model(torch.cat([xt3, x0], 1), attention=spec)
    assert torch.equal(out1[:, L:], out2[:, L:])
    assert torch.allclose(out1[:, blk:L], out3[:, blk:L], atol=1e-6)
    assert not torch.allclose(out1[:, :blk], out3[:, :blk])


def test_left_padding_does_not_change_results():
    model = debug_model()
    seq = torch.randint(5, 300, (1, 10))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), seq], 1)
    pad = torch.tensor([[False] * 4 + [True] * 10])
    with torch.no_grad():
        plain = model(seq)
        with_pad = model(padded, attention=AttentionSpec("full", padding_mask=pad))
    assert torch.allclose(plain, with_pad[:, 4:], atol=1e-5)


def test_prefix_kv_cache_is_exact():
    model = debug_model()
    B, P, A = 2, 7, 5
    tokens = torch.randint(0, 300, (B, P + A))
    spec = AttentionSpec("prefix", prefix_lengths=torch.full((B,), P))
    with torch.no_grad():
        full = model(tokens, attention=spec)
        cache = model.new_cache()
        model(tokens[:, :P], attention=AttentionSpec("prefix", prefix_lengths=torch.full((B,), P)), kv_cache=cache)
        cache.frozen = True
        answer = model(tokens[:, P:], attention=spec, kv_cache=cache)
    assert cache.length == P
    assert torch.allclose(full[:, P:], answer, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="sideways"), "allowed"),
        (dict(mode="prefix"), "prefix_lengths"),
        (dict(mode="block", block_size=0), "block_size"),
    ],
)
def test_bad_attention_specs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionSpec(**kwargs)


def test_bad_inputs_raise_clear_errors():
    model = debug_model()
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 300\)"):
        model(torch.tensor([[1, 2, 300]]))
    with pytest.raises(ValueError, match="prefix length must be within"):
        model(torch.zeros(1, 4, dtype=torch.long), attention=AttentionSpec("prefix", prefix_lengths=torch.tensor([9])))
    with pytest.raises(ValueError, match="block size 3 must divide the sequence length 4"):
        model(torch.zeros(1, 8, dtype=torch.long), attention=AttentionSpec("block", block_size=3))
