"""The sampler never returns garbage or hangs: bad numbers are refused up front, <mask> is never
committed, and every decoding loop stops within a fixed number of forwards."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from omnidiff.models.presets import preset_config
from omnidiff.models.transformer import Transformer
from omnidiff.sampling import SamplerConfig, generate
from omnidiff.sampling import loop as sampling_loop
from omnidiff.tokenization.vocab import Vocab

VOCAB = Vocab.build({"text": 64, "image": 32})

# Every cache mode with the attention it needs; block attention also needs a block length.
CACHE_MODES = [
    dict(cache="none"),
    dict(cache="prefix"),
    dict(cache="approx_prefix"),
    dict(cache="approx_dual"),
    dict(cache="block", attention="block", block_len=4),
    dict(cache="none", attention="block", block_len=4),
    dict(cache="prefix", shift=True, block_len=1),  # the first block's logits come from the prompt pass
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(preset_config("debug", vocab_size=len(VOCAB))).eval()


class Biased(nn.Module):
    """Wraps a model and adds ``bias`` to the logit of ``token`` everywhere; counts forwards."""

    def __init__(self, inner, token: int, bias: float = 100.0):
        super().__init__()
        self.inner, self.token, self.bias, self.forwards = inner, token, bias, 0

    def forward(self, tokens, **kwargs):
        self.forwards += 1
        logits = self.inner(tokens, **kwargs).clone()
        logits[..., self.token] += self.bias
        return logits

    def new_cache(self):
        return self.inner.new_cache()


def prompts():
    return [torch.tensor([VOCAB.bos_id, 10, 11, 12]), torch.tensor([VOCAB.bos_id, 13])]


# ------------------------------------------------------------------------ numbers are checked
@pytest.mark.parametrize("option", ["temperature", "guidance_scale", "threshold", "remask_threshold", "shift_a"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(option, value):
    with pytest.raises(ValueError, match=rf"^{option} must be .*got -?(nan|inf)"):
        SamplerConfig(**{option: value})


@pytest.mark.parametrize("option, value, message", [
    ("temperature", -0.5, r"temperature must be a finite number >= 0"),
    ("temperature", "hot", r"temperature must be .*got 'hot' \(str\)"),
    ("guidance_scale", True, r"guidance_scale must be .*\(bool\)"),
    ("threshold", 0.0, r"threshold must be in \(0, 1\]"),
    ("remask_threshold", 1.0, r"remask_threshold must be in \(0, 1\)"),
    ("shift_a", 0.0, r"shift_a must be a finite number > 0"),
])
def test_out_of_range_and_non_numbers_are_refused(option, value, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**{option: value})


@pytest.mark.parametrize("option, value, message", [
    ("steps", 2.5, r"steps must be an integer >= 1 or None, got 2.5 \(float\)$"),
    ("steps", 4.0, r"got 4.0 \(float\); use 4"),
    ("steps", True, r"steps must be an integer .*\(bool\)"),
    ("steps", 0, r"steps must be an integer >= 1, got 0"),
    ("block_len", 4.0, r"block_len must be an integer"),
    ("early_stop", "yes", r"early_stop must be True or False"),
    ("shift", 1, r"shift must be True or False"),
    ("answer_specials", "<eos>", r"answer_specials must be a tuple"),
])
def test_integers_and_flags_are_checked_as_such(option, value, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**{option: value})


@pytest.mark.parametrize("answer_len, message", [
    (8.0, r"answer_len must be an integer >= 1, got 8.0 \(float\); use 8"),
    (True, r"answer_len must be an integer .*\(bool\)"),
    (0, r"answer_len must be an integer >= 1, got 0"),
])
def test_answer_len_must_be_an_integer(model, answer_len, message):
    with pytest.raises(ValueError, match=message):
        generate(model, prompts(), answer_len=answer_len, vocab=VOCAB)


def test_numpy_integers_are_integers(model):
    out = generate(model, prompts(), answer_len=np.int64(4), vocab=VOCAB, config=SamplerConfig(steps=np.int64(2)))
    assert out.tokens.shape == (2, 4)


# ------------------------------------------------------------------------ <mask> is never committed
def test_mask_in_answer_specials_is_refused():
    with pytest.raises(ValueError, match="answer_specials includes '<mask>'.*remove it"):
        SamplerConfig(answer_specials=("<eos>", "<mask>"))


def test_mask_reaching_generate_past_the_config_check_is_refused(model):
    # The loop repeated a block's last step forever when <mask> was the top allowed choice; a config
    # whose check was bypassed must still stop before the first forward.
    config = SamplerConfig()
    object.__setattr__(config, "answer_specials", ("<eos>", "<mask>"))
    biased = Biased(model, VOCAB.mask_id)
    with pytest.raises(ValueError, match="can never be committed"):
        generate(biased, prompts(), answer_len=4, vocab=VOCAB, config=config)
    assert biased.forwards == 0


def test_mask_in_answer_layout_is_refused(model):
    layout = VOCAB.modality_mask("text", specials=("<eos>",)).expand(8, -1).clone()
    layout[5, VOCAB.mask_id] = True
    with pytest.raises(ValueError, match=r"may be <mask> \(id 1\) at columns \[5\]"):
        generate(Biased(model, VOCAB.mask_id), prompts(), answer_len=8, vocab=VOCAB, answer_layout=layout)


@pytest.mark.parametrize("mode", CACHE_MODES, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
@pytest.mark.parametrize("strategy", ["low_confidence", "threshold"])
def test_a_model_that_prefers_mask_still_gets_a_full_answer(model, mode, strategy):
    # Before the fix, <mask> allowed in the answer made the block's last step repeat forever.
    biased = Biased(model, VOCAB.mask_id)
    out = generate(biased, prompts(), answer_len=8, vocab=VOCAB, config=SamplerConfig(strategy=strategy, **mode))
    assert (out.tokens != VOCAB.mask_id).all()
    assert biased.forwards <= 1 + 2 * 8 + 8  # the documented bound (prompt, 2 steps per column, block ends)


# ------------------------------------------------------------------------ every loop is bounded
def test_threshold_with_remasking_terminates(model):
    # An untrained model's forced commits fall below the remask threshold at once: without a
    # remasking budget the threshold strategy undid them forever.
    counting = Biased(model, VOCAB.eos_id, bias=0.0)
    out = generate(counting, prompts(), answer_len=8, vocab=VOCAB,
                   config=SamplerConfig(strategy="threshold", threshold=0.99, remask_threshold=0.9, block_len=4))
    assert (out.tokens != VOCAB.mask_id).all()
    assert counting.forwards <= 2 * 8


@pytest.mark.parametrize("mode", CACHE_MODES, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
@pytest.mark.parametrize("strategy", ["low_confidence", "threshold"])
def test_a_loop_that_makes_no_progress_raises(model, monkeypatch, mode, strategy):
    def commit_nothing(scores, candidates, *args, **kwargs):
        return torch.zeros_like(candidates)

    # A selector that never commits (and a last step that commits nothing) stands in for any future
    # bug that stalls a block: the guard must stop it after a bounded number of forwards.
    monkeypatch.setattr(sampling_loop, "select_threshold", commit_nothing)
    monkeypatch.setattr(sampling_loop, "select_top_k", commit_nothing)
    # Proposals index the block's vocabulary; a vocabulary of <mask> alone makes every proposal <mask>,
    # so even the last step's forced commit leaves the block masked.
    monkeypatch.setattr(sampling_loop, "_block_vocabulary",
                        lambda allowed: (torch.tensor([VOCAB.mask_id]), torch.ones(allowed.shape[0], 1, dtype=torch.bool)))
    monkeypatch.setattr(sampling_loop, "propose", lambda logits, *a: (torch.zeros(logits.shape[:2], dtype=torch.long,
                                                                                  device=logits.device),
                                                                       logits.double().softmax(-1)))
    monkeypatch.setattr(sampling_loop, "_check_proposals", lambda *a: None)
    counting = Biased(model, VOCAB.eos_id, bias=0.0)
    with pytest.raises(RuntimeError, match=r"did not finish within \d+ steps per block"):
        generate(counting, prompts(), answer_len=8, vocab=VOCAB,
                 config=SamplerConfig(strategy=strategy, **{"block_len": 4, **mode}))
    assert counting.forwards <= 1 + 2 * 4 + 1  # stopped in the first block


# ------------------------------------------------------------------------ garbage logits are caught
def test_nan_logits_raise_instead_of_decoding_pad(model):
    with pytest.raises(RuntimeError, match="NaN or infinite"):
        generate(Biased(model, VOCAB.eos_id, bias=math.nan), prompts(), answer_len=4, vocab=VOCAB)


def test_guidance_that_overflows_float32_raises(model):
    uncond = [torch.tensor([VOCAB.bos_id, VOCAB.special("<uncond>")])] * 2
    with pytest.raises(RuntimeError, match="guidance_scale"):
        generate(model, prompts(), answer_len=4, vocab=VOCAB, uncond_prompts=uncond,
                 config=SamplerConfig(guidance_scale=1e39))
