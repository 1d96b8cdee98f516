"""model.output_prior: the LM head's bias starts at the answers' log unigram prior."""

import math

import pytest
import torch

from omnidiff.config import load_config
from omnidiff.models.hf import OmniDiffModel
from omnidiff.training.output_prior import answer_log_prior, set_output_prior
from omnidiff.training.trainer import train
from tests.training.test_trainer import assets, config  # noqa: F401  (the module fixture)


def batch(rows):
    tokens = torch.tensor(rows)
    answer = torch.zeros_like(tokens, dtype=torch.bool)
    answer[:, 2:] = True
    return {"tokens": tokens, "answer_mask": answer}


def test_prior_counts_answer_tokens_only_and_is_a_distribution():
    # prompt tokens (columns 0-1) are 9s and must not count; answers hold 3 x id 4 and 1 x id 5
    log_prior = answer_log_prior([batch([[9, 9, 4, 4]]), batch([[9, 9, 4, 5]])], vocab_size=10, smoothing=0.01)
    probs = log_prior.exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert probs[4].item() == pytest.approx(3.01 / 4.1, rel=1e-5)
    assert probs[5].item() == pytest.approx(1.01 / 4.1, rel=1e-5)
    assert log_prior[9].item() == pytest.approx(math.log(0.01 / 4.1), rel=1e-5)  # prompt-only id: unseen


def test_bad_prior_input_is_refused():
    with pytest.raises(ValueError, match="no answer tokens"):
        answer_log_prior([], vocab_size=10)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        answer_log_prior([batch([[0, 0, 12]])], vocab_size=10)
    with pytest.raises(ValueError, match="no bias"):
        set_output_prior(torch.nn.Linear(4, 10, bias=False), torch.zeros(10))
    with pytest.raises(ValueError, match="shape"):
        set_output_prior(torch.nn.Linear(4, 10), torch.zeros(9))


def test_config_refuses_a_prior_for_a_loaded_model(tmp_path):
    with pytest.raises(ValueError, match="keeps its own head"):
        load_config(None, ["model.output_prior=4", f"model.init_run={tmp_path}"])
    with pytest.raises(ValueError, match="number of batches"):
        load_config(None, ["model.output_prior=-1"])


def test_a_run_starts_at_the_unigram_loss_and_exports_its_bias(assets, tmp_path):  # noqa: F811
    """With the prior the first step's loss is near the answers' unigram entropy (a few nats), not
    log V of a head that finds every id equally likely; the bias is in the exported model."""
    plain = train(config(assets, tmp_path / "plain", "train.steps=1", "train.export=false"))
    prior = train(config(assets, tmp_path / "prior", "train.steps=1", "model.output_prior=8"))
    exported = OmniDiffModel.from_pretrained(prior["model"]).model
    assert exported.cfg.head_bias and exported.lm_head.bias is not None
    vocab_size = exported.cfg.vocab_size
    assert plain["loss_history"][0] > 0.8 * math.log(vocab_size)
    assert prior["loss_history"][0] < 0.8 * plain["loss_history"][0]
    bias = exported.lm_head.bias.detach()
    assert bias.max() > -6 and bias.min() < -9  # used ids near their frequency, unused ones far below
