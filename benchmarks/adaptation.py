"""AR model against its diffusion adaptation (and a from-scratch twin) on the same held-out text.

    python benchmarks/adaptation.py --ar runs/pretrained/smollm2-135m \
        --model adapted=runs/adapt_smollm2/model --model scratch=runs/scratch_smollm2/model \
        --data runs/data/text_long --num 16 --json docs/adaptation.json

For the first ``--num`` passages of the data's ``test`` split (each cut as `TextTask` cuts it: a
prompt, then an answer of ``--answer-len`` tokens):

- **likelihood**: the AR model's perplexity of the answers given their prompts (exact: one causal
  forward) next to each diffusion model's ELBO-bound perplexity of the same answers
  (`omnidiff.diffusion.likelihood.answer_log_likelihood`, ``--samples`` Monte-Carlo masks each).
  The bound is an upper bound on the diffusion model's perplexity, so it is the stricter number.
- **fill-in-the-middle without reordering**: ``--span`` answer tokens starting ``--span-start`` tokens
  into the answer are hidden; each diffusion model fills them seeing the text before *and after*
  (`generate` with the suffix given in ``answer_init``), the AR model continues greedily from the
  text before (all it can see without reordering). Scored by token accuracy and exact spans.

- **samples**: the first ``--show`` prompts continued by the AR model (greedy) and by each diffusion
  model (its pipeline's default sampler), ``--sample-len`` tokens each.
- **the curve over training minutes** (``--run NAME=RUN_DIR``, repeatable): each run's validation ELBO
  (the trainer's fixed masks, ``metrics.jsonl``) against its training minutes, next to the AR model's
  exact NLL of the same split's first ``--num`` answers; drawn to ``--plot``.

Prints a table and writes it (with samples) to ``--doc``; ``--json`` gets the headline numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def held_out(pipe, data: str, num: int, answer_len: int, split: str = "test") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(prompt, answer) global ids of the first ``num`` passages of ``split``, answers without <eos> padding."""
    from omnidiff.eval.__main__ import read_samples
    from omnidiff.tasks import get_task

    pairs = []
    for sample in read_samples(data, split, num):
        prefix, answer = get_task("text").format(sample, pipe.tokenizers, pipe.vocab, answer_len)
        answer = answer[answer != pipe.vocab.eos_id]
        if answer.numel():
            pairs.append((prefix, answer))
    if not pairs:
        raise ValueError(f"{data} has no {split} passages")
    return pairs


def local_text(vocab, ids: torch.Tensor) -> torch.Tensor:
    """Text ids of a global sequence, specials (<bos>) dropped: what the HF model reads."""
    keep = torch.tensor([vocab.modality_of(int(i)) == "text" for i in ids], dtype=torch.bool)
    return vocab.to_local("text", ids[keep])


@torch.no_grad()
def ar_nll(ar, vocab, pairs) -> tuple[float, int]:
    """Summed NLL (nats) of the answers given their prompts under the HF causal LM, and the token count."""
    total, count = 0.0, 0
    for prompt, answer in pairs:
        p, a = local_text(vocab, prompt), local_text(vocab, answer)
        ids = torch.cat([p, a])[None]
        logits = ar(ids).logits[0, p.numel() - 1:-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, a, reduction="sum"))
        count += a.numel()
    return total, count


def diffusion_nll(pipe, pairs, samples: int, seed: int) -> tuple[float, int]:
    from omnidiff.diffusion.likelihood import LikelihoodConfig, answer_log_likelihood

    s = pipe.settings
    cfg = LikelihoodConfig(num_samples=samples, batch_size=16, attention=s.get("attention", "prefix"),
                           shift=bool(s.get("shift", False)), mask_id=pipe.vocab.mask_id, pad_id=pipe.vocab.pad_id)
    out = answer_log_likelihood(pipe.model, [p for p, _ in pairs], [a for _, a in pairs], cfg,
                                generator=torch.Generator().manual_seed(seed))
    return float(-out.log_likelihood.sum()), sum(a.numel() for _, a in pairs)


@torch.no_grad()
def ar_generate(ar, prompts: list[torch.Tensor], answer_len: int) -> torch.Tensor:
    """[B, answer_len] greedy continuations of the AR model (its own ids), prompts left-padded."""
    from omnidiff.sampling import left_pad

    ids, real = left_pad(prompts, 0)
    out = ar.generate(input_ids=ids, attention_mask=real.long(), max_new_tokens=answer_len,
                      min_new_tokens=answer_len, do_sample=False, use_cache=True, pad_token_id=0)
    return out[:, ids.shape[1]:]


def fim_cases(pairs, start: int, span: int, tail: int):
    """(prompt + answer[:start], hidden span, the tail after it) for answers long enough."""
    cases = []
    for prompt, answer in pairs:
        if answer.numel() >= start + span + 1:
            cases.append((torch.cat([prompt, answer[:start]]), answer[start:start + span],
                          answer[start + span:start + span + tail]))
    if not cases:
        raise ValueError(f"no answer is longer than --span-start + --span ({start + span}) tokens")
    return cases


