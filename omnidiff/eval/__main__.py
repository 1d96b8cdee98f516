"""Evaluate a training run on every task it was trained on: ``python -m omnidiff.eval --run runs/demo``.

Reads ``RUN/config.yaml`` (which tasks, which datasets) and ``RUN/model`` (weights, tokenizers,
decoding settings), runs each task's pipeline on held-out samples (the ``val`` split), scores the
outputs (`omnidiff.eval.tasks`) and writes to ``RUN/results/`` (or ``--out``):

- ``results.json`` and ``results.md``: the metrics per task and example outputs;
- ``t2i.png``: generated images beside the originals of the same captions;
- ``tts/*.wav``: generated speech; ``vla_rollouts.png``: filmstrips of closed-loop episodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from omnidiff.files import atomic_write_text

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def stream_name(task: str, path: str) -> str:
    """How results, curves and benchmarks name a (task, dataset) stream, e.g. ``caption:shapes``."""
    return f"{task}:{Path(path).name}"


def read_samples(path: str, split: str, num: int) -> list[dict]:
    from omnidiff.data.shards import read_split

    return read_split(path, split, num)


def image_grid(rows: list[list], cell: int = 64, pad: int = 2):
    from PIL import Image

    width = max(len(r) for r in rows)
    grid = Image.new("RGB", (width * (cell + pad) + pad, len(rows) * (cell + pad) + pad), (255, 255, 255))
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            grid.paste(im.convert("RGB").resize((cell, cell), Image.NEAREST), (pad + j * (cell + pad), pad + i * (cell + pad)))
    return grid


def dataset_tasks(path: str) -> list[str] | None:
    """The robot tasks a dataset's manifest lists: closed-loop episodes run on all of them, not only
    on those the first held-out samples happen to come from (two of five in the demo's data)."""
    manifest = Path(path) / "manifest.json"
    if not manifest.exists():
        return None
    return list(json.loads(manifest.read_text()).get("tasks") or []) or None


def evaluate_task(task: str, pipe, samples: list[dict], answer_len: int, out: Path, *, rollouts: int = 0,
                  num: int | None = None, robot_tasks: list[str] | None = None) -> tuple[dict, list[dict]]:
    """(metrics, records) of one task's pipeline on ``samples``; pictures and sounds go into ``out``.
    Closed-loop robot episodes run ``rollouts`` fresh seeds of each of ``robot_tasks`` (default: the
    tasks the samples come from)."""
    from omnidiff.eval import tasks as T

    n_ans, num = answer_len, num or len(samples)
    if task == "caption":
        metrics, records = T.evaluate_caption(pipe, samples, answer_len=n_ans)
    elif task == "vqa":
        metrics, records = T.evaluate_vqa(pipe, samples, answer_len=n_ans)
    elif task == "t2i":
        metrics, records, images = T.evaluate_t2i(pipe, samples, guidance_scale=2.0, answer_len=n_ans)
        scenes = [s for s in samples if (s.get("json") or {}).get("scene")]
        image_grid([[s["png"] for s in scenes[:12]], images[:12]]).save(out / "t2i.png")
        metrics["grid"] = "t2i.png"
    elif task == "asr":
        metrics, records = T.evaluate_asr(pipe, samples, answer_len=n_ans)
    elif task == "tts":
        import soundfile as sf

        few = samples[: max(1, min(num, 32))]  # Whisper runs twice per sample: 32 at most (8 moved WER by 1/8 per clip)
        metrics, records, waves = T.evaluate_tts(pipe, few, answer_len=n_ans)
        (out / "tts").mkdir(exist_ok=True)
        for s, w in zip(few[:4], waves[:4], strict=False):  # written even when empty: silence is a result
            sf.write(out / "tts" / f"{s['__key__']}.wav", w["array"], w["sample_rate"])
    elif task == "vla":
        metrics, records = T.evaluate_vla(pipe, samples)
        if rollouts > 0:
            from omnidiff.eval.sim import success_rates

            robot_tasks = robot_tasks or sorted({(s.get("json") or {}).get("task") for s in samples} - {None})
            rates, episodes = success_rates(pipe, robot_tasks, list(range(10_000, 10_000 + rollouts)))
            metrics["sim_success"] = {k: round(v, 3) for k, v in rates.items()}
            metrics["episodes"] = len(episodes)
            strips = [e.frames for e in episodes[:6] if e.frames]
            if strips:
                image_grid(strips).save(out / "vla_rollouts.png")
                metrics["filmstrips"] = "vla_rollouts.png"
    elif task == "text":
        metrics, records = T.evaluate_text(pipe, samples, n_ans)
    else:
        raise ValueError(f"no evaluator for task {task!r}")
    return metrics, records


def parse_sampler(text: str | None) -> dict:
    """``--sampler`` overrides, ``key=value,key=value``, as SamplerConfig fields; values are read as
    the config loader reads its overrides (YAML), and ``none`` is None."""
    from omnidiff.config import parse_overrides
    from omnidiff.sampling import SamplerConfig

    if not text:
        return {}
    fields = {f.name for f in dataclasses.fields(SamplerConfig)}
    items = [item.strip() for item in text.split(",")]
    for item in items:
        if item.partition("=")[0].strip() not in fields or "=" not in item:
            raise ValueError(f"--sampler takes key=value pairs of {', '.join(sorted(fields))}; got {item!r}")
    overrides = parse_overrides(items)
    return {k: None if isinstance(v, str) and v.lower() == "none" else v for k, v in overrides.items()}


def evaluate_run(run: Path, out: Path, num: int, rollouts: int, split: str = "val", tasks: list[str] | None = None,
                 sampler: dict | None = None, policy: dict | None = None) -> dict:
    """Score every stream the run trained on (or only ``tasks``, stream names such as ``vla:robot``,
    keeping the other streams' scores already in ``out``), each decoded with its pipeline's default
    sampler, with the fields in ``sampler`` replaced; ``policy`` holds `VLAPolicy` keyword arguments
    (``execute_steps``, ``ensemble_decay``)."""
    import yaml
    from tqdm import tqdm

    from omnidiff.pipelines import PIPELINES

    config_file = run / "config.yaml"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} is missing: --run must be a folder written by train.py")
    cfg = yaml.safe_load(config_file.read_text())
    model_dir = run / "model"
    out.mkdir(parents=True, exist_ok=True)
    specs, seen = [], set()
    for t in cfg["data"]["tasks"]:
        if (t["task"], t["path"]) not in seen:
            seen.add((t["task"], t["path"]))
            specs.append(t)
    if tasks:
        unknown = set(tasks) - {stream_name(t["task"], t["path"]) for t in specs}
        if unknown:
            raise ValueError(f"--tasks {', '.join(sorted(unknown))}: not streams of {run} "
                             f"({', '.join(stream_name(t['task'], t['path']) for t in specs)})")
        specs = [t for t in specs if stream_name(t["task"], t["path"]) in tasks]
    pipes: dict = {}
    results: dict = {}
    for spec in tqdm(specs, desc="evaluate", unit="task"):
        task, path = spec["task"], spec["path"]
        name = stream_name(task, path)
        if task not in pipes:
            extra = (policy or {}) if task == "vla" else {}
            pipes[task] = PIPELINES[task].from_pretrained(model_dir, **extra)
            if sampler:
                pipes[task].sampler = dataclasses.replace(pipes[task].default_sampler(), **sampler)
        pipe = pipes[task]
        samples = read_samples(path, split, num)
        n_ans = int(spec["answer_len"])  # decode with the answer length this dataset was trained with
        if not samples:
            raise ValueError(f"{path} has no {split} samples to evaluate {task} on")
        metrics, records = evaluate_task(task, pipe, samples, n_ans, out, rollouts=rollouts, num=num,
                                         robot_tasks=dataset_tasks(path) if task == "vla" else None)
        metrics["decode"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in pipe.last_stats.items()}
        if task == "vla" and policy:
            metrics["policy"] = dict(policy)
        results[name] = {"metrics": metrics, "examples": records[:8]}
    summary_file = run / "summary.json"
    if summary_file.exists():
        results["training"] = {"val": json.loads(summary_file.read_text()).get("val", {})}
    previous = out / "results.json"
    if tasks and previous.exists():  # scoring some streams again keeps the others' earlier scores
        results = {**json.loads(previous.read_text()), **results}
    atomic_write_text(out / "results.md", markdown(results))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))  # last: `make` takes it as "done"
    return results


