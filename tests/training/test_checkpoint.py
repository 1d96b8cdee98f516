"""Checkpoint pruning (``train.keep_checkpoints``): old step folders go, the newest and ``latest`` stay."""

import json
from pathlib import Path

import pytest
import torch

from omnidiff.config import load_config
from omnidiff.training import checkpoint


class FakeEngine:
    """Stands in for DeepSpeed: its checkpoint is one small file."""

    def save_checkpoint(self, save_dir: str, tag: str, save_latest: bool) -> None:
        (Path(save_dir) / tag).mkdir(parents=True)
        (Path(save_dir) / tag / "state.json").write_text("{}")


class FakeVocab:
    def save(self, directory: Path) -> None:
        (Path(directory) / "omnidiff_vocab.json").write_text("{}")


def save(run_dir: Path, step: int, keep: int) -> Path:
    return checkpoint.save_checkpoint(FakeEngine(), run_dir, step, rank=0, train_state={"step": step},
                                      data_state={}, rng_state={"torch": torch.zeros(2)}, config_text="",
                                      vocab=FakeVocab(), keep=keep)


def names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in checkpoint.checkpoint_dir(run_dir).iterdir())


def test_four_saves_with_keep_two_leave_the_two_newest(tmp_path):
    for step in (10, 20, 30, 40):
        save(tmp_path, step, keep=2)
    assert names(tmp_path) == ["latest", "step_00000030", "step_00000040"]
    latest = checkpoint.latest_checkpoint(tmp_path)
    assert latest.name == "step_00000040"
    assert json.loads((latest / "train_state.json").read_text())["step"] == 40


def test_a_failed_save_deletes_nothing(tmp_path):
    class FailingEngine(FakeEngine):
        def save_checkpoint(self, save_dir: str, tag: str, save_latest: bool) -> None:
            raise OSError("disk full")

    for step in (1, 2):
        save(tmp_path, step, keep=2)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(FailingEngine(), tmp_path, 3, rank=0, train_state={}, data_state={},
                                   rng_state={}, config_text="", vocab=FakeVocab(), keep=2)
    assert names(tmp_path) == ["latest", "step_00000001", "step_00000002"]
    assert checkpoint.latest_checkpoint(tmp_path).name == "step_00000002"


def test_a_failed_delete_keeps_the_new_checkpoint(tmp_path, monkeypatch):
    save(tmp_path, 1, keep=1)

    rmtree = checkpoint.shutil.rmtree

    def refuse_old(path, *args, **kwargs):
        if str(path).endswith(".pruning"):
            raise PermissionError("read-only")
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.shutil, "rmtree", refuse_old)
    save(tmp_path, 2, keep=1)
    assert checkpoint.latest_checkpoint(tmp_path).name == "step_00000002"
    assert names(tmp_path) == ["latest", "step_00000001.pruning", "step_00000002"]


def test_keep_zero_keeps_every_checkpoint(tmp_path):
    for step in (1, 2, 3, 4):
        save(tmp_path, step, keep=0)
    assert names(tmp_path) == ["latest", *(f"step_{s:08d}" for s in (1, 2, 3, 4))]


def test_pruning_touches_only_complete_older_step_folders(tmp_path):
    root = checkpoint.checkpoint_dir(tmp_path)
    save(tmp_path, 9, keep=0)  # an earlier run in this folder went further
    for other in ("step_00000001", "step_00000002_best", "exports"):  # not checkpoints the trainer completed
        (root / other).mkdir()
    (root / "step_00000003.pruning").mkdir()  # a delete that was interrupted
    for step in (4, 5, 6):
        save(tmp_path, step, keep=1)
    assert names(tmp_path) == ["exports", "latest", "step_00000001", "step_00000002_best", "step_00000006",
                               "step_00000009"]
    assert checkpoint.latest_checkpoint(tmp_path).name == "step_00000006"


def test_prune_refuses_a_count_below_one(tmp_path):
    newest = save(tmp_path, 1, keep=0)
    with pytest.raises(ValueError, match="positive number"):
        checkpoint.prune_checkpoints(tmp_path, 0, newest)


@pytest.mark.parametrize("value, message", [
    ("-1", "train.keep_checkpoints must be >= 0"),
    ("two", "train.keep_checkpoints must be int"),
    ("1.5", "train.keep_checkpoints must be int"),
])
def test_bad_keep_checkpoints_is_refused(value, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [f"train.keep_checkpoints={value}"])


def test_default_keeps_two():
    assert load_config(None, []).train.keep_checkpoints == 2


def test_trainer_prunes_and_resumes_from_the_newest(tmp_path):
    from omnidiff.training.trainer import train
    from tests.fixtures import build_text_dataset, build_text_tokenizer

    data, tok = build_text_dataset(tmp_path), build_text_tokenizer(tmp_path)

    def run(steps: int, resume: bool = False) -> dict:
        return train(load_config(None, [
            "model.preset=debug", f"tokenizers.text={tok}", f"train.out={tmp_path / 'run'}", "train.tensorboard=false",
            "data.batch_size=4", f"data.tasks=[{{task: text, path: {data}, answer_len: 16}}]", "train.eval_every=0",
            f"train.steps={steps}", "train.save_every=1", "train.keep_checkpoints=2", "train.export=false"]),
            resume=resume)

    run(4)
    assert names(tmp_path / "run") == ["latest", "step_00000003", "step_00000004"]
    resumed = run(6, resume=True)
    assert len(resumed["loss_history"]) == 6
    assert names(tmp_path / "run") == ["latest", "step_00000005", "step_00000006"]
