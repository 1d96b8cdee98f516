"""The training loop: loss falls, resume is exact, export loads, bad input fails cleanly."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omnidiff.config import load_config
from omnidiff.training.trainer import train
from tests.fixtures import build_text_dataset, build_text_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return build_text_dataset(root), build_text_tokenizer(root)


def config(assets, out, *extra):
    data, tok = assets
    return load_config(None, [
        "model.preset=debug", f"tokenizers.text={tok}", f"train.out={out}", "train.tensorboard=false",
        "data.batch_size=4", f"data.tasks=[{{task: text, path: {data}, answer_len: 16}}]",
        "optim.lr=3e-3", "optim.warmup_steps=2", "train.eval_every=0", "train.log_every=1", *extra])


def test_resume_gives_the_identical_loss_sequence(assets, tmp_path):
    straight = train(config(assets, tmp_path / "a", "train.steps=8", "train.export=false"))
    train(config(assets, tmp_path / "b", "train.steps=8", "train.stop_at=4", "train.export=false"))
    resumed = train(config(assets, tmp_path / "b", "train.steps=8", "train.export=false"), resume=True)
    assert len(straight["loss_history"]) == 8
    assert resumed["loss_history"] == straight["loss_history"]
    assert (tmp_path / "b" / "checkpoints" / "latest").read_text() == "step_00000008"
    assert not list((tmp_path / "b" / "checkpoints").glob("*.tmp"))


def test_fused_adamw_takes_the_same_steps_as_the_loop(assets, tmp_path):
    fused = train(config(assets, tmp_path / "a", "train.steps=6", "train.export=false"))
    loop = train(config(assets, tmp_path / "b", "train.steps=6", "train.export=false", "optim.fused=false"))
    assert fused["loss_history"] == pytest.approx(loop["loss_history"], rel=1e-4)
    assert fused["loss_history"][-1] != pytest.approx(fused["loss_history"][0], rel=1e-3)


def test_loss_falls_and_export_loads_with_identical_logits(assets, tmp_path):
    from omnidiff.models.hf import OmniDiffModel

    summary = train(config(assets, tmp_path / "run", "train.steps=30", "train.eval_every=30", "train.eval_batches=2"))
    hist = summary["loss_history"]
    assert sum(hist[-5:]) / 5 < sum(hist[:5]) / 5
    model = OmniDiffModel.from_pretrained(summary["model"])
    tokens = torch.randint(5, 100, (2, 12))
    state_file = Path(summary["checkpoint"]) / "engine" / "state" / "mp_rank_00_model_states.pt"
    ref = torch.load(state_file, weights_only=True)["module"]
    fresh = OmniDiffModel(model.config)
    fresh.model.load_state_dict(ref)
    assert torch.allclose(model.model(tokens), fresh.model(tokens))
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "elbo", "lr", "grad_norm", "tokens_per_s", "expert_balance"} <= set(metrics[0])
    assert any(m["split"] == "val" and "elbo/text" in m for m in metrics)


def test_resume_with_a_different_model_shape_is_refused(assets, tmp_path):
    train(config(assets, tmp_path / "c", "train.steps=2", "train.export=false"))
    with pytest.raises(ValueError, match="different model shape"):
        train(config(assets, tmp_path / "c", "train.steps=4", "train.export=false", "model.overrides={num_layers: 3}"),
              resume=True)
    assert sorted(p.name for p in (tmp_path / "c" / "checkpoints").iterdir()) == ["latest", "step_00000002"]


def test_resume_with_a_different_vocabulary_is_refused(assets, tmp_path):
    from omnidiff.tokenization.text import TextTokenizer
    from tests.fixtures import text_docs

    train(config(assets, tmp_path / "v", "train.steps=2", "train.export=false"))
    other = tmp_path / "bpe320"
    TextTokenizer.train(text_docs(200), vocab_size=320, show_progress=False).save(other)
    with pytest.raises(ValueError, match="vocabulary"):
        train(config(assets, tmp_path / "v", "train.steps=4", "train.export=false", f"tokenizers.text={other}"),
              resume=True)
    assert sorted(p.name for p in (tmp_path / "v" / "checkpoints").iterdir()) == ["latest", "step_00000002"]


@pytest.mark.parametrize("args, message", [
    (["optim.lrr=1"], "did you mean 'lr'"),
    (["data.tasks=[{task: text, path: /no/such/data}]", "tokenizers.text=/no/tok"], "holds no text tokenizer"),
    (["data.batch_size=3", "train.steps=1"], None),
])
def test_train_py_bad_input_exits_cleanly(assets, tmp_path, args, message):
    data, tok = assets
    base = [f"tokenizers.text={tok}", f"data.tasks=[{{task: text, path: {data}, answer_len: 16}}]",
            f"train.out={tmp_path / 'x'}", "train.export=false", "train.tensorboard=false"]
    # Earlier in-process runs exported RANK/MASTER_PORT...: the child must start its own group.
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    if message is None:  # a batch that does not split over 2 ranks: checked before any process group forms
        code = ("import sys; from omnidiff.training import trainer; from omnidiff.training import distributed as d;"
                "d.init_distributed = lambda cfg, dev: (0, 2); sys.argv = ['train.py'] + sys.argv[1:];"
                "import runpy; runpy.run_path('train.py', run_name='__main__')")
        cmd = [sys.executable, "-c", code, *base, *args]
        message = "does not divide across 2 ranks"
    else:
        cmd = [sys.executable, "train.py", *base, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_block_attention_trains_on_prompts_of_any_length(assets, tmp_path):
    # Prompts of every length: the loader starts answers on a block boundary, as the sampler does.
    summary = train(config(assets, tmp_path / "blk", "train.steps=3", "train.export=false", "train.eval_every=3",
                           "train.eval_batches=1", "objective.attention=block", "objective.block_size=8"))
    assert len(summary["loss_history"]) == 3 and all(map(math.isfinite, summary["loss_history"]))


def test_the_ar_twin_trains_exports_and_its_pipeline_decodes_left_to_right(assets, tmp_path):
    from omnidiff.pipelines import TextPipeline

    summary = train(config(assets, tmp_path / "ar", "train.steps=20", "train.eval_every=20", "train.eval_batches=1",
                           "train.sample_every=20", "train.sample_prompts=1", "objective.kind=autoregressive",
                           "objective.attention=causal", "objective.shift=true", "objective.complementary=false"))
    hist = summary["loss_history"]
    assert sum(hist[-5:]) / 5 < sum(hist[:5]) / 5
    assert summary["val"]["elbo"] > 0
    settings = json.loads((Path(summary["model"]) / "omnidiff_generation.json").read_text())
    assert settings["attention"] == "causal" and settings["shift"] is True
    pipe = TextPipeline.from_pretrained(summary["model"])
    assert (pipe.sampler.attention, pipe.sampler.cache, pipe.sampler.block_len) == ("causal", "causal", 1)
    pipe(["the"], answer_len=8)
    assert pipe.last_stats["nfe"] <= 8  # one forward per token: the prompt, then each token but the last


def test_init_run_starts_from_an_exported_model_and_certainty_forcing_distils_it(assets, tmp_path):
    from omnidiff.models.hf import OmniDiffModel

    first = train(config(assets, tmp_path / "teacher", "train.steps=6"))
    teacher = OmniDiffModel.from_pretrained(first["model"]).model
    start = train(config(assets, tmp_path / "same", "train.steps=1", "optim.lr=1e-12", "optim.warmup_steps=0",
                         f"model.init_run={first['model']}", "model.preset=tiny"))
    again = OmniDiffModel.from_pretrained(start["model"]).model
    for (name, a), b in zip(teacher.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), f"{name} did not start from the exported model"
    summary = train(config(assets, tmp_path / "distil", "train.steps=3", f"model.init_run={first['model']}",
                           "objective.kind=certainty_forcing", "train.eval_every=3", "train.eval_batches=1"))
    metrics = [json.loads(line) for line in (tmp_path / "distil" / "metrics.jsonl").read_text().splitlines()]
    assert all("certainty" in m and m["own_answers_differ"] >= 0 for m in metrics if m["split"] == "train")
    assert math.isfinite(summary["val"]["elbo"])
    with pytest.raises(ValueError, match="set model.init_run"):
        train(config(assets, tmp_path / "nope", "train.steps=1", "objective.kind=certainty_forcing"))