def policy_options(args) -> dict | None:
    """`VLAPolicy` keyword arguments from ``--execute-steps`` / ``--ensemble-decay`` (None: the defaults)."""
    if args.execute_steps is not None:
        return {"execute_steps": args.execute_steps}
    if args.ensemble_decay is not None:
        return {"ensemble_decay": args.ensemble_decay}
    return None


def markdown(results: dict) -> str:
    lines = ["# Evaluation", "", "| task | metrics |", "|---|---|"]
    for name, r in results.items():
        if name == "training":
            continue
        shown = {k: v for k, v in r["metrics"].items() if k not in ("decode",)}
        lines.append(f"| {name} | " + ", ".join(f"{k} {v}" for k, v in shown.items()) + " |")
    if "training" in results:
        val = results["training"]["val"]
        lines += ["", "Validation ELBO (nats/token) at the end of training: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in val.items() if isinstance(v, float))]
    for name, r in results.items():
        if name == "training" or not r["examples"]:
            continue
        lines += ["", f"## {name}", ""]
        for ex in r["examples"][:4]:
            lines.append("- " + "; ".join(f"{k}: {v}" for k, v in ex.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run folder written by train.py")
    parser.add_argument("--out", default=None, help="results folder (default: RUN/results)")
    parser.add_argument("--num", type=int, default=32, help="held-out samples per task")
    parser.add_argument("--rollouts", type=int, default=2, help="MetaWorld episodes per robot task (0: none)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--tasks", help="comma-separated streams to score, e.g. vla:robot (default: every stream)")
    parser.add_argument("--sampler", help="decode with each pipeline's default sampler but these SamplerConfig "
                        "fields, e.g. strategy=low_confidence,steps=4,block_len=none")
    execution = parser.add_mutually_exclusive_group()
    execution.add_argument("--execute-steps", type=int, help="robot episodes: actions of each chunk executed before "
                           "the next is decoded (default: the whole chunk)")
    execution.add_argument("--ensemble-decay", type=float, help="robot episodes: decode a chunk at every step and act on "
                           "the temporal ensemble of the chunks, weights exp(-decay * k) (ACT)")
    args = parser.parse_args(argv)
    if args.num <= 0:
        print(f"error: --num must be positive, got {args.num}", file=sys.stderr)
        return 2
    run = Path(args.run)
    try:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
        results = evaluate_run(run, Path(args.out) if args.out else run / "results", args.num, args.rollouts, args.split,
                               tasks=tasks, sampler=parse_sampler(args.sampler), policy=policy_options(args))
    except (ValueError, TypeError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
