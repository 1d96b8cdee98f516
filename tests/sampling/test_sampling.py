"""Sampling loop: exact caches are token-identical, rows are batch-independent, bad input is refused."""

import pytest
import torch
from torch import nn

from omnidiff.models.presets import preset_config
from omnidiff.models.transformer import Transformer
from omnidiff.sampling import STRATEGIES, SamplerConfig, generate
from omnidiff.sampling.loop import _finished_with_eos
from omnidiff.tokenization.vocab import Vocab

VOCAB = Vocab.build({"text": 64, "image": 32})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # A larger init than training uses, so that confidences differ clearly between columns.
    return Transformer(preset_config("debug", vocab_size=len(VOCAB), init_std=0.15)).eval()


def prompts(lengths=(5, 2, 7, 3), seed=1):
    g = torch.Generator().manual_seed(seed)
    text = VOCAB.range("text")
    return [torch.cat([torch.tensor([VOCAB.bos_id]), torch.randint(text.offset, text.end, (n - 1,), generator=g)])
            for n in lengths]


def gens(n, seed=7):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("block_len", [None, 4])
def test_exact_prefix_cache_is_token_identical(model, strategy, block_len):
    ps = prompts()
    cfg = dict(strategy=strategy, block_len=block_len, steps=8, threshold=0.3, attention="prefix")
    temperature = 0.7 if strategy == "random" else 0.0
    plain = generate(model, ps, answer_len=16, vocab=VOCAB, generator=gens(4),
                     config=SamplerConfig(cache="none", temperature=temperature, **cfg))
    cached = generate(model, ps, answer_len=16, vocab=VOCAB, generator=gens(4),
                      config=SamplerConfig(cache="prefix", temperature=temperature, **cfg))
    assert torch.equal(plain.tokens, cached.tokens)
    assert cached.stats["nfe"] == plain.stats["nfe"]  # the prompt is encoded inside the first step's forward


