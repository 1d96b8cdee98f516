"""save_pretrained / from_pretrained round trip through safetensors, with the vocabulary."""

import pytest
import torch
from transformers import AutoModel

from omnidiff.models.hf import OmniDiffConfig, OmniDiffModel
from omnidiff.models.presets import preset_config
from omnidiff.tokenization.vocab import Vocab


def test_round_trip_identical_logits(tmp_path):
    vocab = Vocab.build({"text": 200, "image": 64})
    torch.manual_seed(0)
    model = OmniDiffModel(OmniDiffConfig.from_parts(preset_config("debug", vocab.size), vocab)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "omnidiff_vocab.json").exists()
    loaded = OmniDiffModel.from_pretrained(tmp_path, expected_vocab=vocab).eval()
    auto = AutoModel.from_pretrained(tmp_path).eval()
    tokens = torch.randint(0, vocab.size, (2, 10))
    with torch.no_grad():
        ref = model(tokens, attention="full")
        assert torch.equal(ref, loaded(tokens, attention="full"))
        assert torch.equal(ref, auto(tokens, attention="full"))
    assert loaded.vocab == vocab


def test_tied_embeddings_come_back_tied(tmp_path):
    # The LM head of a tied model is not stored; loading must tie it again rather than leave it
    # uninitialised (it once came back as whatever memory held: NaN, huge or zero, varying by run).
    vocab = Vocab.build({"text": 200})
    torch.manual_seed(0)
    model = OmniDiffModel(OmniDiffConfig.from_parts(preset_config("debug", vocab.size, tie_embeddings=True), vocab))
    model.save_pretrained(tmp_path)
    loaded = OmniDiffModel.from_pretrained(tmp_path).eval()
    assert loaded.model.lm_head.weight is loaded.model.embed.weight
    tokens = torch.randint(0, vocab.size, (2, 10))
    with torch.no_grad():
        assert torch.equal(model.eval()(tokens, attention="full"), loaded(tokens, attention="full"))


def test_vocab_mismatch_and_missing_folder(tmp_path):
    vocab = Vocab.build({"text": 200})
    OmniDiffModel(OmniDiffConfig.from_parts(preset_config("debug", vocab.size), vocab)).save_pretrained(tmp_path)
    other = Vocab.build({"text": 100, "image": 100})
    with pytest.raises(ValueError, match="vocabulary differs"):
        OmniDiffModel.from_pretrained(tmp_path, expected_vocab=other)
    with pytest.raises(FileNotFoundError, match="no OmniDiff checkpoint"):
        OmniDiffModel.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="does not match the vocabulary"):
        OmniDiffConfig.from_parts(preset_config("debug", 999), vocab)