def diffusion_fill(pipe, cases, seed: int) -> list[torch.Tensor]:
    vocab, span = pipe.vocab, cases[0][1].numel()
    filled = []
    for prefix, _, tail in cases:
        init = torch.cat([torch.full((span,), vocab.mask_id), tail])[None]
        answers, _ = pipe.decode([prefix], init.shape[1], seed=seed, answer_init=init)
        filled.append(answers[0, :span])
    return filled


@torch.no_grad()
def ar_fill(ar, vocab, cases) -> list[torch.Tensor]:
    out = []
    for prefix, middle, _ in cases:
        ids = local_text(vocab, prefix)[None]
        gen = ar.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=middle.numel(), do_sample=False,
                          pad_token_id=0)
        out.append(vocab.to_global("text", gen[0, ids.shape[1]:]))
    return out


def fim_scores(filled, cases) -> dict[str, float]:
    right = [(f[: m.numel()] == m).float() if f.numel() >= m.numel() else torch.zeros(m.numel())
             for f, (_, m, _) in zip(filled, cases, strict=True)]
    return {"token_accuracy": round(float(torch.cat(right).mean()), 4),
            "exact": round(sum(float(r.all()) for r in right) / len(right), 4)}


def val_curve(run_dir: str | Path) -> list[dict]:
    """(step, training minutes, validation ELBO, its bound perplexity) of every validation row of a run."""
    metrics = Path(run_dir) / "metrics.jsonl"
    if not metrics.exists():
        raise FileNotFoundError(f"{metrics} does not exist: --run takes a folder written by train.py")
    minutes: dict[int, float] = {}
    val: dict[int, float] = {}
    for line in metrics.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if "train_minutes" in row:
            minutes[int(row["step"])] = float(row["train_minutes"])
        if row.get("split") == "val" and "elbo" in row:
            val[int(row["step"])] = float(row["elbo"])  # a resumed run's repeat of a step replaces the first
    if not val:
        raise ValueError(f"{metrics} has no validation rows: train with train.eval_every > 0")
    curve = []
    for step, elbo in sorted(val.items()):
        logged = [m for s, m in minutes.items() if s <= step]
        curve.append({"step": step, "minutes": round(max(logged), 2) if logged else None, "val_elbo": round(elbo, 4),
                      "bound_perplexity": round(math.exp(elbo), 1)})
    return curve


def plot_val_curves(curves: dict[str, list[dict]], ar_nats: float, path: Path) -> None:
    """Validation ELBO against training minutes, one line per run and the AR model's NLL as a flat line,
    drawn by the learning-curve plotter of `omnidiff.eval.curves`."""
    from omnidiff.eval.curves import plot_curves

    lines = {name: [(c["minutes"], c["val_elbo"]) for c in curve if c["minutes"] is not None]
             for name, curve in curves.items()}
    end = max(m for points in lines.values() for m, _ in points)
    lines["AR model (exact NLL)"] = [(0.0, ar_nats), (end, ar_nats)]
    plot_curves({"val nats/token (diffusion: ELBO bound)": lines}, path)


