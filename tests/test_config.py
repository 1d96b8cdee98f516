"""Config: defaults < YAML < dotted overrides; unknown keys name the nearest valid one."""

from pathlib import Path

import pytest

from omnidiff.config import load_config, save_config


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1.0e-2\ntrain:\n  steps: 7\ndata:\n  tasks:\n    - {task: text, answer_len: 16}\n")
    cfg = load_config(path, ["optim.lr=3e-4", "distributed.zero_stage=2", "objective.mask_rate_clip=[0.3, 0.8]"])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.train.steps == 7 and cfg.distributed.zero_stage == 2
    assert cfg.data.tasks[0].answer_len == 16 and cfg.optim.warmup_steps == 50  # default kept
    assert cfg.objective.mask_rate_clip == (0.3, 0.8)
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr'; did you mean 'lr'"),
    ("traim.steps=3", "did you mean 'train'"),
    ("train.steps=many", "train.steps must be int"),
    ("optim.lr=fast", "optim.lr must be a number"),
    ("optim.lr", "must look like key.sub=value"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("path", sorted(p.name for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")))
def test_every_recipe_loads(path):
    """Every recipe in configs/ parses against the dataclasses (unknown keys would be errors)."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / path, [])
    assert cfg.data.tasks and cfg.tokenizers
    assert cfg.data.batch_size > 0 and cfg.train.steps > 0


def test_data_root_joins_relative_task_paths_and_leaves_absolute_ones(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  root: built\n  tasks:\n    - {task: caption, path: shapes}\n"
                      "    - {task: text, path: /abs/text}\nval_data:\n  - {task: caption, path: shapes, split: val}\n")
    cfg = load_config(recipe, ["data.root=elsewhere/data"])
    assert [t.path for t in cfg.data.tasks] == ["elsewhere/data/shapes", "/abs/text"]
    assert cfg.val_data[0].path == "elsewhere/data/shapes"
    assert cfg.data.root == ""  # the resolved config holds joined paths, so reloading it joins nothing twice
