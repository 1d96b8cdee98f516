"""Train a model: ``python train.py --config configs/text.yaml [key.sub=value ...] [--resume]``.

Multi-process: ``torchrun --nproc_per_node N train.py --config ...`` (see docs/training.md).
"""

from __future__ import annotations

import json
import logging
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # DS_ACCELERATOR comes from train.device, in main()


def main(argv: list[str] | None = None) -> int:
    from omnidiff.cli import Parser, report

    parser = Parser(prog="train.py", description="Train an OmniDiff model on a task mixture.")
    parser.add_argument("--config", help="YAML recipe (configs/*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4 train.steps=200")
    try:
        args = parser.parse_args(argv)
    except ValueError as err:  # a usage error, as one line
        return report(err)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from omnidiff.config import load_config
    from omnidiff.training.accelerator import select_accelerator

    try:
        cfg = load_config(args.config, args.overrides)
        select_accelerator(cfg.train.device)  # before the trainer imports deepspeed, which reads it once
        from omnidiff.training.trainer import train

        summary = train(cfg, resume=args.resume)
    except (ValueError, OSError) as err:  # bad config, overrides, paths or data (FileNotFoundError is an OSError)
        return report(err)
    if summary["rank"] == 0:
        print(json.dumps({k: summary[k] for k in ("steps", "val", "checkpoint", "model")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
