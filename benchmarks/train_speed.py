"""Training throughput next to the CPU's matmul ceiling, and per-rank memory under ZeRO-0/1/2/3.

    python benchmarks/train_speed.py [--preset small] [--batch 4] [--seq 256] [--steps 4]
                                     [--memory-preset tiny] [--no-memory] [--json PATH]

Throughput: the real training step of ``train.py`` (DeepSpeed engine, ZeRO-0, one process, fp32:
diffusion loss with complementary masking and prefix attention, backward, fused AdamW step) on random
tokens, for the dense twin and the MoE preset, then the MoE with one change each, side by side in the
same rounds: the unfused AdamW loop, and bf16 autocast (fp32 master weights; its fraction of peak is
against a bf16 matmul timed in the same rounds). The ceiling is a square fp32 matmul (2048, the
reference size, and 4096) timed in the same process between the training steps, so load from other
processes lowers both alike; the best matmul rate seen is the ceiling. FLOPs per token come from
`count_parameters` (2 per multiply-add, training = 3x forward, attention included).

Memory: ``torchrun --nproc_per_node 2`` runs one training step per ZeRO stage and each rank counts
the bytes it holds for parameters (its partition under ZeRO-3) and for optimizer state (AdamW
moments plus the fp32 master partition DeepSpeed keeps under ZeRO-1/2/3).

Writes a Markdown report to docs/benchmarks/train_speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omnidiff.config import DistributedConfig, OptimConfig  # noqa: E402
from omnidiff.diffusion.objectives import DiffusionLossConfig, diffusion_loss  # noqa: E402
from omnidiff.models.presets import count_parameters, preset_config  # noqa: E402
from omnidiff.models.transformer import Transformer  # noqa: E402

DOC = ROOT / "docs" / "benchmarks" / "train_speed.md"
MASK_ID = 1


def matmul_rate(n: int, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of one n x n matmul in ``dtype`` (best of 3)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def random_batch(vocab: int, batch: int, seq: int, gen: torch.Generator) -> dict:
    """Random tokens with a prefix of a quarter of the sequence and the rest as answer."""
    tokens = torch.randint(32, vocab, (batch, seq), generator=gen)
    answer = torch.zeros(batch, seq, dtype=torch.bool)
    answer[:, seq // 4:] = True
    return {"tokens": tokens, "padding_mask": torch.ones(batch, seq, dtype=torch.bool), "answer_mask": answer}


def build(preset: str, vocab: int, zero_stage: int, micro_batch: int, fused: bool = True):
    from omnidiff.training import distributed

    distributed.init_distributed(DistributedConfig(zero_stage=zero_stage), "cpu")
    torch.manual_seed(0)
    cfg = preset_config(preset, vocab)
    engine = distributed.build_engine(lambda: Transformer(cfg), DistributedConfig(zero_stage=zero_stage),
                                      OptimConfig(lr=1e-4, warmup_steps=1, fused=fused), micro_batch, 1000, "cpu")
    return engine, cfg


def train_step(engine, batch: dict, loss_cfg: DiffusionLossConfig, gen: torch.Generator,
               autocast: bool = False) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = diffusion_loss(engine, batch, loss_cfg, generator=gen)
    engine.backward(out.loss)
    engine.step()
    return time.perf_counter() - start


def variants(preset: str) -> dict[str, tuple[str, bool, bool]]:
    """Row name -> (preset, fused AdamW, bf16 autocast): the dense twin and the MoE as trained, then the
    MoE with the unfused AdamW loop and under bf16 autocast (fp32 master weights), one change each."""
    return {f"{preset}-dense": (f"{preset}-dense", True, False), preset: (preset, True, False),
            f"{preset}, AdamW loop (not fused)": (preset, False, False),
            f"{preset}, bf16 autocast": (preset, True, True)}


def throughput(args) -> tuple[list[dict], dict]:
    loss_cfg = DiffusionLossConfig(complementary=True, attention="prefix", mask_id=MASK_ID)
    rows_of = variants(args.preset)
    names = list(rows_of)
    engines = {n: build(p, args.vocab, 0, args.batch, fused) for n, (p, fused, _) in rows_of.items()}
    gen = torch.Generator().manual_seed(0)
    batch = random_batch(args.vocab, args.batch, args.seq, gen)
    times: dict[str, list[float]] = {n: [] for n in names}
    peaks = {2048: [], 4096: [], "bf16": []}
    for n in names:  # warm-up
        train_step(engines[n][0], batch, loss_cfg, gen, rows_of[n][2])
    for _ in range(args.steps):
        for size in (2048, 4096):
            peaks[size].append(matmul_rate(size))
        peaks["bf16"].append(matmul_rate(2048, torch.bfloat16))
        for n in names:
            times[n].append(train_step(engines[n][0], batch, loss_cfg, gen, rows_of[n][2]))
    # Median over rounds: each round's matmul runs next to that round's training steps, under the same load.
    ceiling_2048 = statistics.median(peaks[2048])
    ceiling = max(ceiling_2048, statistics.median(peaks[4096]))
    ceiling_bf16 = statistics.median(peaks["bf16"])
    rows = []
    rows_tokens = args.batch * args.seq * 2  # complementary masking runs two copies of every row
    for n in names:
        cfg = engines[n][1]
        counts = count_parameters(cfg, args.seq)
        t = statistics.median(times[n])
        achieved = counts["flops_per_token_train"] * rows_tokens / t
        peak = ceiling_bf16 if rows_of[n][2] else ceiling_2048  # against the ceiling of the dtype it computes in
        rows.append({"model": n, "params_total": counts["params_total"], "params_active": counts["params_active"],
                     "step_time_s": round(t, 4), "tokens_per_s": round(rows_tokens / t, 1),
                     "speedup_vs_moe": round(statistics.median(times[args.preset]) / t, 3),
                     "dtype": "bf16 autocast" if rows_of[n][2] else "fp32",
                     "achieved_flops": achieved, "matmul_peak_flops": peak,
                     "fraction_of_peak": round(achieved / peak, 3),
                     "fraction_of_best_matmul": round(achieved / max(ceiling, peak), 3)})
    info = {"matmul_peak_flops": ceiling_2048, "matmul_4096_flops": statistics.median(peaks[4096]),
            "matmul_bf16_flops": ceiling_bf16, "threads": torch.get_num_threads(),
            "setting": f"batch {args.batch} x {args.seq} tokens x 2 (complementary copies), vocabulary {args.vocab}, fp32 "
                       "(but the autocast row), "
                       f"{torch.get_num_threads()} threads, ZeRO-0 engine, median of {args.steps} steps interleaved "
                       "with the matmul ceiling"}
    return rows, info


# ----------------------------------------------------------------------------------------- memory
def _base_optimizer(opt):
    """The innermost torch optimizer under DeepSpeed's wrappers."""
    while hasattr(opt, "optimizer") and not isinstance(opt, torch.optim.Optimizer):
        opt = opt.optimizer
    while isinstance(getattr(opt, "optimizer", None), torch.optim.Optimizer):
        opt = opt.optimizer
    return opt


