"""Task metrics during training: logged against training minutes, drawn as curves, reported against targets."""

import json

import pytest

from omnidiff.config import load_config
from omnidiff.eval.curves import read_curves
from omnidiff.training.trainer import train
from tests.fixtures import build_text_dataset, build_text_tokenizer


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("task_eval")
    return build_text_dataset(root), build_text_tokenizer(root)


def config(assets, out, *extra):
    data, tok = assets
    return load_config(None, [
        "model.preset=debug", f"tokenizers.text={tok}", f"train.out={out}", "train.tensorboard=false",
        "data.batch_size=4", f"data.tasks=[{{task: text, path: {data}, answer_len: 8}}]",
        "optim.lr=3e-3", "optim.warmup_steps=2", "train.eval_every=0", "train.log_every=1",
        "train.task_eval_every=3", "train.task_eval_num=2", *extra])


def task_rows(run):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "task_eval"]


def test_task_scores_are_logged_against_training_minutes_and_survive_resume(assets, tmp_path):
    run = tmp_path / "run"
    train(config(assets, run, "train.steps=6", "train.stop_at=3", "train.export=false"))
    train(config(assets, run, "train.steps=6", "train.export=false"), resume=True)
    rows = task_rows(run)
    assert [r["step"] for r in rows] == [3, 6]
    assert 0 < rows[0]["train_minutes"] < rows[1]["train_minutes"]  # the clock carries across --resume
    keys = [k for k in rows[1] if k.endswith("/token_accuracy")]
    assert len(keys) == 1 and 0.0 <= rows[1][keys[0]] <= 1.0
    curves = read_curves(run / "metrics.jsonl")
    (stream,) = curves
    assert [m for m, _ in curves[stream]["token_accuracy"]] == [rows[0]["train_minutes"], rows[1]["train_minutes"]]
    train_rows = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    assert train_rows[-1]["train_minutes"] == pytest.approx(rows[1]["train_minutes"], rel=0.5)


def test_report_writes_targets_curves_and_json(tmp_path):
    from omnidiff.eval.report import main

    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    results = {"caption:shapes": {"metrics": {"exact": 0.85, "pair_precision": 0.97, "pair_recall": 0.9, "n": 4},
                                  "examples": []},
               "vla:robot": {"metrics": {"within_one_bin": 0.5, "sim_success": {"push": 1.0, "reach": 0.5}, "n": 100,
                                         "episodes": 8}, "examples": []},
               "asr:speech": {"metrics": {"wer": 0.25}, "examples": []}}
    (run / "results" / "results.json").write_text(json.dumps(results))
    rows = [{"step": s, "split": "task_eval", "train_minutes": m, "caption:shapes/exact": e}
            for s, m, e in ((10, 1.0, 0.2), (20, 2.0, 0.6))]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    doc, out_json = tmp_path / "docs" / "results.md", tmp_path / "docs" / "results.json"
    assert main(["--run", str(run), "--doc", str(doc), "--json", str(out_json)]) == 0
    table = json.loads(out_json.read_text())
    assert table["caption:shapes"] == {"pair_recall": 0.9, "pair_precision": 0.97, "exact": 0.85}
    assert table["vla:robot"]["sim_success"] == 0.75 and table["asr:speech"]["wer"] == 0.25
    text = doc.read_text()
    assert "| caption:shapes | pair_recall | 0.900 | 4 | >= 0.95 | no |" in text
    assert "| asr:speech | wer | 0.250 | - | <= 0.1 | no |" in text and "results/curves.png" in text
    assert "| vla:robot | sim_success | 0.750 | 8 | >= 0.8 | no |" in text  # episodes, not held-out samples
    assert "| vla:robot | within_one_bin | 0.500 | 100 |" in text
    assert (tmp_path / "docs" / "results" / "curves.png").stat().st_size > 1000


def test_report_without_an_evaluation_says_what_to_run(tmp_path, capsys):
    from omnidiff.eval.report import main

    assert main(["--run", str(tmp_path)]) == 2
    assert "python -m omnidiff.eval --run" in capsys.readouterr().err


