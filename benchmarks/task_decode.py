"""Per-task decoding: speed and the task's own quality, for each sampler, against the AR twin.

    python benchmarks/task_decode.py --run runs/results [--ar-run runs/ar_twin] [--tasks caption:shapes,...]
        [--num 32] [--json PATH]

(also reached as ``python benchmarks/decode_speed.py --task ...``). For every (task, dataset) stream
the run was trained on, the run's exported model decodes held-out samples through the task's
pipeline with each sampler configuration below, and, with ``--ar-run``, the AR twin (the same
architecture trained with ``objective.kind: autoregressive`` on the same data) decodes them one
token per forward against its exact KV cache. Each row reports, at batch 1 and 8:

- NFE and tokens per forward (answer columns, <eos> padding included, as the field counts them);
- tokens/s and the ratio to the AR twin at the same batch;
- the task's own metric on ``--num`` held-out samples (the evaluator of ``python -m omnidiff.eval``);
- the sampler's own share of the decode time: wall time outside model forwards (host syncs,
  softmax over the vocabulary, Python per step), measured by timing every forward.

Beside the table: this machine's memory read bandwidth measured in the same run (a reduction over a
tensor far larger than the caches) and the AR bandwidth floor, the bytes of weights one AR step must
read (every dense weight, the LM head, the active experts' share of each MoE layer) divided by that
bandwidth: no AR decoder of this model can beat ``1 / floor`` tokens/s at batch 1 here.
Writes docs/benchmarks/task_decode.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from omnidiff.files import atomic_write_text  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
BATCHES = (1, 8)
# The metric each stream is judged by (higher is better unless listed in LOWER_IS_BETTER).
QUALITY = {"caption:shapes": "pair_precision", "caption:digits": "digit_correct", "vqa": "accuracy",
           "t2i": "objects_correct", "asr": "wer", "tts": "wer_generated", "vla": "action_mae_bins",
           "text": "token_accuracy"}
LOWER_IS_BETTER = ("wer", "wer_generated", "action_mae_bins")


def quality_metric(stream: str) -> str:
    return QUALITY.get(stream) or QUALITY[stream.split(":")[0]]


def describe(config) -> str:
    """A row label for a diffusion sampler: its strategy and blocks, as configured."""
    blocks = f"blocks of {config.block_len}" if config.block_len else "one block"
    if config.strategy == "threshold":
        return f"diffusion, threshold {config.threshold:g}, {blocks}"
    steps = "one token per step" if config.steps is None else f"{config.steps} step{'' if config.steps == 1 else 's'}"
    if config.strategy == "random":
        return f"diffusion, random order, {steps}, temperature {config.temperature:g}, {blocks}"
    if config.strategy == "low_confidence":
        return f"diffusion, confidence order, {steps}, {blocks}"
    return f"diffusion, {config.strategy}, {steps}, {blocks}"


def sampler_configs(pipe, steps: tuple[int, ...] = ()) -> dict:
    """The exact-cache diffusion samplers compared: the pipeline's own default when it is not a
    threshold sampler (text-to-image decodes in random order), confidence thresholds 0.9 / 0.7 / 0.5
    in the default's blocks, one token per step, and for each of ``steps`` a fixed number of
    steps in confidence order over one block (LLaDA's low-confidence remasking: answer / steps tokens
    a step); the AR twin's sampler is its pipeline's."""
    from omnidiff.sampling import SamplerConfig

    base = pipe.default_sampler()
    if base.attention == "causal":
        return {"AR twin, causal KV cache": base}
    one = SamplerConfig(attention=base.attention, cache=base.cache, block_len=base.block_len, shift=base.shift)
    thresholds = base if base.strategy == "threshold" else dataclasses.replace(one, strategy="threshold", threshold=0.9)
    configs = {} if base.strategy == "threshold" else {describe(base): base}
    for tau in (0.9, 0.7, 0.5):
        config = dataclasses.replace(thresholds, threshold=tau)
        configs[describe(config)] = config
    configs["diffusion, one token per step"] = one
    for n in steps:
        config = dataclasses.replace(one, strategy="low_confidence", steps=n, block_len=None)
        configs[describe(config)] = config
    return configs


class TimedModel:
    """The pipeline's model with every forward timed; all else (the image encoder too) passes through.

    The image encoder runs before `generate` starts its clock (the prompt images are encoded once),
    so it is not timed: counted as a forward, it can exceed the sampler's own time on short answers
    and clip the sampler's share to 0 (VQA read 0% while it was, 4-6% since).
    """

    def __init__(self, model):
        self.model, self.forward_s = model, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.model(*args, **kwargs)
        self.forward_s += time.perf_counter() - start
        return out

    def __getattr__(self, name):
        return getattr(self.model, name)


def record_decodes(pipe, timed: TimedModel) -> list[dict]:
    """Collect the sampler statistics of every decode the pipeline runs (the VLA policy decodes one
    observation per call, the other evaluators one batch), each with the forward seconds spent inside
    it. Forwards outside a decode are not counted: the caption evaluator's colour and shape probes
    run the model too, and counting them clipped the captions' sampler share to 0."""
    log: list[dict] = []
    decode = pipe.decode

    def logged(*args, **kwargs):
        before = timed.forward_s
        out = decode(*args, **kwargs)
        log.append({**out[1], "forward_s": timed.forward_s - before})
        return out

    pipe.decode = logged
    return log