def rank_memory(engine) -> dict:
    """Bytes this rank holds for parameters and optimizer state (master copies + moments)."""
    seen: set[int] = set()

    def nbytes(t: torch.Tensor) -> int:
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen or t.numel() == 0:
            return 0
        seen.add(ptr)
        return t.untyped_storage().nbytes()

    params = 0
    for p in engine.module.parameters():
        local = getattr(p, "ds_tensor", None)  # ZeRO-3: this rank's partition
        params += nbytes(local if local is not None else p.data)
    opt = _base_optimizer(engine.optimizer)
    optim = 0
    for group in opt.param_groups:  # fp32 master partitions (ZeRO-1/2/3); the model's own params under ZeRO-0
        for p in group["params"]:
            optim += nbytes(p.data)
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor):
                optim += nbytes(v)
    return {"param_bytes": params, "optimizer_bytes": optim}


def memory_worker(args) -> None:
    import torch.distributed as dist

    engine, _ = build(args.memory_preset, args.vocab, args.zero, 2)
    loss_cfg = DiffusionLossConfig(complementary=True, attention="prefix", mask_id=MASK_ID)
    gen = torch.Generator().manual_seed(dist.get_rank())
    train_step(engine, random_batch(args.vocab, 2, 64, gen), loss_cfg, gen)  # optimizer state exists after a step
    mem = rank_memory(engine)
    print("MEMORY " + json.dumps({"rank": dist.get_rank(), "zero_stage": args.zero, **mem}), flush=True)
    dist.barrier()