def test_report_puts_the_ar_twin_beside_the_run(tmp_path, capsys):
    from omnidiff.eval.report import main

    for name, exact, wer in (("run", 0.5, 0.4), ("twin", 0.875, 0.3)):
        (tmp_path / name / "results").mkdir(parents=True)
        results = {"caption:shapes": {"metrics": {"exact": exact}, "examples": []},
                   "asr:speech": {"metrics": {"wer": wer}, "examples": []}}
        if name == "run":
            results["tts:speech"] = {"metrics": {"wer_generated": 1.0}, "examples": []}
        (tmp_path / name / "results" / "results.json").write_text(json.dumps(results))
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps({"step": 8, "split": "train", "train_minutes": 2.5}) + "\n")
    doc, out_json = tmp_path / "results.md", tmp_path / "results.json"
    assert main(["--run", str(tmp_path / "run"), "--twin", str(tmp_path / "twin"), "--doc", str(doc),
                 "--json", str(out_json)]) == 0
    text = doc.read_text()
    assert "| caption:shapes | exact | 0.500 | - | >= 0.8 | no | 0.875 |" in text
    assert "| asr:speech | wer | 0.400 | - | <= 0.1 | no | 0.300 |" in text
    assert "| tts:speech | whisper_wer | 1.000 | - | <= 0.2 | no | - |" in text  # the twin has no such row
    assert "Trained 8 steps in 2.5 training minutes" in text.split("AR twin")[1]
    assert json.loads(out_json.read_text())["caption:shapes"] == {"exact": 0.5}  # the JSON stays the run's own
    assert "Not the same recipe" not in text  # neither run saved a config: nothing to compare
    assert main(["--run", str(tmp_path / "run"), "--twin", str(tmp_path / "missing"), "--doc", str(doc)]) == 2
    assert "missing" in capsys.readouterr().err


def test_report_says_where_the_twin_recipe_differs(tmp_path):
    from omnidiff.eval.report import main

    for name, steps, tts_path, vla_weight in (("run", 10000, "runs/data/speech_tts", 4),
                                              ("twin", 5000, "runs/data/speech", 2)):
        (tmp_path / name / "results").mkdir(parents=True)
        stream = f"tts:{tts_path.rsplit('/', 1)[1]}"
        (tmp_path / name / "results" / "results.json").write_text(json.dumps(
            {"caption:shapes": {"metrics": {"exact": 0.5}, "examples": []},
             stream: {"metrics": {"wer_generated": 0.7}, "examples": []}}))
        (tmp_path / name / "config.yaml").write_text(
            f"train: {{steps: {steps}}}\ndata:\n  tasks:\n    - {{task: caption, path: runs/data/shapes, weight: 2}}\n"
            f"    - {{task: tts, path: {tts_path}, weight: 0.4, start: 0.2}}\n"
            f"    - {{task: vla, path: runs/data/robot, weight: {vla_weight}, start: 0.2}}\n")
    doc = tmp_path / "results.md"
    assert main(["--run", str(tmp_path / "run"), "--twin", str(tmp_path / "twin"), "--doc", str(doc),
                 "--twin-note", "The robot set was rebuilt with 400 episodes after the twin trained."]) == 0
    text = doc.read_text()
    assert "the twin trained 5000 steps, the run 10000" in text
    assert "only the run has: tts:speech_tts (weight 0.4, start 0.2); only the twin: tts:speech (weight 0.4" in text
    assert "streams mixed differently: vla:robot weight 4 (twin 2);" in text
    assert text.count("vla:robot") == 1  # a reweighted stream is not also listed as only the run's
    assert "caption:shapes" not in text.split("Not the same recipe")[1].split("\n")[0]  # shared streams are not listed
    assert "rebuilt with 400 episodes" in text
    assert "| tts:speech_tts | whisper_wer | 0.700 |" in text  # the one-voice stream has its headline too
