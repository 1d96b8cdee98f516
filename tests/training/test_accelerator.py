"""DeepSpeed's accelerator follows train.device: derived by train.py, refused when it disagrees."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omnidiff.training import distributed
from omnidiff.training.accelerator import accelerator_for, select_accelerator

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR")


@pytest.mark.parametrize("device, accelerator", [("cpu", "cpu"), ("cuda", "cuda"), ("cuda:3", "cuda")])
def test_accelerator_of_a_device(device, accelerator):
    assert accelerator_for(device) == accelerator


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:0", "mps", ""])
def test_unknown_devices_are_refused(device):
    with pytest.raises(ValueError, match="train.device must be 'cpu', 'cuda' or 'cuda:N'"):
        accelerator_for(device)


def test_select_sets_the_variable_and_keeps_a_consistent_one():
    env = {}
    assert select_accelerator("cuda:1", env) == "cuda" and env == {"DS_ACCELERATOR": "cuda"}
    env = {"DS_ACCELERATOR": "cpu"}
    assert select_accelerator("cpu", env) == "cpu" and env == {"DS_ACCELERATOR": "cpu"}


def test_select_refuses_a_variable_that_contradicts_the_device():
    env = {"DS_ACCELERATOR": "cpu"}
    with pytest.raises(ValueError, match="DS_ACCELERATOR=cpu is set in the environment but train.device='cuda' "
                                         "needs DS_ACCELERATOR=cuda"):
        select_accelerator("cuda", env)
    assert env == {"DS_ACCELERATOR": "cpu"}


def test_the_trainer_refuses_a_deepspeed_on_another_accelerator(monkeypatch):
    distributed.check_accelerator("cpu")  # the tests' DeepSpeed runs on CPU (conftest)
    with pytest.raises(ValueError, match="DeepSpeed runs on its cpu accelerator but train.device='cuda' needs cuda"):
        distributed.check_accelerator("cuda")

    class CudaAccelerator:
        def device_name(self):
            return "cuda"

    monkeypatch.setattr(distributed, "get_accelerator", CudaAccelerator)
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no GPU is visible; use train.device=cpu"):
        distributed.check_accelerator("cuda:0")


def run_train_py(code: str, env_extra: dict, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS} | env_extra
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)


def test_train_py_derives_the_accelerator_before_deepspeed_is_imported(tmp_path):
    # No DS_ACCELERATOR in the environment: train.device=cuda must give DeepSpeed its CUDA
    # accelerator (even on this GPU-less machine; the run then stops at the missing tokenizer).
    code = ("import train; rc = train.main(['train.device=cuda', 'tokenizers.text=/no/such/tokenizer', "
            f"'train.out={tmp_path / 'run'}']); "
            "from deepspeed.accelerator import get_accelerator; print('RESULT', rc, get_accelerator().device_name())")
    proc = run_train_py(code, {}, tmp_path)
    assert "RESULT 2 cuda" in proc.stdout, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_train_py_refuses_a_contradicting_variable(tmp_path):
    code = (f"import sys, train; rc = train.main(['train.device=cpu', 'train.out={tmp_path / 'run'}']); "
            "print('RESULT', rc, 'deepspeed' in sys.modules)")
    proc = run_train_py(code, {"DS_ACCELERATOR": "cuda"}, tmp_path)
    assert "RESULT 2 False" in proc.stdout, proc.stderr[-2000:]
    assert "DS_ACCELERATOR=cuda is set in the environment but train.device='cpu' needs DS_ACCELERATOR=cpu" \
        in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
