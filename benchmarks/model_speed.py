"""Forward+backward throughput of a preset, MoE vs the dense twin with equal active parameters.

    python benchmarks/model_speed.py [--preset small] [--batch 4] [--seq 256] [--steps 4] [--json PATH]

Dense and MoE steps are interleaved in one process (dense, MoE, dense, MoE, ...) and the median
step time of each is compared, so load from other processes hits both alike. Writes a Markdown
table to docs/benchmarks/model_speed.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from omnidiff.models.presets import count_parameters, preset_config
from omnidiff.models.transformer import Transformer

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "model_speed.md"


def step_time(model: Transformer, tokens: torch.Tensor) -> float:
    start = time.perf_counter()
    logits, aux = model(tokens, attention="full", return_aux=True)
    loss = logits.float().logsumexp(-1).mean()
    if aux is not None:
        loss = loss + 0.01 * aux.balance_loss + 1e-3 * aux.z_loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave default)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    names = [f"{args.preset}-dense", args.preset]
    models = {n: Transformer(preset_config(n, args.vocab)).train() for n in names}
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq))
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:  # warm-up
        step_time(models[n], tokens)
    for _ in range(args.steps):
        for n in names:
            times[n].append(step_time(models[n], tokens))

    rows = []
    for n in names:
        counts = count_parameters(models[n].cfg, args.seq)
        t = statistics.median(times[n])
        rows.append({
            "model": n,
            "params_total": counts["params_total"],
            "params_active": counts["params_active"],
            "step_time_s": round(t, 4),
            "tokens_per_s": round(args.batch * args.seq / t, 1),
            "achieved_gflops": round(counts["flops_per_token_train"] * args.batch * args.seq / t / 1e9, 2),
        })
    ratio = rows[1]["step_time_s"] / rows[0]["step_time_s"]

    header = "| model | params total | params active | step time (s) | tokens/s | GFLOP/s |\n|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['model']} | {r['params_total'] / 1e6:.1f}M | {r['params_active'] / 1e6:.1f}M | {r['step_time_s']:.3f} "
        f"| {r['tokens_per_s']:.0f} | {r['achieved_gflops']:.1f} |\n" for r in rows
    )
    setting = (f"batch {args.batch} x {args.seq} tokens, vocabulary {args.vocab}, fp32, {torch.get_num_threads()} threads, "
               f"median of {args.steps} interleaved steps")
    table = header + body + f"\nMoE step time / dense step time: **{ratio:.2f}x** ({setting}).\n"
    print(table)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("# Model speed: forward + backward\n\n`python benchmarks/model_speed.py`\n\n" + table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "moe_over_dense_step_time": round(ratio, 3), "setting": setting}, indent=2))


if __name__ == "__main__":
    main()