@torch.no_grad()
def samples(ar, pipes: dict, pairs, show: int, length: int, seed: int) -> list[dict]:
    """The first ``show`` prompts continued by the AR model (greedy) and by every diffusion model."""
    first = next(iter(pipes.values()))
    vocab, tok = first.vocab, first.tokenizers.text
    out = []
    for prompt, answer in pairs[:show]:
        ids = local_text(vocab, prompt)
        row = {"prompt": tok.decode(ids.tolist()), "reference": tok.decode_global(vocab, answer[:length]),
               "AR": tok.decode(ar_generate(ar, [ids], length)[0].tolist())}
        for name, pipe in pipes.items():
            answers, _ = pipe.decode([prompt], length, seed=seed)
            row[name] = pipe.text_of(answers[0])
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ar", type=Path, required=True, help="HF causal LM folder (runs/pretrained/smollm2-135m)")
    parser.add_argument("--model", action="append", default=[], help="NAME=MODEL_DIR of a diffusion model (repeatable)")
    parser.add_argument("--data", default="runs/data/text_long")
    parser.add_argument("--split", default="test")
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--answer-len", type=int, default=128)
    parser.add_argument("--samples", type=int, default=16, help="Monte-Carlo masks per answer for the ELBO")
    parser.add_argument("--span-start", type=int, default=32)
    parser.add_argument("--span", type=int, default=16)
    parser.add_argument("--tail", type=int, default=48, help="tokens after the span the diffusion models see")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=3, help="prompts continued by every model in the report")
    parser.add_argument("--sample-len", type=int, default=48)
    parser.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR: a training run's validation "
                        "ELBO over its minutes (repeatable)")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "benchmarks" / "adaptation_curve.png")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "adaptation.md")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    try:
        models, runs = (dict(m.split("=", 1) if "=" in m else (m, "") for m in given) for given in (args.model, args.run))
        if not models or any(not v for v in models.values()):
            raise ValueError("give at least one --model NAME=MODEL_DIR")
        if any(not v for v in runs.values()):
            raise ValueError(f"--run takes NAME=RUN_DIR, got {args.run}")
        return run(args, models, {name: val_curve(path) for name, path in runs.items()})
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args, models: dict[str, str], curves: dict[str, list[dict]]) -> int:
    from transformers import AutoModelForCausalLM

    from omnidiff.files import atomic_write_text
    from omnidiff.pipelines import TextPipeline

    if not (args.ar / "config.json").exists():
        raise FileNotFoundError(f"{args.ar} is not a Hugging Face model folder; run `make smollm2`")
    pipes = {name: TextPipeline.from_pretrained(path) for name, path in models.items()}
    first = next(iter(pipes.values()))
    pairs = held_out(first, args.data, args.num, args.answer_len, args.split)
    cases = fim_cases(pairs, args.span_start, args.span, args.tail)
    ar = AutoModelForCausalLM.from_pretrained(args.ar, dtype=torch.float32).eval()
    start = time.perf_counter()
    nll, count = ar_nll(ar, first.vocab, pairs)
    ar_fim = fim_scores(ar_fill(ar, first.vocab, cases), cases)
    rows = [{"model": "AR (HF causal LM)", "nats_per_token": round(nll / count, 4),
             "perplexity": round(math.exp(nll / count), 3), "bound": False, "fim": ar_fim,
             "seconds": round(time.perf_counter() - start, 1)}]
    for name, pipe in pipes.items():
        start = time.perf_counter()
        nll, count = diffusion_nll(pipe, pairs, args.samples, args.seed)
        fim = fim_scores(diffusion_fill(pipe, cases, args.seed), cases)
        rows.append({"model": name, "nats_per_token": round(nll / count, 4), "perplexity": round(math.exp(nll / count), 3),
                     "bound": True, "fim": fim, "seconds": round(time.perf_counter() - start, 1)})
    shown = samples(ar, pipes, pairs, args.show, args.sample_len, args.seed) if args.show > 0 else []
    ar_val = None
    if curves:
        val_nll, val_count = ar_nll(ar, first.vocab, held_out(first, args.data, args.num, args.answer_len, "val"))
        ar_val = round(val_nll / val_count, 4)
        plot_val_curves(curves, ar_val, args.plot)
    table = ["| model | nats/token | perplexity | FIM token accuracy | FIM exact spans |", "|---|---|---|---|---|"]
    for r in rows:
        kind = " (ELBO bound)" if r["bound"] else " (exact)"
        table.append(f"| {r['model']} | {r['nats_per_token']} | {r['perplexity']}{kind} | "
                     f"{r['fim']['token_accuracy']:.3f} | {r['fim']['exact']:.3f} |")
    setting = (f"{len(pairs)} held-out passages of `{args.data}` ({args.split} split), answers of up to {args.answer_len} "
               f"tokens, {args.samples} Monte-Carlo masks per answer; fill-in-the-middle: {args.span} tokens from "
               f"answer token {args.span_start}, {len(cases)} passages, diffusion models see {args.tail} tokens after "
               "the span, the AR model only the text before it")
    text = "\n".join(table)
    print(setting)
    print(text)
    command = "python benchmarks/adaptation.py " + " ".join(args.argv)
    doc = f"# AR against diffusion on the same held-out text\n\n`{command}`\n\n{setting}.\n\n{text}\n"
    doc += curve_section(curves, ar_val, args) + samples_section(shown, args.sample_len)
    atomic_write_text(args.doc, doc)
    if args.json:
        headline = {"setting": setting, "rows": rows, "samples": shown}
        if curves:
            headline["curves"] = {"ar_val_nats_per_token": ar_val, **curves}
        atomic_write_text(args.json, json.dumps(headline, indent=2) + "\n")
    return 0


def curve_section(curves: dict[str, list[dict]], ar_val: float | None, args) -> str:
    if not curves:
        return ""
    lines = ["", "## Validation ELBO over training minutes", "",
             f"The trainer's validation ELBO (nats per answer token, its fixed masks) of each run; the AR model's exact "
             f"NLL of the first {args.num} answers of the same (val) split: **{ar_val:.3f}** (perplexity "
             f"{math.exp(ar_val):.1f}). Drawn in `{args.plot.name}`.", "",
             "| run | step | training minutes | val ELBO | bound perplexity |", "|---|---|---|---|---|"]
    for name, curve in curves.items():
        lines += [f"| {name} | {c['step']} | {c['minutes']} | {c['val_elbo']:.3f} | {c['bound_perplexity']} |" for c in curve]
    return "\n".join(lines) + "\n"


def samples_section(shown: list[dict], length: int) -> str:
    if not shown:
        return ""
    lines = ["", f"## Samples ({length} tokens; AR greedy, diffusion models with their default sampler)", ""]
    for i, row in enumerate(shown):
        lines += [f"### Prompt {i + 1}", ""]
        lines += [f"- **{key}**: {json.dumps(value, ensure_ascii=False)}" for key, value in row.items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
