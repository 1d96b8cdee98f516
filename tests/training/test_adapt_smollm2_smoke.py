"""The SmolLM2 adaptation recipe on the real model, shrunk to two steps; then infer.py and infilling on it.

Slow (~1 minute on one thread) and skipped unless ``make smollm2`` has converted the model and the
long-text corpus is built (``runs/data/text_long``, `make adapt-smollm2` builds it). The same run
by hand is the smoke command in docs/adaptation.md.
"""

import json
import math
from pathlib import Path

import pytest

import infer
import train

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = ROOT / "runs" / "pretrained" / "smollm2-135m"
TEXT_LONG = ROOT / "runs" / "data" / "text_long"
SMOKE = ["train.steps=2", "data.batch_size=2", f"data.tasks=[{{task: text, path: {TEXT_LONG}, answer_len: 32}}]",
         "objective.anneal_steps=2", "train.eval_every=2", "train.eval_batches=1", "train.sample_every=0",
         "train.save_every=0", "train.log_every=1"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SMOLLM2 / "model.safetensors").is_file(), reason="run `make smollm2` first"),
    pytest.mark.skipif(not (TEXT_LONG / "manifest.json").is_file(),
                       reason="runs/data/text_long is not built (see configs/adapt_smollm2.yaml)"),
]


def test_the_recipe_trains_exports_and_decodes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipe's paths are relative to the repository
    run = tmp_path / "adapt"
    assert train.main(["--config", "configs/adapt_smollm2.yaml", f"train.out={run}", *SMOKE]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["loss_history"]) == 2 and all(math.isfinite(v) for v in summary["loss_history"])
    assert math.isfinite(summary["val"]["elbo"])
    capsys.readouterr()

    assert infer.main(["text", "--model", str(run / "model"), "--prompt", "And God said", "--answer-len", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out["continuation"], str) and out["nfe"] >= 1

    from omnidiff.pipelines import TextPipeline

    pipe = TextPipeline.from_pretrained(run / "model")
    assert pipe.settings["shift"] is True and pipe.settings["attention"] == "prefix"
    middle = pipe.fill_middle(["In the beginning God created"], [" and the earth."], middle_len=3)
    assert len(middle) == 1 and isinstance(middle[0], str)
