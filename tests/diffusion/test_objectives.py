"""The diffusion loss: weighting, normalisation, complementary copies, blocks, shift, annealing, MoE aux."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from omnidiff.diffusion.objectives import DiffusionLossConfig, diffusion_loss
from omnidiff.models.presets import preset_config
from omnidiff.models.transformer import Transformer
from omnidiff.tokenization.vocab import Vocab

VOCAB = Vocab()
VOCAB.add_range("text", 32)
TEXT = VOCAB.range("text")


def reverse_task(num: int, seed: int = 0, answer_len: int = 8, max_prefix: int = 7) -> dict:
    """Prefix <bos> + n text tokens; answer = the tokens reversed, padded with <eos>; left pads."""
    g = torch.Generator().manual_seed(seed)
    L = max_prefix + answer_len
    tokens = torch.full((num, L), VOCAB.pad_id)
    pad = torch.zeros(num, L, dtype=torch.bool)
    ans = torch.zeros(num, L, dtype=torch.bool)
    for b in range(num):
        n = int(torch.randint(3, max_prefix, (1,), generator=g))
        words = torch.randint(TEXT.offset, TEXT.end, (n,), generator=g)
        answer = torch.cat([words.flip(0), torch.full((answer_len - n,), VOCAB.eos_id)])
        tokens[b, L - answer_len - n - 1:] = torch.cat([torch.tensor([VOCAB.bos_id]), words, answer])
        pad[b, L - answer_len - n - 1:] = True
        ans[b, L - answer_len:] = True
    tasks = ["reverse" if b % 2 else "copy" for b in range(num)]
    return {"tokens": tokens, "padding_mask": pad, "answer_mask": ans, "tasks": tasks}


class Oracle(nn.Module):
    """Logits peaked on known targets: ``targets`` for the first L columns, ``second`` for the rest."""

    def __init__(self, targets: torch.Tensor, second: torch.Tensor | None = None, scale: float = 40.0):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.targets, self.second, self.scale = targets, second, scale

    def forward(self, tokens, *, attention="full", return_aux=False, logits_mask=None):
        cols = self.targets if tokens.shape[1] == self.targets.shape[1] else torch.cat([self.targets, self.second], 1)
        cols = cols.repeat(tokens.shape[0] // cols.shape[0], 1)
        logits = self.scale * nn.functional.one_hot(cols, VOCAB.size).float() + self.dummy
        if logits_mask is not None:
            logits = logits[logits_mask]
        return (logits, None) if return_aux else logits


class Uniform(nn.Module):
    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, tokens, *, attention="full", return_aux=False, logits_mask=None):
        logits = torch.zeros(*tokens.shape, VOCAB.size) + self.dummy
        if logits_mask is not None:
            logits = logits[logits_mask]
        return (logits, None) if return_aux else logits


def debug_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(preset_config("debug", VOCAB.size))


def test_metrics_and_moe_aux():
    batch, model = reverse_task(6), debug_model()
    cfg = DiffusionLossConfig.for_vocab(VOCAB, moe_balance_coef=0.5, moe_z_coef=0.25)
    out = diffusion_loss(model, batch, cfg, generator=torch.Generator().manual_seed(0))
    m = out.metrics
    for key in ("loss", "diffusion_loss", "elbo", "moe_balance", "moe_z", "mask_rate", "num_masked", "elbo/copy", "elbo/reverse"):
        assert math.isfinite(m[key]), key
    assert m["loss"] == pytest.approx(m["diffusion_loss"] + 0.5 * m["moe_balance"] + 0.25 * m["moe_z"], rel=1e-5)
    assert m["moe_balance"] > 0 and m["moe_z"] > 0
    assert out.expert_load.shape == (1, 4)  # debug: one MoE layer of 4 experts
    out.loss.backward()
    assert model.layers[1].ffn.router.weight.grad.abs().sum() > 0


def test_loss_decreases_with_adamw():
    batch, model = reverse_task(16), debug_model()
    cfg = DiffusionLossConfig.for_vocab(VOCAB)

    def held_out():
        with torch.no_grad():
            return diffusion_loss(model, batch, cfg, generator=torch.Generator().manual_seed(123)).metrics["elbo"]

    before = held_out()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for step in range(30):
        out = diffusion_loss(model, batch, cfg, generator=g, step=step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert held_out() < 0.8 * before


@pytest.mark.parametrize("kw", [
    {}, {"complementary": True}, {"attention": "block", "block_size": 5}, {"schedule": "cosine"},
    {"normalization": "answer_length", "mask_rate_clip": (0.2, 0.9)},
])
def test_perfect_model_has_zero_elbo(kw):
    batch = reverse_task(8)
    out = diffusion_loss(Oracle(batch["tokens"], second=batch["tokens"]), batch, DiffusionLossConfig.for_vocab(VOCAB, **kw),
                         generator=torch.Generator().manual_seed(0))
    assert out.metrics["elbo"] < 1e-6 and out.metrics["num_masked"] > 0 and out.metrics["acc_masked"] == 1.0


@pytest.mark.parametrize("kw", [
    {}, {"schedule": "cosine"}, {"schedule": "loglinear", "time_sampling": "uniform"}, {"complementary": True},
    {"attention": "block", "block_size": 5},
])
def test_uniform_model_elbo_is_log_vocab(kw):
    # E_t[w(t) (1 - alpha_t)] = alpha(eps) - alpha(1) ~ 1, so a uniform predictor scores log V per token.
    # Unbiased but heavy-tailed (w ~ 1/t): average 4 draws over 1024 samples (~1% standard error).
    batch, cfg = reverse_task(1024, seed=5), DiffusionLossConfig.for_vocab(VOCAB, **kw)
    g = torch.Generator().manual_seed(0)
    elbo = sum(diffusion_loss(Uniform(), batch, cfg, generator=g).metrics["elbo"] for _ in range(4)) / 4
    assert elbo == pytest.approx(math.log(VOCAB.size), rel=0.05)


def test_complementary_masks_every_answer_token_once():
    batch = reverse_task(8)
    cfg = DiffusionLossConfig.for_vocab(VOCAB, complementary=True)
    out = diffusion_loss(Uniform(), batch, cfg, generator=torch.Generator().manual_seed(2))
    assert out.metrics["num_masked"] == batch["answer_mask"].sum()
    assert out.metrics["mask_rate"] == pytest.approx(0.5)


def test_block_mode_scores_only_x_t():
    batch = reverse_task(8)
    wrong = (batch["tokens"] + 1) % VOCAB.size
    cfg = DiffusionLossConfig.for_vocab(VOCAB, attention="block", block_size=5)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    good_x_t = diffusion_loss(Oracle(batch["tokens"], second=wrong), batch, cfg, generator=g()).metrics["elbo"]
    bad_x_t = diffusion_loss(Oracle(wrong, second=batch["tokens"]), batch, cfg, generator=g()).metrics["elbo"]
    assert good_x_t < 1e-6 and bad_x_t > 10


def test_block_mode_runs_on_debug_model():
    batch, model = reverse_task(4), debug_model()
    cfg = DiffusionLossConfig.for_vocab(VOCAB, attention="block", block_size=3, complementary=True, mask_rate_clip=(0.3, 0.8))
    out = diffusion_loss(model, batch, cfg, generator=torch.Generator().manual_seed(0))
    assert math.isfinite(out.metrics["loss"])
    out.loss.backward()


def test_shift_reads_previous_column():
    batch = reverse_task(8)
    next_tokens = torch.cat([batch["tokens"][:, 1:], batch["tokens"][:, :1]], 1)  # logits at i = token i + 1
    ar_oracle = Oracle(next_tokens)
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    shifted = diffusion_loss(ar_oracle, batch, DiffusionLossConfig.for_vocab(VOCAB, shift=True), generator=g())
    plain = diffusion_loss(ar_oracle, batch, DiffusionLossConfig.for_vocab(VOCAB), generator=g())
    assert shifted.metrics["elbo"] < 1e-6 and plain.metrics["elbo"] > 10
    no_prefix = dict(batch, answer_mask=batch["padding_mask"].clone())
    with pytest.raises(ValueError, match="prefix"):
        diffusion_loss(ar_oracle, no_prefix, DiffusionLossConfig.for_vocab(VOCAB, shift=True))


def test_annealing_goes_from_causal_to_full():
    batch, model = reverse_task(4), debug_model()
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731

    def elbo(step, **kw):
        with torch.no_grad():
            return diffusion_loss(model, batch, DiffusionLossConfig.for_vocab(VOCAB, **kw), generator=g(), step=step).metrics["elbo"]

    annealed = dict(attention="causal", anneal_steps=10, shift=True)
    assert elbo(0, **annealed) == pytest.approx(elbo(0, attention="causal", shift=True), rel=1e-6)
    assert elbo(10, **annealed) == pytest.approx(elbo(0, attention="full", shift=True), rel=1e-6)
    middle = elbo(5, **annealed)
    assert math.isfinite(middle) and middle != elbo(0, attention="causal", shift=True)


class SpecRecorder(nn.Module):
    """Uniform logits; keeps the attention spec of its last forward."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.vocab_size, self.spec = vocab_size, None

    def forward(self, tokens, *, attention="full", return_aux=False, logits_mask=None):
        self.spec = attention
        logits = self.dummy + torch.zeros(*tokens.shape, self.vocab_size)
        return (logits if logits_mask is None else logits[logits_mask]), None


