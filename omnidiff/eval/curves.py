"""Learning curves: held-out task metrics against training minutes, from a run's ``metrics.jsonl``.

    python -m omnidiff.eval.curves --run runs/results [--out runs/results/curves.png]

Reads the ``task_eval`` rows the trainer writes every ``train.task_eval_every`` steps
(`omnidiff.training.task_eval`) and draws one panel per (task, dataset) stream, one line per metric,
with training minutes (evaluation time excluded) on the x axis.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

Curves = dict[str, dict[str, list[tuple[float, float]]]]  # stream -> metric -> [(minutes, value)]


def read_curves(metrics_file: Path) -> Curves:
    """Every ``task_eval`` row of ``metrics_file`` as curves; a later row at the same step replaces an
    earlier one (a resumed run repeats the evaluations after its last checkpoint)."""
    by_step: dict[int, dict] = {}
    for line in Path(metrics_file).read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if row.get("split") == "task_eval":
            by_step[int(row["step"])] = row
    curves: Curves = {}
    for step in sorted(by_step):
        row = by_step[step]
        minutes = float(row["train_minutes"])
        for key, value in row.items():
            if "/" in key and isinstance(value, int | float):
                stream, metric = key.split("/", 1)
                curves.setdefault(stream, {}).setdefault(metric, []).append((minutes, float(value)))
    return curves


def plot_curves(curves: Curves, path: Path, title: str = "") -> Path:
    """One panel per stream (metric against training minutes), saved as a PNG at ``path``."""
    if not curves:
        raise ValueError("no task_eval rows to draw: train with train.task_eval_every > 0")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(curves)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for metric, points in sorted(curves[name].items()):
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, label=metric)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("training minutes")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from omnidiff.files import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder written by train.py")
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: RUN/curves.png)")
    args = parser.parse_args(argv)
    metrics = args.run / "metrics.jsonl"
    try:
        if not metrics.exists():
            raise FileNotFoundError(f"{metrics} is missing: --run must be a folder written by train.py")
        path = plot_curves(read_curves(metrics), args.out or args.run / "curves.png", title=str(args.run))
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
