"""ZeRO-1/2/3 with 2 CPU ranks under torchrun (AdamW, and Muon sharded): finite loss, checkpoint, resume, export."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import build_text_dataset, build_text_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("stage, optimizer", [(1, "adamw"), (2, "adamw"), (3, "adamw"), (2, "muon"), (3, "muon")])
def test_two_ranks_train_save_resume(stage, optimizer, tmp_path):
    data, tok = build_text_dataset(tmp_path), build_text_tokenizer(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                               "MASTER_PORT")}
    base = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "train.py",
            f"tokenizers.text={tok}", f"data.tasks=[{{task: text, path: {data}, answer_len: 16}}]", "data.batch_size=4",
            f"distributed.zero_stage={stage}", f"optim.name={optimizer}", f"train.out={tmp_path / 'run'}", "train.steps=8", "train.eval_every=0",
            "train.tensorboard=false", "optim.lr=3e-3", "optim.warmup_steps=2"]
    first = subprocess.run(base + ["train.stop_at=4"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(base + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    hist = summary["loss_history"]
    assert len(hist) == 8 and all(h == h and h < 100 for h in hist)
    assert sum(hist[-3:]) < sum(hist[:3])
    assert (tmp_path / "run" / "model" / "config.json").exists()