def test_annealing_towards_prefix_keeps_the_prefix_blind_to_the_answer():
    from omnidiff.models.layers import build_attention_mask

    batch = reverse_task(4)
    pad, ans = batch["padding_mask"], batch["answer_mask"]
    B, L = pad.shape
    cfg = DiffusionLossConfig.for_vocab(VOCAB, attention="prefix", anneal_steps=10, shift=True)
    assert cfg.target_attention == "prefix"
    assert DiffusionLossConfig(attention="causal", anneal_steps=3).target_attention == "full"
    recorder = SpecRecorder(VOCAB.size)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    real = pad[:, :, None] & pad[:, None, :]
    target = build_attention_mask(diffusion_loss_spec(recorder, batch, cfg, 10), B, L, L, key_padding_BK=pad)[:, 0]
    for step, expected in ((0, "causal"), (5, "between"), (10, "prefix")):
        mask = build_attention_mask(diffusion_loss_spec(recorder, batch, cfg, step), B, L, L, key_padding_BK=pad)[:, 0]
        assert not (mask & ~target).any()  # never more than the prefix pattern: the prefix never sees the answer
        assert (mask | ~(causal & real)).all()  # always at least causal
        hidden = (target & ~causal & real).sum()
        revealed = (mask & ~causal & real).sum()
        assert {"causal": revealed == 0, "between": 0 < revealed < hidden, "prefix": revealed == hidden}[expected]
    start = ans.int().argmax(1)
    for b in range(B):  # the target is the prefix pattern: prefix queries see the prefix only
        assert not target[b, :start[b], start[b]:].any() and target[b, start[b]:][:, pad[b]].all()


