"""optim.name: Muon orthogonalises the matrices' steps, AdamW steps the rest; runs resume exactly; bad names fail."""

import pytest
import torch
from torch import nn

from omnidiff.config import DistributedConfig, OptimConfig, load_config
from omnidiff.training import distributed
from omnidiff.training.trainer import train
from tests.fixtures import build_text_dataset, build_text_tokenizer


class Tiny(nn.Module):
    """An embedding, one dense matrix, a stacked [experts, in, out] weight and an output head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(40, 16)
        self.proj = nn.Linear(16, 24)
        self.w_experts = nn.Parameter(torch.randn(3, 24, 16) * 0.2)
        self.norm = nn.RMSNorm(16)  # not LayerNorm: centring would leave every gradient rank-deficient
        self.lm_head = nn.Linear(16, 40)

    def forward(self, ids):
        h = torch.tanh(self.proj(self.norm(self.embed(ids))))  # [B, T, 24]
        return self.lm_head(sum(h @ w for w in self.w_experts))  # every expert on every token


def one_step(optim: OptimConfig) -> tuple[dict, dict, nn.Module]:
    """Weights before and after one engine step on a fixed batch, and the engine's module."""
    distributed.init_distributed(DistributedConfig(), "cpu")
    torch.manual_seed(0)
    engine = distributed.build_engine(Tiny, DistributedConfig(), optim, micro_batch=4, total_steps=10, device="cpu")
    before = {k: v.detach().clone() for k, v in engine.module.named_parameters()}
    ids = torch.randint(0, 40, (4, 12), generator=torch.Generator().manual_seed(1))
    loss = nn.functional.cross_entropy(engine(ids).flatten(0, 1), ids.roll(1, dims=1).flatten())
    engine.backward(loss)
    engine.step()
    after = {k: v.detach().clone() for k, v in engine.module.named_parameters()}
    return before, after, engine


def singular_spread(matrix: torch.Tensor) -> float:
    s = torch.linalg.svdvals(matrix.double())
    return float(s.max() / s.min())


def test_muon_orthogonalises_each_matrix_and_adamw_steps_the_embeddings_and_head():
    optim = OptimConfig(name="muon", lr=1e-2, muon_lr=0.05, weight_decay=0.0, warmup_steps=0, grad_clip=0.0)
    before, after, engine = one_step(optim)
    groups = engine.optimizer.param_groups
    muon_ids = {id(p) for g in groups if g["use_muon"] for p in g["params"]}
    names = {name for name, p in engine.module.named_parameters() if id(p) in muon_ids}
    assert names == {"proj.weight", "w_experts"}
    # Muon: the step of a matrix (and of each expert in a stack) has all its singular values alike,
    # unlike the raw gradient's; Newton-Schulz leaves them within about [0.5, 1.5] of the scale.
    step = before["proj.weight"] - after["proj.weight"]
    assert singular_spread(step) < 4.0
    for e in range(3):
        assert singular_spread(before["w_experts"][e] - after["w_experts"][e]) < 4.0
    # AdamW: a first step moves every element with a gradient by about lr, whatever its size.
    head_step = (before["lm_head.weight"] - after["lm_head.weight"]).abs()
    assert head_step.max() == pytest.approx(1e-2, rel=0.05)
    assert not torch.equal(before["embed.weight"], after["embed.weight"])


def test_adamw_matrix_steps_are_not_orthogonal():
    """The control for the test above: AdamW's first step is sign-like, so its singular values spread."""
    before, after, _ = one_step(OptimConfig(name="adamw", lr=1e-2, weight_decay=0.0, warmup_steps=0, grad_clip=0.0))
    assert singular_spread(before["proj.weight"] - after["proj.weight"]) > 4.0


def test_a_muon_run_resumes_with_the_identical_loss_sequence(tmp_path):
    data, tok = build_text_dataset(tmp_path), build_text_tokenizer(tmp_path)

    def config(out, *extra):
        return load_config(None, [
            "model.preset=debug", f"tokenizers.text={tok}", f"train.out={out}", "train.tensorboard=false",
            "data.batch_size=4", f"data.tasks=[{{task: text, path: {data}, answer_len: 16}}]", "optim.name=muon",
            "optim.lr=3e-3", "optim.warmup_steps=2", "train.eval_every=0", "train.log_every=1", "train.export=false",
            "train.steps=8", *extra])

    straight = train(config(tmp_path / "a"))
    train(config(tmp_path / "b", "train.stop_at=4"))
    resumed = train(config(tmp_path / "b"), resume=True)
    assert resumed["loss_history"] == straight["loss_history"]
    assert sum(straight["loss_history"][-3:]) < sum(straight["loss_history"][:3])


@pytest.mark.parametrize("override, message", [
    ("optim.name=sgd", "optim.name must be 'adamw' or 'muon'"),
    ("optim.muon_lr=0", "optim.muon_lr must be > 0"),
    ("optim.muon_momentum=1.5", r"optim.muon_momentum must be in \[0, 1\]"),
])
def test_bad_optimizer_settings_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])
