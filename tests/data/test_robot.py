"""MetaWorld source and robot builder: task checks, rollout shapes, written members, action chunks aligned to the episode."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from omnidiff.data.shards import ShardStream, split_shards

mw = pytest.importorskip("omnidiff.data.sources.metaworld")
pytest.importorskip("metaworld")

ROOT = Path(__file__).resolve().parents[2]


def run_robot_builder(*argv: str) -> int:
    old = sys.argv
    sys.argv = ["build_robot.py", *argv]
    try:
        runpy.run_path(str(ROOT / "data" / "build_robot.py"), run_name="__main__")
        return 0
    except SystemExit as exit_:
        return exit_.code
    finally:
        sys.argv = old


def read_split(directory: Path, split: str, count: int) -> list[dict]:
    stream = iter(ShardStream(split_shards(directory, split), shuffle=False))
    return [next(stream) for _ in range(count)]


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(ValueError) as err:
        mw.check_task("push-v2")
    message = str(err.value)
    assert "push-v2" in message and "push-v3" in message and "reach-v3" in message and "door-open-v3" in message
    assert len(mw.valid_tasks()) == 50 and set(mw.valid_tasks()) == set(mw.TASK_INSTRUCTIONS)
    with pytest.raises(ValueError, match="valid tasks"):
        mw.rollout("fly-v3", 0)


def test_every_task_has_an_instruction_and_paraphrases():
    for task in mw.valid_tasks():
        texts = mw.instructions(task)
        assert len(texts) >= 3 and len(set(texts)) == len(texts) and all(t.strip() for t in texts)


def test_rollout_has_consistent_lengths_and_is_deterministic():
    a = mw.rollout("reach-v3", 5, size=32, max_steps=10)
    b = mw.rollout("reach-v3", 5, size=32, max_steps=10)
    assert a.num_steps == 10 and a.frames.shape == (10, 32, 32, 3) and a.frames.dtype == np.uint8
    assert a.proprio.shape == (10, mw.PROPRIO_DIM) and a.actions.shape == (10, mw.ACTION_DIM)
    assert a.success.shape == (10,) and a.actions.dtype == np.float32 and np.abs(a.actions).max() <= 1.0
    assert a.frames.std() > 5  # a real scene, not a blank buffer
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
    c = mw.rollout("reach-v3", 6, size=32, max_steps=10, render=False)
    assert c.frames.shape == (0, 32, 32, 3) and c.num_steps == 10 and not np.array_equal(c.proprio, a.proprio)


def test_expert_solves_reach():
    episode = mw.rollout("reach-v3", 1, size=16, max_steps=150, render=False)
    assert episode.succeeded and episode.success[-1] and not episode.success[:-1].any()


def test_builder_writes_members_and_chunks_line_up_with_the_episode(tmp_path):
    out = tmp_path / "robot"
    code = run_robot_builder("--out", str(out), "--num", "1", "--seed", "2", "--tasks", "reach-v3", "--size", "32",
                             "--max-steps", "8", "--horizon", "4", "--keep-failed")
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] == 8 and manifest["splits"]["train"]["episodes_kept"] == 1
    assert manifest["tasks"] == ["reach-v3"] and manifest["success_rate"] == 0.0
    assert len(manifest["train_action_stats"]["p99"]) == 4
    samples = read_split(out, "train", 8)
    first = samples[0]
    assert {"png", "actions.npy", "proprio.npy", "json"} <= set(first)
    assert first["png"].size == (32, 32) and first["proprio.npy"].shape == (4,)
    meta = first["json"]
    assert meta["task"] == "reach-v3" and meta["instruction"] == "reach the goal" and len(meta["paraphrases"]) >= 2
    assert [s["json"]["step"] for s in samples] == list(range(8))
    # the episode replays from its stored seed, and every chunk is the next H actions, padded at the end
    episode = mw.rollout("reach-v3", meta["seed"], size=32, max_steps=8)
    for t, sample in enumerate(samples):
        chunk = sample["actions.npy"]
        assert chunk.shape == (4, 4) and chunk.dtype == np.float32
        expected = episode.actions[[min(t + k, 7) for k in range(4)]]
        assert np.array_equal(chunk, expected)
        assert np.array_equal(sample["proprio.npy"], episode.proprio[t])
        assert np.array_equal(np.asarray(sample["png"]), episode.frames[t])


def test_builder_drops_failed_episodes_and_refuses_bad_input(tmp_path, capsys):
    code = run_robot_builder("--out", str(tmp_path / "r"), "--num", "1", "--tasks", "reach-v3", "--size", "16",
                             "--max-steps", "3")
    assert code == 0
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] == 0 and manifest["splits"]["train"]["episodes_attempted"] == 1
    assert run_robot_builder("--out", str(tmp_path / "x"), "--num", "2", "--tasks", "reach-v3,fly-v3") == 1
    assert "valid tasks" in capsys.readouterr().err
    assert run_robot_builder("--out", str(tmp_path / "x"), "--num", "0") == 2


def test_action_chunks_pad_by_repeating_the_last_action():
    action_chunks = runpy.run_path(str(ROOT / "data" / "build_robot.py"), run_name="build_robot")["action_chunks"]
    acts = np.arange(6, dtype=np.float32).reshape(3, 2)
    chunks = action_chunks(acts, 4)
    assert chunks.shape == (3, 4, 2)
    assert chunks[0].tolist() == [[0, 1], [2, 3], [4, 5], [4, 5]] and chunks[2].tolist() == [[4, 5]] * 4


def test_builder_output_does_not_depend_on_the_number_of_workers(tmp_path):
    common = ["--num", "3", "--seed", "4", "--tasks", "reach-v3,push-v3", "--size", "16", "--max-steps", "6",
              "--horizon", "2", "--keep-failed"]
    assert run_robot_builder("--out", str(tmp_path / "one"), *common) == 0
    assert run_robot_builder("--out", str(tmp_path / "two"), *common, "--workers", "2") == 0
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())
    two = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert one["per_task"] == two["per_task"] and two["workers"] == 2
    for split in ("train", "val", "test"):
        count = one["splits"][split]["count"]
        assert count == two["splits"][split]["count"] > 0
        for a, b in zip(read_split(tmp_path / "one", split, count), read_split(tmp_path / "two", split, count), strict=True):
            assert a["json"] == b["json"]
            assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in ("png", "actions.npy", "proprio.npy"))


def test_builder_rejects_zero_workers(tmp_path, capsys):
    assert run_robot_builder("--out", str(tmp_path / "robot"), "--num", "1", "--workers", "0") == 1
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "robot").exists()