def diffusion_loss_spec(recorder: SpecRecorder, batch: dict, cfg: DiffusionLossConfig, step: int):
    diffusion_loss(recorder, batch, cfg, generator=torch.Generator().manual_seed(1), step=step)
    return recorder.spec


@pytest.mark.parametrize("kw", [{}, {"complementary": True}])
def test_flat_weighting_scores_each_masked_token_once_and_logs_the_same_elbo(kw):
    # A uniform predictor has CE = log V on every masked token: the flat loss is log V times the
    # masked fraction of the answer, whatever t was drawn; the logged ELBO is the weighted one.
    batch = reverse_task(64, seed=3)
    weighted = diffusion_loss(Uniform(), batch, DiffusionLossConfig.for_vocab(VOCAB, **kw),
                              generator=torch.Generator().manual_seed(4))
    flat = diffusion_loss(Uniform(), batch, DiffusionLossConfig.for_vocab(VOCAB, weighting="flat", **kw),
                          generator=torch.Generator().manual_seed(4))
    assert flat.metrics["elbo"] == pytest.approx(weighted.metrics["elbo"])
    assert flat.metrics["diffusion_loss"] == pytest.approx(math.log(VOCAB.size) * flat.metrics["mask_rate"])
    assert weighted.metrics["diffusion_loss"] != pytest.approx(flat.metrics["diffusion_loss"], rel=0.01)


