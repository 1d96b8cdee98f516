"""The results page of a run: headline metrics against their targets, learning curves, and the
pictures and sounds the evaluation wrote.

    python -m omnidiff.eval --run runs/results          # held-out evaluation -> RUN/results/
    python -m omnidiff.eval.report --run runs/results --doc docs/results.md --json docs/results.json \
        [--twin runs/results_ar]

Writes ``--doc`` (a table: task, metric, value, target, met; with ``--twin``, a column for the AR twin:
the same recipe trained with ``objective.kind: autoregressive`` and evaluated the same way),
``--json`` (``{task: {metric: value}}`` with the metric names of the table, the run's own values), the learning curves (``curves.png``, from the run's
``task_eval`` rows) and copies of ``t2i.png``, ``vla_rollouts.png`` and the TTS WAVs into the
folder ``<doc stem>/`` beside the page.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

from omnidiff.config import load_config
from omnidiff.eval.curves import plot_curves, read_curves
from omnidiff.files import atomic_write_text

# stream (or, for a task whose headline does not depend on its data set, the task) -> [(headline name,
# metric key in results.json, target, "min" = at least / "max" = at most)]
HEADLINES: dict[str, list[tuple[str, str, float, str]]] = {
    "caption:shapes": [("pair_recall", "pair_recall", 0.95, "min"), ("pair_precision", "pair_precision", 0.95, "min"),
                       ("exact", "exact", 0.80, "min")],
    "caption:digits": [("digit_right", "digit_correct", 0.95, "min")],
    "vqa:shapes": [("exact", "accuracy", 0.90, "min")],
    "t2i:shapes": [("objects_correct", "objects_correct", 0.90, "min")],
    "asr": [("wer", "wer", 0.10, "max")],
    "tts": [("whisper_wer", "wer_generated", 0.20, "max")],  # speech or the one-voice speech_tts the recipes speak from
    "vla:robot": [("sim_success", "sim_success", 0.80, "min"), ("within_one_bin", "within_one_bin", None, "min")],
    "text:text": [("token_accuracy", "token_accuracy", None, "min")],
}


def headline_value(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, dict):  # per-robot-task success rates: their mean
        value = sum(value.values()) / len(value) if value else None
    return float(value) if isinstance(value, int | float) else None


def headlines(results: dict) -> list[dict]:
    rows = []
    for stream, entry in results.items():
        if stream == "training":
            continue
        for name, key, target, sense in HEADLINES.get(stream) or HEADLINES.get(stream.split(":")[0], []):
            value = headline_value(entry["metrics"], key)
            if value is None:
                continue
            met = None if target is None else (value >= target if sense == "min" else value <= target)
            # closed-loop success counts episodes, not held-out samples ("-" for runs scored before episodes were kept)
            n = entry["metrics"].get("episodes") if key == "sim_success" else entry["metrics"].get("n")
            rows.append({"task": stream, "metric": name, "value": round(value, 4), "target": target,
                         "sense": sense, "met": met, "n": n})
    return rows


def training_line(run: Path) -> str:
    """How long the run trained: steps, and minutes inside training steps (evaluation excluded)."""
    steps = minutes = None
    if (run / "metrics.jsonl").exists():
        for line in (run / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            if row.get("split") == "train":
                steps, minutes = row.get("step"), row.get("train_minutes")
    if steps is None or minutes is None:
        return ""
    return f"Trained {steps} steps in {minutes:.1f} training minutes (evaluation excluded)."


def recipe_of(run: Path) -> tuple[int | None, dict[str, tuple[float, float]]]:
    """(train.steps, {stream ``task:path``: (weight, start)}) of a run's saved config.yaml."""
    config_file = run / "config.yaml"
    if not config_file.exists():
        return None, {}
    cfg = load_config(config_file)
    return cfg.train.steps, {f"{t.task}:{Path(t.path).name}": (t.weight, t.start) for t in cfg.data.tasks}


def _stream(name: str, weight_start: tuple[float, float]) -> str:
    return f"{name} (weight {weight_start[0]:g}, start {weight_start[1]:g})"


def twin_differences(run: Path, twin: Path) -> str:
    """What the twin's recipe does not share with the run's, beyond the objective: steps and streams."""
    (run_steps, run_streams), (twin_steps, twin_streams) = recipe_of(run), recipe_of(twin)
    parts = []
    if run_steps != twin_steps:
        parts.append(f"the twin trained {twin_steps} steps, the run {run_steps}")
    changed = []
    for k, v in run_streams.items():
        if k in twin_streams and twin_streams[k] != v:
            fields = [f"{name} {mine:g} (twin {theirs:g})"
                      for name, mine, theirs in zip(("weight", "start"), v, twin_streams[k], strict=True) if mine != theirs]
            changed.append(f"{k} " + " and ".join(fields))
    if changed:
        parts.append("streams mixed differently: " + ", ".join(changed))
    only_run = [_stream(k, v) for k, v in run_streams.items() if k not in twin_streams]
    only_twin = [_stream(k, v) for k, v in twin_streams.items() if k not in run_streams]
    if only_run or only_twin:
        parts.append("streams only the run has: " + (", ".join(only_run) or "none") +
                     "; only the twin: " + (", ".join(only_twin) or "none"))
    return ("**Not the same recipe**: " + "; ".join(parts) + ".") if parts else ""


