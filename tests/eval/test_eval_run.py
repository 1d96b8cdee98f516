"""``python -m omnidiff.eval --run RUN`` on an untrained model and freshly built shape scenes: the plumbing."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from omnidiff.eval.__main__ import evaluate_run
from tests.fixtures import build_multimodal_model

ROOT = Path(__file__).resolve().parents[2]


def shapes_run(tmp_path: Path, streams: tuple[tuple[str, int], ...]) -> Path:
    """An untrained run folder whose config trains ``streams`` ((task, answer length)) on 40 fresh scenes."""
    data = tmp_path / "shapes"
    subprocess.run([sys.executable, "data/build_shapes.py", "--out", str(data), "--num", "40", "--size", "32"],
                   cwd=ROOT, check=True, capture_output=True)
    run = tmp_path / "run"
    run.mkdir()
    build_multimodal_model(run)
    tasks = [{"task": t, "path": str(data), "answer_len": n} for t, n in streams]
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"tasks": tasks}}))
    return run


def test_evaluate_run_scores_every_task_and_writes_results(tmp_path):
    run = shapes_run(tmp_path, (("caption", 12), ("vqa", 4), ("t2i", 66)))
    (run / "summary.json").write_text(json.dumps({"val": {"elbo": 3.5}}))
    results = evaluate_run(run, run / "results", num=3, rollouts=0)
    assert set(results) == {"caption:shapes", "vqa:shapes", "t2i:shapes", "training"}
    # 40 scenes leave 2 in the val split: each is scored once, not repeated up to num=3
    assert 0 <= results["vqa:shapes"]["metrics"]["accuracy"] <= 1 and results["vqa:shapes"]["metrics"]["n"] == 2
    keys = [ex["key"] for ex in results["caption:shapes"]["examples"]]
    assert len(keys) == len(set(keys)) == 2
    assert 0 <= results["t2i:shapes"]["metrics"]["objects_correct"] <= 1
    assert "shape_recall" in results["caption:shapes"]["metrics"]
    assert (run / "results" / "t2i.png").exists() and "| vqa:shapes |" in (run / "results" / "results.md").read_text()


def test_eval_cli_bad_run_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "omnidiff.eval", "--run", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "written by train.py" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_scores_chosen_streams_with_a_chosen_sampler(tmp_path):
    from omnidiff.eval.__main__ import parse_sampler

    run = shapes_run(tmp_path, (("caption", 12), ("vqa", 4)))
    sampler = parse_sampler("strategy=low_confidence, steps=2,block_len=none")
    assert sampler == {"strategy": "low_confidence", "steps": 2, "block_len": None}
    (run / "results").mkdir()
    (run / "results" / "results.json").write_text(json.dumps({"caption:shapes": {"metrics": {"exact": 0.5}, "examples": []}}))
    results = evaluate_run(run, run / "results", num=2, rollouts=0, tasks=["vqa:shapes"], sampler=sampler)
    assert set(results) == {"vqa:shapes", "caption:shapes"}  # the earlier caption scores are kept
    assert json.loads((run / "results" / "results.json").read_text())["caption:shapes"]["metrics"]["exact"] == 0.5
    # two denoising steps (the first encodes the prompt too), not one step per answer token
    assert results["vqa:shapes"]["metrics"]["decode"]["nfe"] == 2

    for args, message in ((["--sampler", "stepz=2"], "key=value pairs of"), (["--tasks", "asr:speech"], "not streams of"),
                          (["--sampler", "steps=0"], "steps")):
        proc = subprocess.run([sys.executable, "-m", "omnidiff.eval", "--run", str(run), "--num", "1", *args], cwd=ROOT,
                              capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_closed_loop_runs_every_task_of_the_robot_dataset(tmp_path, monkeypatch):
    """The first held-out robot steps come from two of the five tasks; episodes run on all five."""
    import omnidiff.eval.sim as sim
    import omnidiff.eval.tasks as T
    from omnidiff.eval.__main__ import dataset_tasks, evaluate_task

    data = tmp_path / "robot"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"tasks": ["reach-v3", "push-v3", "door-open-v3"]}))
    assert dataset_tasks(str(data)) == ["reach-v3", "push-v3", "door-open-v3"]
    assert dataset_tasks(str(tmp_path / "missing")) is None
    asked = []
    monkeypatch.setattr(T, "evaluate_vla", lambda pipe, samples: ({}, []))
    monkeypatch.setattr(sim, "success_rates", lambda pipe, tasks, seeds: (asked.append((tasks, seeds)), ({}, []))[1])
    samples = [{"json": {"task": "push-v3"}}]
    evaluate_task("vla", None, samples, 33, tmp_path, rollouts=2, robot_tasks=dataset_tasks(str(data)))
    evaluate_task("vla", None, samples, 33, tmp_path, rollouts=2)
    assert asked == [(["reach-v3", "push-v3", "door-open-v3"], [10_000, 10_001]), (["push-v3"], [10_000, 10_001])]


def test_eval_passes_the_robot_execution_options_to_the_policy(tmp_path):
    import argparse

    from omnidiff.eval.__main__ import policy_options

    opts = argparse.Namespace(execute_steps=2, ensemble_decay=None)
    assert policy_options(opts) == {"execute_steps": 2}
    assert policy_options(argparse.Namespace(execute_steps=None, ensemble_decay=0.1)) == {"ensemble_decay": 0.1}
    assert policy_options(argparse.Namespace(execute_steps=None, ensemble_decay=None)) is None
    proc = subprocess.run([sys.executable, "-m", "omnidiff.eval", "--run", str(tmp_path), "--execute-steps", "2",
                           "--ensemble-decay", "0.1"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr and "Traceback" not in proc.stderr
