"""Fit the action tokenizer: ``python tokenizers/fit_action_bins.py --data runs/data/robot --out runs/tokenizers/action``.

Reads the train split of a robot dataset built by ``data/build_robot.py``, takes each step's own
action (row 0 of its ``actions.npy`` chunk, so overlapping chunks do not count a step H times) and
its ``proprio.npy`` state, and fits per-dimension percentile statistics (`ActionTokenizer.fit`).
Settings come from ``--config`` (default ``configs/tokenizers/action.yaml``); ``--bins`` and
``--gripper-dims`` override it.

It then measures the round trip on the train and val splits, per dimension: the largest
|decode(encode(a)) - a| for values inside the fitted range divided by the bin width (at most 0.5
by construction), the largest error overall (clipped values included) and the share of clipped
values. The numbers go to ``<out>/report.json`` and stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from omnidiff.data.shards import ShardStream, split_shards  # noqa: E402
from omnidiff.tokenization.action import ActionTokenizer, ActionTokenizerConfig  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tokenizers" / "action.yaml"


def read_settings(path: Path) -> dict:
    """The YAML settings, checked against `ActionTokenizerConfig` (``horizon`` may be null: from the data)."""
    if not path.exists():
        raise FileNotFoundError(f"tokenizer config {path} does not exist")
    settings = yaml.safe_load(path.read_text()) or {}
    valid = {f.name for f in dataclasses.fields(ActionTokenizerConfig)}
    unknown = sorted(set(settings) - valid)
    if unknown:
        raise ValueError(f"unknown settings {unknown} in {path}; valid: {sorted(valid)}")
    return settings


def read_split(data: Path, split: str, limit: int | None = None) -> dict[str, np.ndarray]:
    """One pass over a split: ``{"chunks": [N, H, D], "proprio": [N, P] or absent}``."""
    stream = ShardStream(split_shards(data, split), shuffle=False)
    chunks, proprio = [], []
    for sample in stream:
        if stream.epoch > 0 or (limit is not None and len(chunks) >= limit):
            break  # the stream starts over after the last sample: one pass is enough
        if "actions.npy" not in sample:
            raise ValueError(f"sample {sample.get('__key__')} in {data} has no actions.npy: not a robot dataset "
                             f"(build one with data/build_robot.py)")
        chunks.append(np.asarray(sample["actions.npy"], dtype=np.float32))
        if "proprio.npy" in sample:
            proprio.append(np.asarray(sample["proprio.npy"], dtype=np.float32).reshape(-1))
    if not chunks:
        raise ValueError(f"the {split} split of {data} holds no samples")
    shapes = {c.shape for c in chunks}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"action chunks of {data}/{split} must all have one [H, D] shape, found {sorted(shapes)}")
    out = {"chunks": np.stack(chunks)}
    if proprio and len(proprio) == len(chunks):
        out["proprio"] = np.stack(proprio)
    return out


def round_trip(tok: ActionTokenizer, values: np.ndarray, low: torch.Tensor, high: torch.Tensor, encode, decode,
               width: torch.Tensor) -> dict:
    """Per-dimension round-trip errors of rows ``values`` [N, D] (robot units)."""
    x = torch.from_numpy(values).double()
    back = decode(encode(torch.from_numpy(values))).double()
    err = (back - x).abs()
    inside = (x >= low) & (x <= high)
    err_inside = torch.where(inside, err, torch.zeros_like(err)).max(dim=0).values
    ratio = torch.where(width > 0, err_inside / width.clamp_min(1e-12), torch.zeros_like(width))
    return {"max_error_inside_over_bin_width": [round(float(v), 4) for v in ratio],
            "max_error_inside": [round(float(v), 6) for v in err_inside],
            "max_error": [round(float(v), 6) for v in err.max(dim=0).values],
            "mean_error": [round(float(v), 6) for v in err.mean(dim=0)],
            "clipped_fraction": [round(float(v), 5) for v in (~inside).double().mean(dim=0)]}


def evaluate(tok: ActionTokenizer, split: dict[str, np.ndarray]) -> dict:
    actions = split["chunks"].reshape(-1, tok.action_dim)
    width = tok.bin_width.double()
    report = {"actions": round_trip(tok, actions, tok.low, tok.high, tok.encode, tok.decode, width)}
    if "proprio" in split and tok.proprio_dim is not None:
        report["proprio"] = round_trip(tok, split["proprio"], tok.proprio_low, tok.proprio_high, tok.encode_proprio,
                                       tok.decode_proprio, tok.proprio_bin_width.double())
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("runs/data/robot"))
    parser.add_argument("--out", type=Path, default=Path("runs/tokenizers/action"))
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--bins", type=int, default=None, help="override the config's bins")
    parser.add_argument("--gripper-dims", default=None, help="comma-separated action dims (override); '' for none")
    parser.add_argument("--max-samples", type=int, default=None, help="read at most this many train samples")
    args = parser.parse_args(argv)

    settings = read_settings(args.config)
    if args.bins is not None:
        settings["bins"] = args.bins
    if args.gripper_dims is not None:
        settings["gripper_dims"] = [int(d) for d in args.gripper_dims.split(",") if d.strip()]
    train = read_split(args.data, "train", args.max_samples)
    horizon = train["chunks"].shape[1]
    if settings.get("horizon") not in (None, horizon):
        raise ValueError(f"the config says horizon {settings['horizon']} but {args.data} has chunks of {horizon} "
                         f"steps; set horizon: null to take it from the data")
    settings["horizon"] = horizon
    start = time.time()
    # row 0 of each chunk is the step's own action: every step once
    tok = ActionTokenizer.fit(train["chunks"][:, 0], train.get("proprio"), **settings)
    seconds = time.time() - start
    tok.save(args.out)
    report = {"data": str(args.data), "settings": dataclasses.asdict(tok.config), "train_steps": len(train["chunks"]),
              "fit_seconds": round(seconds, 3), "bin_width": [round(float(v), 6) for v in tok.bin_width],
              "train": evaluate(tok, train)}
    try:
        report["val"] = evaluate(tok, read_split(args.data, "val"))
    except FileNotFoundError:
        report["val"] = None  # a tiny dataset may have no val split
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