def markdown(rows: list[dict], run: Path, curves: str | None, assets: list[str], command: str,
             twin: tuple[Path, dict] | None = None, twin_note: str = "") -> str:
    lines = ["# Results", "", f"Run `{run}`, held-out samples; made by `{command}`. {training_line(run)} "
             "*n*: held-out samples scored (for `sim_success`, closed-loop episodes)."]
    head, rule = "| task | metric | value | n | target | met |", "|---|---|---|---|---|---|"
    if twin is not None:
        lines += ["", f"*AR twin*: `{twin[0]}`, the same recipe with `objective.kind: autoregressive` (causal attention, "
                  f"next-token loss), scored on the same samples. {training_line(twin[0])}"]
        differences = " ".join(x for x in (twin_differences(run, twin[0]), twin_note.strip()) if x)
        if differences:
            lines += ["", differences]
        head, rule = head + " AR twin |", rule + "---|"
    lines += ["", head, rule]
    for r in rows:
        target = "-" if r["target"] is None else ((">= " if r["sense"] == "min" else "<= ") + f"{r['target']:g}")
        met = "-" if r["met"] is None else ("yes" if r["met"] else "no")
        n = "-" if r.get("n") is None else r["n"]
        line = f"| {r['task']} | {r['metric']} | {r['value']:.3f} | {n} | {target} | {met} |"
        if twin is not None:
            other = twin[1].get((r["task"], r["metric"]))
            line += " - |" if other is None else f" {other:.3f} |"
        lines.append(line)
    if curves:
        lines += ["", "Learning curves (held-out metrics against training minutes):", "", f"![curves]({curves})"]
    if assets:
        lines += ["", "Outputs: " + ", ".join(f"[{Path(a).name}]({a})" for a in assets)]
    return "\n".join(lines) + "\n"


def read_results(run: Path) -> dict:
    results_file = run / "results" / "results.json"
    if not results_file.exists():
        raise FileNotFoundError(f"{results_file} is missing: run `python -m omnidiff.eval --run {run}` first")
    return json.loads(results_file.read_text())


def write_report(run: Path, doc: Path, json_path: Path | None, command: str, twin_run: Path | None = None,
                 twin_note: str = "") -> list[dict]:
    rows = headlines(read_results(run))
    twin = None
    if twin_run is not None:
        twin = (twin_run, {(r["task"], r["metric"]): r["value"] for r in headlines(read_results(twin_run))})
    assets_dir = doc.parent / doc.stem
    assets_dir.mkdir(parents=True, exist_ok=True)
    curves_rel = None
    curves = read_curves(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else {}
    if curves:
        plot_curves(curves, assets_dir / "curves.png", title=str(run))
        curves_rel = f"{doc.stem}/curves.png"
    assets = []
    for src in [run / "results" / "t2i.png", run / "results" / "vla_rollouts.png",
                *sorted((run / "results" / "tts").glob("*.wav"))]:
        if src.exists():
            shutil.copyfile(src, assets_dir / src.name)
            assets.append(f"{doc.stem}/{src.name}")
    atomic_write_text(doc, markdown(rows, run, curves_rel, assets, command, twin, twin_note))
    if json_path is not None:
        table: dict[str, dict[str, float]] = {}
        for r in rows:
            table.setdefault(r["task"], {})[r["metric"]] = r["value"]
        atomic_write_text(json_path, json.dumps(table, indent=2) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder written by train.py and evaluated")
    parser.add_argument("--doc", type=Path, default=None, help="results page (default: RUN/results.md)")
    parser.add_argument("--json", type=Path, default=None, help="headline numbers as JSON")
    parser.add_argument("--twin", type=Path, default=None,
                        help="the AR twin's run folder (trained and evaluated the same way): a column beside the run's")
    parser.add_argument("--twin-note", default="",
                        help="what else differs between the twin and the run (e.g. data rebuilt since), printed "
                             "under the differences the report finds in their configs")
    args = parser.parse_args(argv)
    doc = args.doc or args.run / "results.md"
    command = "python -m omnidiff.eval.report " + shlex.join(argv if argv is not None else sys.argv[1:])
    try:
        rows = write_report(args.run, doc, args.json, command, args.twin, args.twin_note)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in rows:
        print(f"{r['task']:16s} {r['metric']:16s} {r['value']:.3f}" + ("" if r["met"] is None else
                                                                       ("  met" if r["met"] else "  not met")))
    print(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
