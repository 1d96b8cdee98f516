"""Training from a pretrained causal LM (``model.init_from``) and the time box (``train.max_minutes``)."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import train as train_cli
from omnidiff.config import load_config
from omnidiff.models.hf import OmniDiffModel
from omnidiff.tokenization.registry import TokenizerSet
from omnidiff.training.trainer import train
from tests.fixtures import build_text_dataset, build_text_tokenizer

ADAPT = ["objective.attention=prefix", "objective.shift=true", "objective.anneal_steps=4", "objective.complementary=true"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("init_from")
    data, tok = build_text_dataset(root), build_text_tokenizer(root)
    torch.manual_seed(0)
    vocab_size = TokenizerSet.load({"text": tok}).text.vocab_size
    hf = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=vocab_size, rope_theta=1e5, rms_norm_eps=1e-5,
                                      tie_word_embeddings=True, bos_token_id=0, eos_token_id=1))
    hf.save_pretrained(root / "llama")
    return data, tok, root / "llama", hf.eval()


def config(assets, out, *extra):
    data, tok, llama, _ = assets
    return load_config(None, [
        f"model.init_from={llama}", f"tokenizers.text={tok}", f"train.out={out}", "train.tensorboard=false",
        "data.batch_size=2", f"data.tasks=[{{task: text, path: {data}, answer_len: 16}}]", "optim.warmup_steps=0",
        "train.eval_every=0", "train.log_every=1", *ADAPT, *extra])


def test_a_run_starts_from_the_checkpoint(assets, tmp_path):
    *_, hf = assets
    summary = train(config(assets, tmp_path / "run", "train.steps=1", "optim.lr=1e-12"))
    model = OmniDiffModel.from_pretrained(summary["model"])
    assert model.model.cfg.extra["init_from"]["model_type"] == "llama" and model.model.cfg.num_kv_heads == 2
    text = model.vocab.range("text")
    ids = torch.randint(0, text.size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.model(model.vocab.to_global("text", ids), attention="causal")[..., text.offset:text.end]
        torch.testing.assert_close(ours, hf(ids).logits, atol=1e-4, rtol=1e-4)  # one step at lr 1e-12 moves nothing
    settings = json.loads((tmp_path / "run" / "model" / "omnidiff_generation.json").read_text())
    assert settings["attention"] == "prefix" and settings["shift"] is True


def test_max_minutes_checkpoints_exports_and_resumes(assets, tmp_path):
    first = train(config(assets, tmp_path / "box", "train.steps=3", "train.max_minutes=1e-9"))
    assert first["steps"] == 1 and first["model"] is not None
    resumed = train(config(assets, tmp_path / "box", "train.steps=3"), resume=True)
    assert resumed["steps"] == 3 and len(resumed["loss_history"]) == 3


@pytest.mark.parametrize("make, match", [
    (lambda root: root / "absent", "make smollm2"),
    (lambda root: root, "no config.json"),
    (lambda root: (root / "config.json").write_text(json.dumps({"model_type": "bert"})) and root, "not a causal LM"),
    (lambda root: (root / "config.json").write_text("{not json") and root, "not valid JSON"),
])
def test_a_folder_that_is_not_a_causal_lm_is_refused(assets, tmp_path, make, match, capsys):
    folder = make(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        train(config(assets, tmp_path / "run", "train.steps=1", f"model.init_from={folder}"))
    assert not (tmp_path / "run").exists()
    data, tok, *_ = assets
    code = train_cli.main([f"model.init_from={folder}", f"tokenizers.text={tok}", f"train.out={tmp_path / 'cli'}",
                           f"data.tasks=[{{task: text, path: {data}, answer_len: 16}}]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")


def test_overrides_may_not_change_the_pretrained_architecture(assets, tmp_path):
    with pytest.raises(ValueError, match="would change the pretrained architecture"):
        train(config(assets, tmp_path / "run", "train.steps=1", "model.overrides={num_layers: 3}"))
    cfg = config(assets, tmp_path / "ok", "train.steps=1", "train.export=false",
                 "model.overrides={max_positions: 64, gradient_checkpointing: true}")
    assert train(cfg)["steps"] == 1


def test_init_weights_random_keeps_the_architecture_and_drops_the_weights(assets, tmp_path):
    *_, hf = assets
    summary = train(config(assets, tmp_path / "scratch", "train.steps=1", "optim.lr=1e-12", "model.init_weights=random"))
    model = OmniDiffModel.from_pretrained(summary["model"])
    assert model.model.cfg.num_kv_heads == 2 and model.model.cfg.tie_embeddings
    assert model.model.embed.weight.shape == OmniDiffModel.from_pretrained(
        train(config(assets, tmp_path / "adapted", "train.steps=1", "optim.lr=1e-12"))["model"]).model.embed.weight.shape
    text = model.vocab.range("text")
    ids = torch.randint(0, text.size, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.model(model.vocab.to_global("text", ids), attention="causal")[..., text.offset:text.end]
    assert (ours - hf(ids).logits).abs().max() > 1e-2  # fresh weights, not the checkpoint's
    with pytest.raises(ValueError, match="model.init_weights must be 'pretrained' or 'random'"):
        load_config(None, ["model.init_weights=zeros"])
