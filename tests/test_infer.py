"""infer.py: a command table with clear errors and exit status 2, and text generation from an exported model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omnidiff.models.hf import OmniDiffConfig, OmniDiffModel
from omnidiff.models.presets import preset_config
from omnidiff.tokenization.registry import TokenizerSet
from tests.fixtures import build_text_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def infer(*args):
    return subprocess.run([sys.executable, "infer.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    tok_dir = build_text_tokenizer(root)
    vocab = TokenizerSet.load({"text": tok_dir}).build_vocab()
    OmniDiffModel(OmniDiffConfig.from_parts(preset_config("debug", vocab_size=len(vocab)), vocab)).save_pretrained(
        root / "model")
    return root / "model", tok_dir


def test_text_generation_runs_and_reports_stats(exported):
    model, tok = exported
    proc = infer("text", "--model", str(model), "--tokenizer", str(tok), "--prompt", "the red circle",
                 "--answer-len", "8", "--strategy", "threshold", "--block-len", "4")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["prompt"] == "the red circle" and isinstance(out["continuation"], str) and out["nfe"] >= 2


@pytest.mark.parametrize("args, message", [
    (["caption", "--model", "x"], "needs --image"),
    (["paint", "--model", "x"], "unknown task"),
    (["text", "--model", "/no/such/model", "--prompt", "hi"], "is not a model folder"),
])
def test_bad_input(args, message):
    proc = infer(*args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_empty_prompt_and_wrong_tokenizer(exported, tmp_path):
    model, tok = exported
    proc = infer("text", "--model", str(model), "--tokenizer", str(tok), "--prompt", "  ")
    assert proc.returncode == 2 and "prompt is empty" in proc.stderr
    from omnidiff.tokenization.text import TextTokenizer
    from tests.fixtures import text_docs

    TextTokenizer.train(text_docs(50), vocab_size=280, show_progress=False).save(tmp_path / "other")
    proc = infer("text", "--model", str(model), "--tokenizer", str(tmp_path / "other"), "--prompt", "hi")
    assert proc.returncode == 2 and "use the tokenizers the model was trained with" in proc.stderr