def evaluate(stream: str, pipe, samples: list[dict], answer_len: int) -> tuple[dict, list[dict], float]:
    """(metrics, per-decode stats, seconds) of the task's evaluator on ``samples``."""
    from omnidiff.eval.__main__ import evaluate_task

    timed = TimedModel(pipe.model)
    log = record_decodes(pipe, timed)
    model, pipe.model = pipe.model, timed
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            metrics, _ = evaluate_task(stream.split(":")[0], pipe, samples, answer_len, Path(tmp))
            seconds = time.perf_counter() - start
    finally:
        pipe.model = model
        del pipe.decode
    return metrics, log, seconds


def speed(log: list[dict]) -> dict:
    wall = sum(s["wall_time_s"] for s in log)
    forward_s = sum(s["forward_s"] for s in log)
    tokens = sum(s["tokens_per_s"] * s["wall_time_s"] for s in log)
    nfe = sum(s["nfe"] for s in log)
    return {"nfe": nfe / len(log), "tokens_per_forward": sum(s["tokens_per_forward"] * s["nfe"] for s in log) / max(nfe, 1),
            "tokens_per_s": tokens / max(wall, 1e-9), "wall_time_s": wall,
            "sampler_share": max(0.0, 1.0 - forward_s / max(wall, 1e-9))}


def bench_stream(stream: str, spec: dict, pipes: dict, num: int, repeats: int, steps: tuple[int, ...] = ()) -> list[dict]:
    from omnidiff.eval.__main__ import read_samples

    samples = read_samples(spec["path"], "val", max(num, max(BATCHES) * repeats))
    answer_len, metric = int(spec["answer_len"]), quality_metric(stream)
    batches = (1,) if stream.startswith("vla") else BATCHES  # the policy decodes one observation at a time
    rows = []
    for kind, pipe in pipes.items():
        for name, cfg in sampler_configs(pipe, steps).items():
            pipe.sampler = cfg
            metrics, quality_log, seconds = evaluate(stream, pipe, samples[:num], answer_len)
            quality = metrics.get(metric)
            for batch in batches:
                if stream.startswith("vla"):
                    # the policy's quality pass is ``num`` single-observation decodes: time all of them, and
                    # the whole `predict_action` call too (image encoder, prompt, detokenising), which is
                    # what a robot waits for: action chunks per second end to end
                    row = {**speed(quality_log), "answers_per_s_end_to_end": len(quality_log) / seconds}
                else:
                    logs = []
                    for r in range(repeats):
                        logs += evaluate(stream, pipe, samples[r * batch:(r + 1) * batch], answer_len)[1]
                    row = speed(logs)
                rows.append({"task": stream, "method": name, "model": kind, "batch": batch, "answer_len": answer_len,
                             **row, "metric": metric, "quality": quality})
                r = rows[-1]
                print(f"{stream:15s} {name:40s} x{batch}  nfe {r['nfe']:6.1f}  tok/fwd {r['tokens_per_forward']:5.2f}  "
                      f"{r['tokens_per_s']:8.1f} tok/s  sampler {100 * r['sampler_share']:4.1f}%  {metric} {quality}",
                      flush=True)
    for r in rows:  # ratios against the AR twin at the same batch
        ar = next((a for a in rows if a["model"] == "ar" and a["batch"] == r["batch"]), None)
        r["ratio_to_ar"] = r["tokens_per_s"] / ar["tokens_per_s"] if ar else None
        r["ar_quality"] = ar["quality"] if ar else None
    return rows


