"""MoE feed-forward: dense equivalence, permutation equivariance, gradients, auxiliary losses."""

import torch

from omnidiff.models.layers import SwiGLU
from omnidiff.models.moe import MoEConfig, MoEFeedForward


def test_one_expert_top1_equals_dense_ffn():
    torch.manual_seed(0)
    moe = MoEFeedForward(16, MoEConfig(num_experts=1, top_k=1, expert_hidden=24))
    dense = SwiGLU(16, 24)
    with torch.no_grad():
        dense.gate.weight.copy_(moe.w_gate[0].T)
        dense.up.weight.copy_(moe.w_up[0].T)
        dense.down.weight.copy_(moe.w_down[0].T)
    x = torch.randn(3, 5, 16)
    out, aux = moe(x)
    assert torch.allclose(out, dense(x), atol=1e-6)
    assert aux.expert_load.tolist() == [[1.0]]


def test_routing_is_equivariant_to_token_permutation():
    torch.manual_seed(0)
    moe = MoEFeedForward(16, MoEConfig(num_experts=4, top_k=2, expert_hidden=8, shared_expert_hidden=8))
    x = torch.randn(20, 16)
    perm = torch.randperm(20)
    out, _ = moe(x)
    out_perm, _ = moe(x[perm])
    assert torch.allclose(out[perm], out_perm, atol=1e-6)


def test_gradients_reach_every_selected_expert():
    torch.manual_seed(0)
    moe = MoEFeedForward(16, MoEConfig(num_experts=4, top_k=2, expert_hidden=8))
    x = torch.randn(64, 16)
    _, top_idx, _ = moe.route(x)
    out, aux = moe(x)
    (out.square().sum() + aux.balance_loss + aux.z_loss).backward()
    selected = set(top_idx.flatten().tolist())
    for e in range(4):
        has_grad = moe.w_gate.grad[e].abs().sum() > 0 and moe.w_down.grad[e].abs().sum() > 0
        assert bool(has_grad) == (e in selected)
    assert moe.router.weight.grad.abs().sum() > 0


def test_aux_losses_finite_and_uniform_routing_is_minimum():
    moe = MoEFeedForward(8, MoEConfig(num_experts=4, top_k=1, expert_hidden=4))
    uniform_logits = torch.zeros(8, 4)
    balanced_choice = torch.arange(8).remainder(4).unsqueeze(1)
    aux = moe._aux(uniform_logits, balanced_choice)
    assert torch.isclose(aux.balance_loss, torch.tensor(1.0))
    assert torch.isclose(aux.z_loss, torch.log(torch.tensor(4.0)) ** 2)
    skewed_logits = torch.tensor([[4.0, 0, 0, 0]]).repeat(8, 1)
    skewed = moe._aux(skewed_logits, torch.zeros(8, 1, dtype=torch.long))
    assert skewed.balance_loss > 3.0
    assert torch.isfinite(skewed.z_loss)


def test_sigmoid_router_and_expert_bias_balances_load():
    torch.manual_seed(0)
    moe = MoEFeedForward(8, MoEConfig(num_experts=4, top_k=1, expert_hidden=4, score_func="sigmoid", expert_bias=True))
    with torch.no_grad():
        moe.router.weight.normal_(std=0.3)
        moe.router.weight[0] += 1.0  # expert 0 wins for inputs with positive features
    x = torch.randn(256, 8).abs()
    _, aux = moe(x)
    assert aux.expert_load[0, 0] > 0.9
    for _ in range(200):
        _, aux = moe(x)
        moe.update_expert_bias(aux.expert_load[0], rate=0.05)
    assert aux.expert_load[0].max() < 0.6


def test_grouped_matmul_path_equals_expert_loop():
    torch.manual_seed(0)
    moe = MoEFeedForward(16, MoEConfig(num_experts=4, top_k=2, expert_hidden=8))
    x = torch.randn(40, 16)
    _, top_idx, _ = moe.route(x)
    order = top_idx.reshape(-1).argsort(stable=True)
    x_sorted = x.index_select(0, order // 2)
    counts = torch.bincount(top_idx.reshape(-1), minlength=4).tolist()
    looped = moe._expert_loop(x_sorted, counts)
    offsets = torch.tensor(counts).cumsum(0).to(torch.int32)
    h = torch.nn.functional.silu(torch._grouped_mm(x_sorted, moe.w_gate, offs=offsets))
    grouped = torch._grouped_mm(h * torch._grouped_mm(x_sorted, moe.w_up, offs=offsets), moe.w_down, offs=offsets)
    assert torch.allclose(looped, grouped, atol=1e-5)