def test_prefix_cache_keeps_exactly_the_prompt_after_its_first_step(model):
    """The first step runs prompt + answer in one forward; the cache then holds the keys a forward over the
    prompt alone would have stored, and later steps read it."""
    from omnidiff.models.layers import AttentionSpec
    from omnidiff.sampling.caches import PrefixCached
    from omnidiff.sampling.loop import left_pad

    prefix, pad = left_pad(prompts(), VOCAB.pad_id)
    answer = torch.full((4, 8), VOCAB.mask_id)
    answer[:, 5:] = VOCAB.range("text").offset + 3  # a partly decoded answer
    denoiser = PrefixCached(model, prefix, pad, 8)
    denoiser.begin()
    first = denoiser.logits(answer, 0, 8)
    assert denoiser.nfe == 1 and denoiser.cache.frozen and denoiser.cache.length == prefix.shape[1]
    alone = model.new_cache()
    with torch.no_grad():
        model(prefix, attention=AttentionSpec("full", padding_mask=pad), positions=denoiser.positions[:, : prefix.shape[1]],
              kv_cache=alone)
    for mine, theirs in zip(denoiser.cache.keys + denoiser.cache.values, alone.keys + alone.values, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    assert torch.equal(denoiser.cache.key_padding, pad.bool())
    later = denoiser.logits(answer, 0, 8)  # the answer alone against the cache: the same logits
    assert denoiser.nfe == 2
    torch.testing.assert_close(later, first, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cache", ["none", "prefix"])
@pytest.mark.parametrize("block_len,steps", [(4, 8), (None, 2)])  # blocks, and few fixed steps over one block
def test_batch_equals_single_runs(model, cache, block_len, steps):
    ps = prompts()
    cfg = SamplerConfig(cache=cache, block_len=block_len, steps=steps, temperature=1.0, remask_threshold=0.05)
    batch = generate(model, ps, answer_len=16, vocab=VOCAB, config=cfg, generator=gens(4))
    for i, p in enumerate(ps):
        single = generate(model, [p], answer_len=16, vocab=VOCAB, config=cfg, generator=gens(4)[i: i + 1])
        assert torch.equal(batch.tokens[i], single.tokens[0]), f"row {i} depends on the batch"


def test_block_cache_is_token_identical_to_uncached_block_decoding(model):
    ps = prompts()
    for strategy in ("low_confidence", "threshold"):
        cfg = dict(attention="block", block_len=4, steps=8, strategy=strategy, threshold=0.2)
        plain = generate(model, ps, answer_len=16, vocab=VOCAB, config=SamplerConfig(cache="none", **cfg))
        cached = generate(model, ps, answer_len=16, vocab=VOCAB, config=SamplerConfig(cache="block", **cfg))
        assert torch.equal(plain.tokens, cached.tokens)
        # the prompt and each finished block ride in the next step's forward: one forward per step
        assert cached.stats["nfe"] == plain.stats["nfe"]
        for i, p in enumerate(ps):  # and the rows of different prompt lengths stay independent
            single = generate(model, [p], answer_len=16, vocab=VOCAB, config=SamplerConfig(cache="block", **cfg))
            assert torch.equal(cached.tokens[i], single.tokens[0]), f"row {i} depends on the batch"


class EosEverywhere(nn.Module):
    """Wraps a model so that <eos> wins every column: decoding must stop after the first block."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, tokens, **kwargs):
        logits = self.inner(tokens, **kwargs).clone()
        logits[..., VOCAB.eos_id] += 100.0
        return logits

    def new_cache(self):
        return self.inner.new_cache()


def test_variable_length_stops_at_eos_with_block_cache(model):
    out = generate(EosEverywhere(model), prompts(), answer_len=16, vocab=VOCAB,
                   config=SamplerConfig(attention="block", cache="block", block_len=4, steps=8))
    assert (out.tokens == VOCAB.eos_id).all()
    # 2 denoising steps (the first one encodes the prompt too), then stop: the finished block is never encoded
    assert out.stats["nfe"] == 2


def test_finished_with_eos_needs_only_eos_after_the_first_eos():
    e, t = VOCAB.eos_id, VOCAB.range("text").offset
    rows = torch.tensor([[t, t, e, e], [t, e, t, e], [t, t, t, t], [e, e, e, e]])
    assert _finished_with_eos(rows, e).tolist() == [True, False, False, True]


def test_answers_stay_in_the_answer_modality(model):
    out = generate(model, prompts(), answer_len=16, vocab=VOCAB, config=SamplerConfig(temperature=2.0),
                   generator=torch.Generator().manual_seed(0))
    text = VOCAB.range("text")
    ok = ((out.tokens >= text.offset) & (out.tokens < text.end)) | (out.tokens == VOCAB.eos_id)
    assert ok.all()
    img = generate(model, prompts(), answer_len=8, vocab=VOCAB, answer_modality="image",
                   config=SamplerConfig(answer_specials=()))
    assert all(VOCAB.modality_of(int(i)) == "image" for i in img.tokens.flatten())


def test_approx_prefix_cache_is_exact_under_prefix_attention(model):
    ps = prompts()
    cfg = dict(attention="prefix", block_len=4, steps=8)
    plain = generate(model, ps, answer_len=16, vocab=VOCAB, config=SamplerConfig(cache="none", **cfg))
    approx = generate(model, ps, answer_len=16, vocab=VOCAB, config=SamplerConfig(cache="approx_prefix", **cfg))
    assert torch.equal(plain.tokens, approx.tokens)
    dual = generate(model, ps, answer_len=16, vocab=VOCAB, config=SamplerConfig(cache="approx_dual", **cfg))
    assert dual.stats["nfe"] == plain.stats["nfe"]  # one refresh per block replaces a full step
    assert (dual.tokens != VOCAB.mask_id).all()


def test_threshold_commits_several_tokens_per_forward(model):
    out = generate(model, prompts(), answer_len=16, vocab=VOCAB, config=SamplerConfig(strategy="threshold", threshold=0.01))
    assert out.stats["nfe"] < 16 and out.stats["tokens_per_forward"] > 1
    assert (out.tokens != VOCAB.mask_id).all()


def test_guidance_scale_zero_decodes_the_unconditional_prompt(model):
    ps = prompts()
    uncond = [torch.tensor([VOCAB.bos_id, VOCAB.special("<uncond>")]) for _ in ps]
    guided = generate(model, ps, answer_len=8, vocab=VOCAB, uncond_prompts=uncond,
                      config=SamplerConfig(guidance_scale=0.0, cache="prefix"))
    alone = generate(model, uncond, answer_len=8, vocab=VOCAB, config=SamplerConfig(cache="prefix"))
    assert torch.equal(guided.tokens, alone.tokens)
    assert guided.stats["nfe"] == 2 * alone.stats["nfe"]


@pytest.mark.parametrize("block_len", [None, 4, 1])
def test_shift_with_prefix_cache_matches_uncached(model, block_len):
    ps = prompts()
    plain = generate(model, ps, answer_len=8, vocab=VOCAB, config=SamplerConfig(shift=True, block_len=block_len))
    cached = generate(model, ps, answer_len=8, vocab=VOCAB,
                      config=SamplerConfig(shift=True, cache="prefix", block_len=block_len))
    assert torch.equal(plain.tokens, cached.tokens)


def test_remasking_still_fills_every_position(model):
    out = generate(model, prompts(), answer_len=16, vocab=VOCAB,
                   config=SamplerConfig(steps=8, block_len=8, remask_threshold=0.5))
    assert (out.tokens != VOCAB.mask_id).all()
    assert out.stats["nfe"] == 8


@pytest.mark.parametrize("kwargs, config, message", [
    (dict(answer_len=8), dict(steps=9), "larger than the answer length"),
    (dict(answer_len=8), dict(block_len=3), "must divide answer_len"),
    (dict(answer_len=8), dict(guidance_scale=2.0), "no unconditional path"),
])
def test_bad_generate_arguments(model, kwargs, config, message):
    with pytest.raises(ValueError, match=message):
        generate(model, prompts(), vocab=VOCAB, config=SamplerConfig(**config), **kwargs)


def test_bad_sampler_config_and_prompts(model):
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        SamplerConfig(threshold=1.5)
    with pytest.raises(ValueError, match="needs attention='prefix'"):
        SamplerConfig(cache="prefix", attention="full")
    with pytest.raises(ValueError, match="unknown strategy"):
        SamplerConfig(strategy="greedy")
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, [torch.tensor([2]), torch.tensor([], dtype=torch.long)], answer_len=4, vocab=VOCAB)


def test_fixed_layout_gives_well_formed_fixed_size_answers(model):
    from omnidiff.sampling import cyclic_layout, fixed_layout

    layout = fixed_layout(VOCAB, "image", 6, "</image>", 10)
    out = generate(model, prompts(), answer_len=10, vocab=VOCAB, answer_layout=layout,
                   config=SamplerConfig(strategy="threshold", threshold=0.5, temperature=1.5),
                   generator=gens(4))
    image = VOCAB.range("image")
    assert ((out.tokens[:, :6] >= image.offset) & (out.tokens[:, :6] < image.end)).all()
    assert (out.tokens[:, 6] == VOCAB.special("</image>")).all() and (out.tokens[:, 7:] == VOCAB.eos_id).all()
    levels = Vocab.build({"text": 8, "audio.0": 4, "audio.1": 4})
    cyc = cyclic_layout(levels, ["audio.0", "audio.1"], 5, specials=("</audio>", "<eos>"))
    a0, a1 = levels.range("audio.0").offset, levels.range("audio.1").offset
    assert cyc[0, a0] and not cyc[0, a1] and not cyc[0, 10]
    assert cyc[3, a1] and not cyc[3, a0] and cyc[3, levels.eos_id] and cyc[3, levels.special("</audio>")]
    with pytest.raises(ValueError, match="too short"):
        fixed_layout(VOCAB, "image", 10, "</image>", 10)
    with pytest.raises(ValueError, match="answer_layout must be"):
        generate(model, prompts(), answer_len=8, vocab=VOCAB, answer_layout=layout)


def test_tokens_per_step_counts_each_rows_own_steps(model):
    # Four steps over 8 columns: every row commits 2 tokens per step, whatever the batch does.
    out = generate(model, prompts(), answer_len=8, vocab=VOCAB, config=SamplerConfig(steps=4, cache="prefix"))
    assert out.stats["tokens_per_step"] == 2.0 and out.stats["tokens_per_forward"] == 8 / 4  # prompt inside step 1
    one = generate(model, prompts()[:1], answer_len=8, vocab=VOCAB, config=SamplerConfig())
    assert one.stats["tokens_per_step"] == 1.0


@pytest.mark.parametrize("mode", [dict(cache="none"), dict(cache="prefix"), dict(cache="approx_prefix"),
                                  dict(cache="approx_dual"), dict(cache="block", attention="block")])
def test_the_hugging_face_wrapper_decodes_with_every_cache(model, mode):
    from omnidiff.models.hf import OmniDiffConfig, OmniDiffModel

    wrapper = OmniDiffModel(OmniDiffConfig.from_parts(model.cfg, VOCAB))
    wrapper.model.load_state_dict(model.state_dict())
    cfg = SamplerConfig(block_len=4, steps=8, **mode)
    ours = generate(wrapper, prompts(), answer_len=16, vocab=VOCAB, config=cfg)
    assert torch.equal(ours.tokens, generate(model, prompts(), answer_len=16, vocab=VOCAB, config=cfg).tokens)


def test_causal_cache_is_token_identical_to_uncached_causal_decoding_and_batch_independent(model):
    ps = prompts()
    for temperature in (0.0, 0.8):
        kw = dict(attention="causal", block_len=1, shift=True, temperature=temperature)
        plain = generate(model, ps, answer_len=12, vocab=VOCAB, generator=gens(4),
                         config=SamplerConfig(cache="none", **kw))
        cached = generate(model, ps, answer_len=12, vocab=VOCAB, generator=gens(4),
                          config=SamplerConfig(cache="causal", **kw))
        assert torch.equal(plain.tokens, cached.tokens)
        assert cached.stats["nfe"] <= plain.stats["nfe"]  # one forward per token, the prompt's included
        for i, p in enumerate(ps):
            single = generate(model, [p], answer_len=12, vocab=VOCAB, generator=gens(4)[i: i + 1],
                              config=SamplerConfig(cache="causal", **kw))
            assert torch.equal(cached.tokens[i], single.tokens[0]), f"row {i} depends on the batch"


@pytest.mark.parametrize("kw, message", [
    (dict(attention="causal", cache="causal", block_len=4, shift=True), "block_len=1 and shift=True"),
    (dict(attention="causal", cache="causal", block_len=1, shift=False), "block_len=1 and shift=True"),
    (dict(attention="prefix", cache="causal", shift=True), "cache='causal' is the exact cache"),
    (dict(attention="causal", cache="prefix", block_len=1, shift=True), "cache='causal' is the exact cache"),
])
def test_causal_sampler_configs_that_cannot_work_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**kw)


def test_a_block_samples_over_its_own_vocabulary_only(model, monkeypatch):
    from omnidiff.sampling import fixed_layout, loop

    layout = fixed_layout(VOCAB, "image", 6, "</image>", 10)
    ids_of, allowed = loop._block_vocabulary(layout[:4])
    image = VOCAB.range("image")
    assert ids_of.tolist() == list(range(image.offset, image.end)) and allowed.all()
    assert loop._block_vocabulary(torch.ones(3, len(VOCAB), dtype=torch.bool))[0] is None
    tokens = torch.tensor([[image.offset + 5, VOCAB.mask_id]])
    assert loop._local_index(ids_of, len(VOCAB))[tokens].tolist() == [[5, 0]]
    # Greedy decoding is the same over the block's ids as over the whole vocabulary (other ids are -inf).
    cfg = SamplerConfig(strategy="low_confidence", block_len=5, remask_threshold=0.2)
    restricted = generate(model, prompts(), answer_len=10, vocab=VOCAB, answer_layout=layout, config=cfg)
    monkeypatch.setattr(loop, "_block_vocabulary", lambda allowed_NV: (None, allowed_NV))
    whole = generate(model, prompts(), answer_len=10, vocab=VOCAB, answer_layout=layout, config=cfg)
    assert torch.equal(restricted.tokens, whole.tokens)