def read_bandwidth(mib: int = 1024, repeats: int = 5) -> float:
    """Memory read bandwidth in bytes/s: the best of ``repeats`` sums over a ``mib`` MiB float32 tensor."""
    x = torch.ones(mib * 2**20 // 4)
    x.sum()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best


def bytes_per_ar_step(model) -> int:
    """Weight bytes one AR step reads at batch 1: every weight, except that the input embedding reads
    one row and an MoE layer only its active experts (top_k of num_experts)."""
    moe = getattr(model.cfg, "moe", None)
    total = 0
    for name, p in model.named_parameters():
        size = p.numel() * p.element_size()
        if name == "embed.weight" and "lm_head.weight" in dict(model.named_parameters()):
            size = p.shape[1] * p.element_size()
        elif moe is not None and p.dim() == 3 and p.shape[0] == moe.num_experts:
            size = size * moe.top_k // moe.num_experts
        total += size
    return total


def check_runs(args) -> dict:
    runs = {"diffusion": Path(args.run), **({"ar": Path(args.ar_run)} if args.ar_run else {})}
    for run in runs.values():
        if not (run / "model").is_dir() or not (run / "config.yaml").is_file():
            raise SystemExit(f"error: {run} is not a finished train.py run (it needs model/ and config.yaml)")
    return runs


def main(argv: list[str] | None = None) -> int:
    import yaml

    from omnidiff.eval.__main__ import stream_name
    from omnidiff.pipelines import PIPELINES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a train.py run folder (its model/ and config.yaml)")
    parser.add_argument("--ar-run", help="the AR twin's run folder (objective.kind=autoregressive, same data)")
    parser.add_argument("--tasks", "--task", dest="tasks", help="comma-separated streams such as caption:shapes,vqa:shapes "
                        "(default: every stream of the run except tts, whose scoring runs Whisper)")
    parser.add_argument("--num", type=int, default=32, help="held-out samples for the quality column")
    parser.add_argument("--repeats", type=int, default=2, help="timed decodes per batch size")
    parser.add_argument("--steps", default="", help="comma-separated fixed step counts to add as rows decoded in "
                        "confidence order over one block, e.g. 2,4,8 (default: none)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--doc", type=Path, default=DOCS / "task_decode.md", help="where the markdown table goes")
    args = parser.parse_args(argv)
    if args.num <= 0 or args.repeats <= 0:
        raise SystemExit("error: --num and --repeats must be positive")
    try:
        steps = tuple(int(n) for n in args.steps.split(",") if n.strip())
    except ValueError:
        raise SystemExit(f"error: --steps takes comma-separated whole numbers such as 2,4,8, got {args.steps!r}") from None
    if any(n <= 0 for n in steps):
        raise SystemExit(f"error: --steps must be positive, got {args.steps}")
    runs = check_runs(args)
    cfg = yaml.safe_load((runs["diffusion"] / "config.yaml").read_text())
    specs = {}
    for t in cfg["data"]["tasks"]:
        specs.setdefault(stream_name(t["task"], t["path"]), t)
    wanted = args.tasks.split(",") if args.tasks else [s for s in specs if not s.startswith("tts")]
    unknown = [w for w in wanted if w not in specs]
    if unknown:
        raise SystemExit(f"error: {unknown} are not streams of {args.run}; it was trained on {sorted(specs)}")
    if "ar" in runs:
        ar_cfg = yaml.safe_load((runs["ar"] / "config.yaml").read_text())
        if (ar_cfg.get("objective") or {}).get("kind") != "autoregressive":
            raise SystemExit(f"error: --ar-run {args.ar_run} was not trained with objective.kind=autoregressive")
        ar_streams = {stream_name(t["task"], t["path"]) for t in ar_cfg["data"]["tasks"]}
        missing = [w for w in wanted if w not in ar_streams]
        if missing:
            raise SystemExit(f"error: the AR twin {args.ar_run} was not trained on {missing}; pass --tasks to choose")

    rows = []
    for stream in wanted:
        task = stream.split(":")[0]
        pipes = {kind: PIPELINES[task].from_pretrained(run / "model") for kind, run in runs.items()}
        rows += bench_stream(stream, specs[stream], pipes, args.num, args.repeats, steps)

    from omnidiff.models.hf import OmniDiffModel

    model = OmniDiffModel.from_pretrained(runs.get("ar", runs["diffusion"]) / "model").model
    bandwidth, step_bytes = read_bandwidth(), bytes_per_ar_step(model)
    floor_ms = 1000 * step_bytes / bandwidth
    cmd = f"python benchmarks/task_decode.py --run {args.run}" + (f" --ar-run {args.ar_run}" if args.ar_run else "") + (
        f" --tasks {args.tasks}" if args.tasks else "") + f" --num {args.num}" + (f" --steps {args.steps}" if steps else "")
    lines = ["# Decoding per task: speed and the task's own quality", "",
             f"`{cmd}`; fp32 CPU, {torch.get_num_threads()} threads. Tokens count every answer column (<eos> padding "
             "included); *answers/s* is tokens/s over the answer length (for vla, action chunks per second, timed over the "
             "quality pass, and in brackets end to end: whole `predict_action` calls, image encoder included). *quality* is "
             f"the task's metric on the held-out samples (lower is better for {', '.join(LOWER_IS_BETTER)}); *sampler* "
             "is the share of decode time spent outside model forwards.", "",
             "| task | method | batch | NFE | tokens/forward | tokens/s | answers/s | vs AR twin | sampler | metric | quality "
             "| AR twin |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def answers_per_s(r):
        rate = f"{r['tokens_per_s'] / r['answer_len']:.1f}"
        end_to_end = r.get("answers_per_s_end_to_end")
        return rate if end_to_end is None else f"{rate} ({end_to_end:.1f})"

    def fmt(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    for r in rows:
        ratio = "-" if r["ratio_to_ar"] is None else f"{r['ratio_to_ar']:.2f}x"
        lines.append(f"| {r['task']} | {r['method']} | {r['batch']} | {r['nfe']:.1f} | {r['tokens_per_forward']:.2f} | "
                     f"{r['tokens_per_s']:.1f} | {answers_per_s(r)} | {ratio} | "
                     f"{100 * r['sampler_share']:.1f}% | {r['metric']} | {fmt(r['quality'])} | {fmt(r['ar_quality'])} |")
    lines += ["", "## The AR bandwidth floor (measured in this run)", "",
              f"Memory read bandwidth: **{bandwidth / 1e9:.1f} GB/s** (best of 5 sums over 1 GiB). One AR step at batch 1 "
              f"reads {step_bytes / 1e6:.1f} MB of weights, so no AR decoder of this model can take less than "
              f"**{floor_ms:.3f} ms per token** here ({1000 / floor_ms:.0f} tokens/s). A row above that rate at batch 1 is "
              "faster than any possible AR decoder of the model on this machine."]
    ar_rows = [r for r in rows if r["model"] == "ar" and r["batch"] == 1]
    if ar_rows:
        step_ms = 1000 * sum(r["wall_time_s"] for r in ar_rows) / sum(r["tokens_per_s"] * r["wall_time_s"]
                                                                    for r in ar_rows)
        lines += ["", f"The AR twin's measured step at batch 1 (all tasks above): **{step_ms:.2f} ms per token**, "
                  f"{step_ms / floor_ms:.0f}x the floor: what bounds it is the cost of a forward (kernel launches, "
                  "Python, attention over the prompt), not reading the weights."]
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.doc, "\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps({"rows": rows, "bandwidth_bytes_per_s": bandwidth,
                                         "ar_step_weight_bytes": step_bytes, "ar_floor_ms_per_token": floor_ms},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
