"""Code embeddings initialised from the tokenizers: distances between codes survive, other rows do not move."""

import pytest
import torch

from omnidiff.models.code_embeddings import init_code_embeddings, ordinal_features
from tests.fixtures import tiny_tokenizers

TOKS = tiny_tokenizers()
VOCAB = TOKS.build_vocab()


def distances(x):
    return torch.cdist(x.double(), x.double())


def test_code_rows_keep_the_codebook_geometry_and_text_rows_stay():
    weight = torch.randn(len(VOCAB), 256) * 0.02
    before = weight.clone()
    done = init_code_embeddings(weight, VOCAB, TOKS, std=0.02, seed=0)
    assert set(done) == {"image", "audio.0", "audio.1", "action"}
    text = VOCAB.range("text")
    assert torch.equal(weight[text.offset:text.end], before[text.offset:text.end])
    image = VOCAB.range("image")
    rows = weight[image.offset:image.end]
    assert abs(float(rows.std()) - 0.02) < 1e-3
    # a random projection to 256 dims keeps pairwise distances up to one scale: correlation near 1
    d_code, d_rows = distances(TOKS.image.codebook.detach()).flatten(), distances(rows).flatten()
    assert torch.corrcoef(torch.stack([d_code, d_rows]))[0, 1] > 0.95


def test_neighbouring_action_bins_start_closer_than_distant_ones():
    weight = torch.zeros(len(VOCAB), 128)
    init_code_embeddings(weight, VOCAB, TOKS, std=0.02)
    action = VOCAB.range("action")
    rows = weight[action.offset:action.end]
    near, far = (rows[10] - rows[11]).norm(), (rows[10] - rows[30]).norm()
    assert near < far / 3
    assert ordinal_features(256).shape == (256, 16) and ordinal_features(32).shape == (32, 4)


def test_same_seed_same_rows_and_a_mismatched_vocabulary_is_refused():
    a, b = torch.zeros(len(VOCAB), 64), torch.zeros(len(VOCAB), 64)
    init_code_embeddings(a, VOCAB, TOKS, std=0.02, seed=3)
    init_code_embeddings(b, VOCAB, TOKS, std=0.02, seed=3)
    assert torch.equal(a, b)
    other = tiny_tokenizers()
    other.image.model.quantize.embedding = torch.nn.Embedding(8, 8)  # 8 codes; the vocabulary holds 16
    with pytest.raises(ValueError, match="has 8 codes but the vocabulary range holds 16"):
        init_code_embeddings(torch.zeros(len(VOCAB), 64), VOCAB, other, std=0.02)


def test_the_trainer_starts_from_codebook_embeddings_only_when_asked():
    from omnidiff.config import ModelConfig, RunConfig
    from omnidiff.models.presets import preset_config
    from omnidiff.training.trainer import new_model

    model_cfg = preset_config("debug", len(VOCAB))
    image = VOCAB.range("image")
    rows = {}
    for choice in ("random", "codebook"):
        torch.manual_seed(0)
        cfg = RunConfig(model=ModelConfig(preset="debug", init_embeddings=choice))
        rows[choice] = new_model(cfg, model_cfg, None, VOCAB, TOKS).embed.weight.detach()
    expected = rows["random"].clone()
    init_code_embeddings(expected, VOCAB, TOKS, std=model_cfg.init_std, seed=cfg.train.seed)
    assert torch.equal(rows["codebook"], expected)
    assert not torch.equal(rows["codebook"][image.offset:image.end], rows["random"][image.offset:image.end])
    with pytest.raises(ValueError, match="model.init_embeddings must be 'random' or 'codebook'"):
        ModelConfig(init_embeddings="clip")