@pytest.mark.parametrize("kw", [{"weighting": "flat"}, {"weighting": "flat", "complementary": True},
                                {"weighting": "elbo"}])
def test_eos_weight_scales_only_the_eos_targets_and_keeps_the_elbo(kw):
    # Uniform CE = log V everywhere: with eos_weight w the training loss is log V times the masked
    # fraction of the answer counting each masked <eos> as w; the logged ELBO does not move.
    batch = reverse_task(64, seed=3)
    ans = batch["answer_mask"]
    eos_share = float((batch["tokens"][ans] == VOCAB.eos_id).float().mean())
    assert 0.2 < eos_share < 0.8
    out = {w: diffusion_loss(Uniform(), batch, DiffusionLossConfig.for_vocab(VOCAB, eos_weight=w, **kw),
                             generator=torch.Generator().manual_seed(4)) for w in (1.0, 0.5, 0.0)}
    assert out[0.0].metrics["elbo"] == pytest.approx(out[1.0].metrics["elbo"])
    drop_all = out[1.0].metrics["diffusion_loss"] - out[0.0].metrics["diffusion_loss"]
    assert drop_all > 0.1 * out[1.0].metrics["diffusion_loss"]  # eos targets carried real weight
    assert out[0.5].metrics["diffusion_loss"] == pytest.approx(out[1.0].metrics["diffusion_loss"] - drop_all / 2)
    if kw["weighting"] == "flat":  # by count: log V x (masked non-eos answer tokens) / (answer tokens)
        assert out[0.0].metrics["diffusion_loss"] < math.log(VOCAB.size) * (1 - eos_share) + 1e-6


def test_eos_weight_is_checked():
    with pytest.raises(ValueError, match="eos_weight must be in"):
        DiffusionLossConfig(eos_weight=1.5)
    with pytest.raises(ValueError, match="leave eos_weight at 1"):
        DiffusionLossConfig(kind="autoregressive", attention="causal", shift=True, eos_weight=0.5)


def test_bad_configs_and_batches():
    with pytest.raises(ValueError, match="normalization"):
        DiffusionLossConfig(normalization="sequence")
    with pytest.raises(ValueError, match="weighting"):
        DiffusionLossConfig(weighting="1/t")
    with pytest.raises(ValueError, match="block_size"):
        DiffusionLossConfig(attention="block")
    with pytest.raises(ValueError, match="anneal_steps"):
        DiffusionLossConfig(attention="block", block_size=4, anneal_steps=5)
    with pytest.raises(ValueError, match="anneal_steps"):
        DiffusionLossConfig(anneal_steps=-1)
    with pytest.raises(ValueError, match="symmetric"):
        DiffusionLossConfig(complementary=True, mask_rate_clip=(0.6, 0.9))
    batch = reverse_task(2)
    with pytest.raises(ValueError, match="missing"):
        diffusion_loss(Uniform(), {"tokens": batch["tokens"]}, DiffusionLossConfig())
    bad = dict(batch, answer_mask=torch.ones_like(batch["answer_mask"]))
    with pytest.raises(ValueError, match="padded"):
        diffusion_loss(Uniform(), bad, DiffusionLossConfig())
