"""Can each task learn at all? Train it alone on a few training examples and score it on them.

    python benchmarks/overfit.py                       # every task stream of configs/demo.yaml
    python benchmarks/overfit.py --streams asr:speech,tts:speech --steps 400 --json runs/overfit.json

For every (task, dataset) stream of a recipe: copy the first ``--num`` training samples into a
dataset of their own (train = val = those samples), train a fresh model on that stream alone with
the recipe's objective and answer length, export it, and run the task's evaluator
(`omnidiff.eval.__main__.evaluate_task`) on the same samples. A task that cannot memorise 64
examples has a bug (formatting, masking, decoding, a tokenizer), not a budget problem.

Writes a table to ``docs/benchmarks/overfit.md`` (``--doc``), per-stream outputs (images, WAVs,
records) under ``--out``, and with ``--json PATH`` the rows as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from omnidiff.config import load_config, to_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The metric each stream must memorise, how to read it as "fraction right", and its pass mark.
SCORES = {
    "caption": ("exact", lambda m: m["exact"]),
    "vqa": ("accuracy", lambda m: m["accuracy"]),
    "t2i": ("objects_correct", lambda m: m["objects_correct"]),
    "asr": ("1 - WER", lambda m: 1.0 - m["wer"]),
    "tts": ("1 - Whisper WER", lambda m: 1.0 - m["wer_generated"]),
    "vla": ("chunks within one bin", lambda m: m["within_one_bin"]),
    "text": ("token accuracy", lambda m: m["token_accuracy"]),
}
DIGIT_SCORE = ("digit right", lambda m: m["digit_correct"])
PASS_MARK = 0.98


def subset_dataset(src: Path, dst: Path, num: int) -> int:
    """Copy the first ``num`` training samples of ``src`` into ``dst`` as its train and val splits."""
    manifest = json.loads((src / "manifest.json").read_text())
    members: dict[str, list[tuple[tarfile.TarInfo, bytes]]] = {}
    for shard in sorted(src.glob("train-*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar:
                key = info.name.split(".", 1)[0]
                if key not in members and len(members) == num:
                    break
                members.setdefault(key, []).append((info, tar.extractfile(info).read()))
        if len(members) >= num:
            break
    dst.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        with tarfile.open(dst / f"{split}-000000.tar", "w") as tar:
            for parts in members.values():
                for info, data in parts:
                    tar.addfile(info, io.BytesIO(data))
    manifest["splits"] = {s: {"count": len(members), "shards": [f"{s}-000000.tar"]} for s in ("train", "val")}
    manifest["subset_of"] = str(src)
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return len(members)


def stream_name(spec) -> str:
    from omnidiff.eval.__main__ import stream_name as name

    return name(spec.task, spec.path)


def run_stream(spec, base, args, out: Path) -> dict:
    from omnidiff.eval.__main__ import evaluate_task, read_samples
    from omnidiff.pipelines import PIPELINES
    from omnidiff.training.trainer import train

    name = stream_name(spec)
    work = out / name.replace(":", "_")
    data = work / "data"
    count = subset_dataset(Path(spec.path), data, args.num)
    tree = {
        "model": {"preset": args.preset},
        "objective": to_dict(base.objective),
        "optim": {"lr": args.lr, "warmup_steps": min(50, args.steps // 10), "decay": "cosine"},
        "train": {"steps": args.steps, "out": str(work / "run"), "log_every": 25, "eval_every": 0, "save_every": 0,
                  "tensorboard": False, "seed": args.seed, "device": args.device},
        "distributed": {"dtype": args.dtype},
        "data": {"batch_size": args.batch_size, "tasks": [{"task": spec.task, "path": str(data), "answer_len": spec.answer_len,
                                                           "options": spec.options}]},
        "tokenizers": base.tokenizers,
    }
    recipe = work / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tree, sort_keys=False))
    cfg = load_config(recipe)
    start = time.perf_counter()
    summary = train(cfg)
    minutes = (time.perf_counter() - start) / 60
    pipe = PIPELINES[spec.task].from_pretrained(work / "run" / "model")
    samples = read_samples(str(data), "train", count)
    results = work / "results"
    results.mkdir(exist_ok=True)
    metrics, records = evaluate_task(spec.task, pipe, samples, spec.answer_len, results)
    label, score = DIGIT_SCORE if "digit_correct" in metrics else SCORES[spec.task]
    value = float(score(metrics))
    (results / "records.json").write_text(json.dumps({"metrics": metrics, "records": records}, indent=2, default=str))
    return {"stream": name, "samples": count, "steps": args.steps, "minutes": round(minutes, 2),
            "final_loss": round(summary["loss_history"][-1], 4), "metric": label, "score": round(value, 4),
            "passed": value >= PASS_MARK, "metrics": {k: v for k, v in metrics.items() if k != "grid"}}


def markdown(rows: list[dict], args) -> str:
    lines = ["# Overfit check: every task memorises a few training examples", "",
             f"`python benchmarks/overfit.py --num {args.num} --steps {args.steps} --preset {args.preset} "
             f"--lr {args.lr} --batch-size {args.batch_size} {' '.join(args.overrides)}`".replace(" `", "`")
             + f" (recipe `{args.recipe}`): each stream trained "
             f"alone on its first {args.num} training samples and scored on those same samples. "
             f"Pass: >= {PASS_MARK:.0%}.", "",
             "| stream | samples | steps | minutes | final loss | metric | score | pass |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['stream']} | {r['samples']} | {r['steps']} | {r['minutes']} | {r['final_loss']} | "
                     f"{r['metric']} | {r['score']:.3f} | {'yes' if r['passed'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="configs/demo.yaml", help="streams, answer lengths, tokenizers, objective")
    parser.add_argument("--streams", default=None, help="comma-separated task:dataset names (default: all)")
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--out", type=Path, default=Path("runs/overfit"))
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "overfit.md")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the recipe, e.g. data.root=runs/smoke/data")
    args = parser.parse_args(argv)
    if args.num <= 0 or args.steps <= 0:
        parser.error("--num and --steps must be positive")
    base = load_config(args.recipe, args.overrides)
    specs, seen = [], set()
    for spec in base.data.tasks:
        if stream_name(spec) not in seen:
            seen.add(stream_name(spec))
            specs.append(spec)
    if args.streams:
        wanted = args.streams.split(",")
        unknown = sorted(set(wanted) - seen)
        if unknown:
            parser.error(f"unknown streams {unknown}; the recipe has {sorted(seen)}")
        specs = [s for s in specs if stream_name(s) in wanted]
    rows = []
    for spec in specs:
        row = run_stream(spec, base, args, args.out)
        print(json.dumps({k: v for k, v in row.items() if k != "metrics"}), flush=True)
        rows.append(row)
    text = markdown(rows, args)
    print(text)
    if args.doc:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        args.doc.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
