"""``tokenizers/train_text_bpe.py --task-data``: the words the tasks answer with become whole tokens."""

import json
import subprocess
import sys
from pathlib import Path

from omnidiff.data.builder import write_split
from omnidiff.tokenization.text import TextTokenizer
from tests.fixtures import build_text_dataset

SCRIPT = Path(__file__).resolve().parents[2] / "tokenizers" / "train_text_bpe.py"


def build_task_dataset(root: Path) -> Path:
    out = root / "scenes"
    samples = ({"__key__": f"train-{i:05d}", "txt": "a mauvish quadrangle",
                "json": {"captions": ["a mauvish quadrangle", "one mauvish quadrangle"],
                         "qa": [["what colour is the quadrangle", "mauvish"]]}} for i in range(150))
    write_split(out, "train", samples, 64)
    return out


def train(tmp_path: Path, name: str, *extra: str) -> tuple[TextTokenizer, dict]:
    out = tmp_path / name
    done = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "text"), "--out", str(out),
                           "--vocab-size", "300", *extra], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return TextTokenizer.load(out), json.loads((out / "report.json").read_text())


def test_task_texts_make_task_words_single_tokens(tmp_path):
    build_text_dataset(tmp_path)
    tasks = build_task_dataset(tmp_path)
    corpus_only, _ = train(tmp_path, "corpus")
    with_tasks, report = train(tmp_path, "tasks", "--task-data", str(tasks))
    assert len(corpus_only.encode(" quadrangle")) > 1
    assert len(with_tasks.encode(" quadrangle")) == 1 and len(with_tasks.encode(" mauvish")) == 1
    assert report["task_texts"] == 150 * 4
    assert {"quadrangle", "mauvish"}.isdisjoint(report["task_words_split"])  # rarer words may still split at 300 ids


def test_missing_task_data_is_a_clear_error(tmp_path):
    build_text_dataset(tmp_path)
    done = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "text"), "--out", str(tmp_path / "o"),
                           "--task-data", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert done.returncode == 1 and "no train shards" in done.stderr and "Traceback" not in done.stderr