def memory(args) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                               "MASTER_PORT")}
    env.setdefault("DS_ACCELERATOR", "cpu")
    rows = []
    for stage in (0, 1, 2, 3):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(Path(__file__).resolve()),
               "--memory-worker", "--zero", str(stage), "--memory-preset", args.memory_preset, "--vocab", str(args.vocab)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"ZeRO-{stage} memory run failed:\n{proc.stderr[-3000:]}")
        found = [json.loads(line.split("MEMORY ", 1)[1]) for line in proc.stdout.splitlines() if "MEMORY " in line]
        for r in sorted(found, key=lambda r: r["rank"]):
            rows.append(r)
    return rows


def report(rows: list[dict], info: dict, mem_rows: list[dict], args) -> str:
    lines = ["| model | params total | params active | step time (s) | speed-up vs the MoE row | tokens/s | "
             "achieved GFLOP/s | matmul 2048 GFLOP/s (its dtype) | fraction of peak |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params_total'] / 1e6:.1f}M | {r['params_active'] / 1e6:.1f}M | "
                     f"{r['step_time_s']:.3f} | {r['speedup_vs_moe']:.2f}x | {r['tokens_per_s']:.0f} | "
                     f"{r['achieved_flops'] / 1e9:.1f} | {r['matmul_peak_flops'] / 1e9:.1f} ({r['dtype']}) | "
                     f"**{r['fraction_of_peak']:.2f}** |")
    text = "\n".join(lines) + (f"\n\n{info['setting']}. A 4096 matmul reached {info['matmul_4096_flops'] / 1e9:.1f} "
                               "GFLOP/s in the same run; the fraction against that is "
                               + ", ".join(f"{r['model']} {r['fraction_of_best_matmul']:.2f}" for r in rows) + ".\n")
    if mem_rows:
        text += (f"\n### Per-rank memory, `{args.memory_preset}` preset, 2 ranks (torchrun, gloo, fp32)\n\n"
                 "| ZeRO stage | rank | parameters (MB) | optimizer state (MB) | total (MB) |\n|---|---|---|---|---|\n")
        for r in mem_rows:
            total = r["param_bytes"] + r["optimizer_bytes"]
            text += (f"| {r['zero_stage']} | {r['rank']} | {r['param_bytes'] / 2**20:.2f} | "
                     f"{r['optimizer_bytes'] / 2**20:.2f} | {total / 2**20:.2f} |\n")
        text += ("\nOptimizer state is the AdamW moments plus, under ZeRO-1/2/3, the fp32 master partition DeepSpeed "
                 "keeps (a copy even in fp32 training). Gradients and activations are not counted.\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--memory-preset", default="tiny")
    parser.add_argument("--no-memory", action="store_true", help="skip the 2-rank ZeRO memory runs")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--zero", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if args.memory_worker:
        memory_worker(args)
        return
    rows, info = throughput(args)
    mem_rows = [] if args.no_memory else memory(args)
    text = report(rows, info, mem_rows, args)
    print(text)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("# Training speed and memory\n\n`python benchmarks/train_speed.py`\n\n" + text)
    if args.json:
        dense = rows[0]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "tokens_per_s": dense["tokens_per_s"], "achieved_flops": dense["achieved_flops"],
            "matmul_peak_flops": dense["matmul_peak_flops"], "fraction_of_peak": dense["fraction_of_peak"],
            "rows": rows, "memory": mem_rows, **info}, indent=2))


if __name__ == "__main__":
    main()
