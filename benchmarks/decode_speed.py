"""Decoding speed: autoregressive Llama vs our masked-diffusion sampler with and without caches.

    python benchmarks/decode_speed.py [--quick] [--json PATH] [--checkpoint DIR --tokenizer DIR --data DIR]

Methods, on one model size (our `tiny` preset, or the checkpoint given) and answers of 64 and 256
tokens at batch 1 and 8:

    (a)  ar          Hugging Face LlamaForCausalLM.generate, greedy, KV cache, same dimensions
    (b)  diffusion   low-confidence remasking, one token per step, no cache
    (c)  +prefix     (b) with the exact prefix KV cache (prefix attention)
    (d)  +threshold  (c) committing every token with p >= 0.9 (Fast-dLLM), blocks of 32
    (d') +dual       (d) with Fast-dLLM's approximate dual cache instead of the exact prefix cache
    (e)  block       block diffusion (block attention, blocks of 32) with the exact block cache

All rows run in one process, interleaved per setting, so machine load hits them alike. The table
reports NFE, tokens per forward, tokens/s (answer columns, <eos> padding included, as the field
counts them), the ratio to (a), and how many of the answer columns hold text before the first
<eos> ("content"; (a) always writes all of them). "Where the time goes" measures the cost of one
forward of each kind next to one AR step and derives the tokens per forward (d) needs for 2.5x.

With a trained checkpoint it also measures quality on 16 test prompts: the model's own ELBO (nats
per token, Monte-Carlo) of each method's answers, (d)'s and (d')'s token agreement with (b), and a
threshold sweep. Writes docs/benchmarks/decode.md (random init) or decode_trained.md (checkpoint).

``--ar-model DIR`` (with ``--checkpoint``) makes (a) a real pretrained causal LM whose text vocabulary
is the checkpoint's, e.g. SmolLM2 against its diffusion adaptation:

    python benchmarks/decode_speed.py --checkpoint runs/adapt_smollm2/model --ar-model runs/pretrained/smollm2-135m \
        --tokenizer runs/pretrained/smollm2-135m --data runs/data/text_long --methods c,d

Prompts reach it as its own token ids; quality is then the likelihood of each method's answers under
that AR model (nats per content token) and their agreement with (b)/(c) and with its greedy answers.
A checkpoint trained with ``shift`` decodes with it (rows whose cache cannot shift are dropped).
Every run also measures this machine's memory read bandwidth and the AR bandwidth floor.

``--run RUN [--ar-run AR_RUN] [--task caption:shapes,...]`` instead measures every task of a trained
run with the task's own quality metric, against its AR twin (`benchmarks/task_decode.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from adaptation import ar_generate, ar_nll, local_text  # noqa: E402
from task_decode import bytes_per_ar_step, read_bandwidth  # noqa: E402

from omnidiff.models.layers import AttentionSpec  # noqa: E402
from omnidiff.models.presets import preset_config  # noqa: E402
from omnidiff.models.transformer import Transformer  # noqa: E402
from omnidiff.sampling import SamplerConfig, generate  # noqa: E402
from omnidiff.tokenization.vocab import Vocab  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
BLOCK = 32
B_NAME, D_NAME, DUAL_NAME = "b: diffusion, no cache", "d: + threshold 0.9 (blocks of 32)", "d': d with approx. dual cache"
E_NAME = "e: block diffusion + block cache"
METHODS = {
    B_NAME: SamplerConfig(attention="prefix", cache="none"),
    "c: + exact prefix cache": SamplerConfig(attention="prefix", cache="prefix"),
    D_NAME: SamplerConfig(attention="prefix", cache="prefix", strategy="threshold", threshold=0.9, block_len=BLOCK),
    DUAL_NAME: SamplerConfig(attention="prefix", cache="approx_dual", strategy="threshold", threshold=0.9,
                             block_len=BLOCK),
    E_NAME: SamplerConfig(attention="block", cache="block", block_len=BLOCK, strategy="threshold", threshold=0.9),
}


def llama_twin(cfg):
    """A randomly initialised Llama with our model's dimensions (dense FFN = our active FFN width)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden = cfg.moe.top_k * cfg.moe.expert_hidden if cfg.moe is not None else cfg.ffn_hidden
    lc = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=hidden,
                     num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                     num_key_value_heads=cfg.num_kv_heads or cfg.num_heads, max_position_embeddings=cfg.max_positions,
                     bos_token_id=2, eos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(lc).eval()


AR_NAME = "a: HF Llama generate (AR, KV cache)"
METHOD_KEYS = {"b": B_NAME, "c": "c: + exact prefix cache", "d": D_NAME, "d'": DUAL_NAME, "e": E_NAME}


def pick_methods(keys: str | None, shift: bool) -> dict[str, SamplerConfig]:
    """The methods named by ``keys`` ("c,d"; all by default), with ``shift`` for AR-adapted checkpoints
    (whose logits at column i predict token i + 1): only the no-cache and prefix-cache rows can shift."""
    wanted = [k.strip() for k in keys.split(",")] if keys else list(METHOD_KEYS)
    unknown = [k for k in wanted if k not in METHOD_KEYS]
    if unknown:
        raise SystemExit(f"error: unknown --methods {unknown}; choose from {', '.join(METHOD_KEYS)}")
    methods = {METHOD_KEYS[k]: METHODS[METHOD_KEYS[k]] for k in wanted}
    if shift:
        methods = {n: replace(c, shift=True) for n, c in methods.items() if c.cache in ("none", "prefix")}
    if not methods:
        raise SystemExit(f"error: none of --methods {keys} can decode a shifted (AR-adapted) model; use b, c or d")
    return methods


def checkpoint_shift(checkpoint: str | None) -> bool:
    """Whether the checkpoint was trained with ``shift`` (its exported generation settings)."""
    from omnidiff.files import read_json
    from omnidiff.pipelines.base import GENERATION_FILE

    settings = Path(checkpoint or "") / GENERATION_FILE
    return bool(checkpoint) and settings.exists() and bool(read_json(settings, "generation settings").get("shift"))


def load_ar(folder: str, vocab):
    """A pretrained HF causal LM whose vocabulary is our text range, row for row."""
    from transformers import AutoModelForCausalLM

    if not (Path(folder) / "config.json").exists():
        raise SystemExit(f"error: --ar-model {folder} is not a Hugging Face model folder (no config.json); "
                         "for SmolLM2 run `make smollm2`")
    ar = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    if ar.config.vocab_size != vocab.range("text").size:
        raise SystemExit(f"error: --ar-model has a vocabulary of {ar.config.vocab_size}, the checkpoint's text range "
                         f"{vocab.range('text').size}: give the model the checkpoint was adapted from")
    return ar


def ar_judge(ar, vocab, prompts: list[torch.Tensor], answers: torch.Tensor) -> tuple[float, int]:
    """Mean NLL (nats) per token of each answer's text before its first <eos>, under the AR model given the
    prompt, and the number of tokens judged (`adaptation.ar_nll` on the trimmed answers)."""
    pairs = []
    for prompt, answer in zip(prompts, answers, strict=True):
        eos = (answer == vocab.eos_id).nonzero()
        answer = answer[: int(eos[0]) if eos.numel() else answer.numel()]
        if local_text(vocab, answer).numel():
            pairs.append((prompt, answer))
    total, count = ar_nll(ar, vocab, pairs)
    return total / max(count, 1), count


def ar_quality(model, ar, vocab, pairs, answer_len: int, methods: dict[str, SamplerConfig],
               thresholds=(0.5, 0.7, 0.9)) -> dict:
    """Each method's answers judged by the pretrained AR model, beside the AR model's own greedy answers."""
    prompts = [p for p, _ in pairs]
    greedy = ar_generate(ar, [local_text(vocab, p) for p in prompts], answer_len) + vocab.range("text").offset
    configs = {n: c for n, c in methods.items() if c.strategy != "threshold"}
    threshold_cfg = next((c for c in methods.values() if c.strategy == "threshold"), None)
    if threshold_cfg is not None:
        configs.update({f"d, tau {tau}": replace(threshold_cfg, threshold=tau) for tau in thresholds})
    rows, base = [], None
    for name, tokens, cfg in [("a: AR greedy", greedy, None)] + [(n, None, c) for n, c in configs.items()]:
        stats = {"nfe": answer_len, "tokens_per_step": 1.0}
        if cfg is not None:
            out = generate(model, prompts, answer_len=answer_len, vocab=vocab, config=cfg)
            tokens, stats = out.tokens, out.stats
            base = tokens if base is None else base
        nll, judged = ar_judge(ar, vocab, prompts, tokens)
        rows.append({"method": name, "answer_len": answer_len, "prompts": len(prompts), "ar_nll": nll,
                     "tokens_judged": judged, "content_tokens": content_length(tokens, vocab.eos_id),
                     "agreement_with_ar": float((tokens == greedy).float().mean()),
                     "agreement_with_first": None if base is None else float((tokens == base).float().mean()),
                     "tokens_per_step": stats["tokens_per_step"], "nfe": stats["nfe"]})
        print(f"quality {name:16s} AR nll {nll:.3f} ({judged} tokens)  agree AR {rows[-1]['agreement_with_ar']:.3f}  "
              f"tok/step {rows[-1]['tokens_per_step']:.2f}", flush=True)
    return {"answer_len": answer_len, "prompts": len(prompts), "first": next(iter(configs)), "rows": rows}


def run_ar(llama, prompts: list[torch.Tensor], answer_len: int) -> dict:
    start = time.perf_counter()
    ar_generate(llama, prompts, answer_len)
    wall = time.perf_counter() - start
    return {"nfe": answer_len, "tokens_per_forward": 1.0, "tokens_per_s": len(prompts) * answer_len / wall,
            "wall_time_s": wall, "content_tokens": float(answer_len)}


def content_length(tokens_BA: torch.Tensor, eos_id: int) -> float:
    """Mean number of answer columns before the first <eos> (all of them when there is none)."""
    is_eos = tokens_BA == eos_id
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), tokens_BA.shape[1])
    return float(first.float().mean())


def load_model(args, checkpoint: str | None = None):
    checkpoint = checkpoint or args.checkpoint
    if checkpoint:
        from omnidiff.models.hf import OmniDiffModel

        wrapper = OmniDiffModel.from_pretrained(checkpoint)
        return wrapper.model.eval(), wrapper.vocab
    vocab = Vocab.build({"text": 4096})
    torch.manual_seed(0)
    return Transformer(preset_config(args.preset, vocab_size=len(vocab))).eval(), vocab


def model_for(cfg: SamplerConfig, model, block_model):
    """The block-trained model decodes the block-attention rows when there is one."""
    return block_model if cfg.attention == "block" and block_model is not None else model


def load_prompts(args, vocab, n: int, skip: int = 0) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(prompt, reference continuation or None): the recipe's own split of test documents, or random ids."""
    if args.data and args.tokenizer:
        from omnidiff.data.shards import ShardStream, split_shards
        from omnidiff.tasks.text import TextTask
        from omnidiff.tokenization.text import TextTokenizer

        tok, task = TextTokenizer.load(args.tokenizer), TextTask()
        out, seen = [], 0
        for sample in ShardStream(split_shards(args.data, "test"), shuffle=False):
            ids = tok.to_global(vocab, tok.encode(sample["txt"])).long()
            if ids.numel() < 24:
                continue
            seen += 1
            if seen <= skip:
                continue
            cut = task.split(ids.numel())
            out.append((torch.cat([torch.tensor([vocab.bos_id]), ids[:cut]]), ids[cut:]))
            if len(out) == n:
                return out
        raise SystemExit(f"error: only {len(out)} test documents of >= 24 tokens in {args.data}; need {n}")
    g = torch.Generator().manual_seed(skip)
    text = vocab.range("text")
    return [(torch.cat([torch.tensor([vocab.bos_id]), torch.randint(text.offset, text.end, (15 + i % 8,), generator=g)]),
             None) for i in range(n)]


@torch.no_grad()
def forward_costs(model, llama, prompt: torch.Tensor, answer_len: int, to_ar=lambda p: p, repeats: int = 5) -> dict:
    """Median ms of one forward of each kind the samplers make, next to one AR decoding step."""
    P = prompt.numel()
    cache = model.new_cache()
    model(prompt.view(1, -1), kv_cache=cache)
    cache.frozen = True
    answer = torch.full((1, answer_len), 5, dtype=torch.long)
    pos = torch.arange(P, P + answer_len).view(1, -1)
    spec = AttentionSpec("full", padding_mask=torch.ones(1, answer_len, dtype=torch.bool))
    bspec = AttentionSpec("full", padding_mask=torch.ones(1, BLOCK, dtype=torch.bool))
    kinds = {
        "prefix-cached forward over the whole answer, logits for one block (c, d)":
            lambda: model(answer, attention=spec, positions=pos, kv_cache=cache, logits_columns=slice(0, BLOCK)),
        "one block against a cache (e, d' after its first step)":
            lambda: model(answer[:, :BLOCK], attention=bspec, positions=pos[:, :BLOCK], kv_cache=cache),
    }
    times = {k: [] for k in kinds}
    for _ in range(repeats):
        for name, fn in kinds.items():
            start = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - start))
    out = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    steps = 64
    ar = run_ar(llama, [to_ar(prompt)], steps)
    out["AR step (HF generate, per token)"] = 1000 * ar["wall_time_s"] / steps
    return out


def quality(model, vocab, pairs, answer_len: int, block_model=None, thresholds=(0.5, 0.7, 0.9)) -> dict:
    """ELBO of each method's answers, agreement with (b), content length, and a threshold sweep.

    ``model`` judges every method's answers (its ELBO), including those (e) writes with ``block_model``.
    """
    from omnidiff.diffusion.likelihood import LikelihoodConfig, answer_log_likelihood

    prompts = [p for p, _ in pairs]
    refs = torch.stack([torch.nn.functional.pad(r[:answer_len], (0, max(0, answer_len - r.numel())),
                                                value=vocab.eos_id) for _, r in pairs])
    lcfg = LikelihoodConfig(num_samples=16, batch_size=32, mask_id=vocab.mask_id, pad_id=vocab.pad_id)

    def elbo(tokens):
        return float(answer_log_likelihood(model, prompts, list(tokens), lcfg, generator=torch.Generator().manual_seed(0)
                                           ).nats_per_token.mean())

    configs = {B_NAME: METHODS[B_NAME]}
    for tau in thresholds:
        configs[f"d, tau {tau}"] = replace(METHODS[D_NAME], threshold=tau)
        configs[f"d', tau {tau}"] = replace(METHODS[DUAL_NAME], threshold=tau)
    if block_model is not None:
        configs.update({f"e, tau {tau}": replace(METHODS[E_NAME], threshold=tau) for tau in thresholds})
    real = refs != vocab.eos_id
    rows, base = [], None
    for name, cfg in configs.items():
        out = generate(model_for(cfg, model, block_model), prompts, answer_len=answer_len, vocab=vocab, config=cfg)
        base = out.tokens if base is None else base
        rows.append({"method": name, "answer_len": answer_len, "prompts": len(prompts), "elbo": elbo(out.tokens),
                     "agreement_with_b": float((out.tokens == base).float().mean()),
                     "reference_match": float(((out.tokens == refs) & real).sum() / real.sum().clamp_min(1)),
                     "content_tokens": content_length(out.tokens, vocab.eos_id),
                     "tokens_per_step": out.stats["tokens_per_step"], "nfe": out.stats["nfe"]})
        print(f"quality {name:16s} elbo {rows[-1]['elbo']:.3f}  agree {rows[-1]['agreement_with_b']:.3f}  "
              f"content {rows[-1]['content_tokens']:.1f}  tok/step {rows[-1]['tokens_per_step']:.2f}", flush=True)
    for r in rows:
        r["elbo_vs_b"] = r["elbo"] / rows[0]["elbo"] - 1
    return {"answer_len": answer_len, "prompts": len(prompts), "rows": rows}


def speed_rows(args, model, block_model, vocab, llama, methods, to_ar) -> list[dict]:
    """(a) and every method at each (answer length, batch) setting, interleaved so load hits them alike."""
    settings = [(64, 1)] if args.quick else [(64, 1), (64, 8), (256, 1), (256, 8)]
    rows = []
    for answer_len, batch in settings:
        prompts = [p for p, _ in load_prompts(args, vocab, batch)]
        run_ar(llama, [to_ar(p) for p in prompts[:1]], 4)  # warm-up
        ar = run_ar(llama, [to_ar(p) for p in prompts], answer_len)
        rows.append({"method": AR_NAME, "answer_len": answer_len, "batch": batch, **ar, "ratio_to_ar": 1.0})
        for name, cfg in methods.items():
            out = generate(model_for(cfg, model, block_model), prompts, answer_len=answer_len, vocab=vocab, config=cfg)
            st = out.stats
            rows.append({"method": name, "answer_len": answer_len, "batch": batch, "nfe": st["nfe"],
                         "tokens_per_forward": st["tokens_per_forward"], "tokens_per_s": st["tokens_per_s"],
                         "wall_time_s": st["wall_time_s"], "ratio_to_ar": st["tokens_per_s"] / ar["tokens_per_s"],
                         "content_tokens": content_length(out.tokens, vocab.eos_id)})
            print(f"{answer_len:4d} x{batch} {name:40s} nfe {st['nfe']:4d}  {st['tokens_per_s']:8.1f} tok/s  "
                  f"{rows[-1]['ratio_to_ar']:.2f}x AR  content {rows[-1]['content_tokens']:.0f}", flush=True)
    return rows


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64-token answers, batch 1 only")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--checkpoint", help="an OmniDiffModel folder (e.g. runs/text_recipe/model)")
    parser.add_argument("--block-checkpoint", help="a model of the same size trained with block attention, for (e) "
                        "(e.g. runs/text_block/model); default: (e) runs on --checkpoint, for speed only")
    parser.add_argument("--ar-model", help="a pretrained HF causal LM sharing the checkpoint's text vocabulary, as (a) "
                        "and as the quality judge (e.g. runs/pretrained/smollm2-135m)")
    parser.add_argument("--methods", help="comma-separated subset of b,c,d,d',e (default: all that apply)")
    parser.add_argument("--tokenizer", help="text tokenizer folder, for real prompts")
    parser.add_argument("--data", help="text dataset folder, for real prompts (test split)")
    parser.add_argument("--quality-len", type=int, default=256, help="answer length of the quality section")
    parser.add_argument("--quality-prompts", type=int, default=16, help="test prompts of the quality section")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--doc", type=Path, help="the page to write (default: docs/benchmarks/decode.md, "
                        "decode_trained.md with --checkpoint, decode_adapted.md with --ar-model)")
    args = parser.parse_args()
    for name, path in (("--checkpoint", args.checkpoint), ("--block-checkpoint", args.block_checkpoint),
                       ("--tokenizer", args.tokenizer), ("--data", args.data), ("--ar-model", args.ar_model)):
        if path and not Path(path).exists():
            raise SystemExit(f"error: {name} {path} does not exist")
    if args.ar_model and not args.checkpoint:
        raise SystemExit("error: --ar-model needs --checkpoint (the diffusion model adapted from it)")
    return args


def main() -> None:
    if any(a == "--run" or a.startswith(("--task", "--run=")) for a in sys.argv[1:]):  # the per-task table
        from task_decode import main as task_main

        raise SystemExit(task_main(sys.argv[1:]))
    args = parse_args()
    model, vocab = load_model(args)
    block_model = load_model(args, args.block_checkpoint)[0] if args.block_checkpoint else None
    if block_model is not None and block_model.cfg != model.cfg:
        raise SystemExit("error: --block-checkpoint must have the same model config (size, vocabulary) as --checkpoint")
    methods = pick_methods(args.methods, checkpoint_shift(args.checkpoint))
    llama = load_ar(args.ar_model, vocab) if args.ar_model else llama_twin(model.cfg)
    to_ar = (lambda p: local_text(vocab, p)) if args.ar_model else (lambda p: p)
    rows = speed_rows(args, model, block_model, vocab, llama, methods, to_ar)
    long_len = 64 if args.quick else 256
    costs = forward_costs(model, llama, load_prompts(args, vocab, 1)[0][0], long_len, to_ar)
    floor = {"bandwidth_bytes_per_s": read_bandwidth(), "ar_step_bytes": bytes_per_ar_step(model)}
    pairs = load_prompts(args, vocab, args.quality_prompts, skip=8) if args.checkpoint else None
    if args.ar_model:
        qual = ar_quality(model, llama, vocab, pairs, args.quality_len, methods)
    else:
        qual = quality(model, vocab, pairs, args.quality_len, block_model) if pairs else None
    lines = report(args, rows, costs, floor, qual, long_len)
    out_doc = args.doc or DOCS / ("decode_adapted.md" if args.ar_model else "decode_trained.md" if args.checkpoint
                                  else "decode.md")
    out_doc.parent.mkdir(parents=True, exist_ok=True)
    out_doc.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
        extra = {"forward_ms": costs, **floor, **({"quality": qual} if qual else {})}
        args.json.with_suffix(".details.json").write_text(json.dumps(extra, indent=2))


def report(args, rows, costs, floor, qual, long_len) -> list[str]:
    """The page: speed table, where the time goes, the AR bandwidth floor, quality."""
    model_name = args.checkpoint or f"{args.preset} (random init)"
    if args.block_checkpoint:
        model_name += f"; (e) on {args.block_checkpoint}"
    if args.ar_model:
        model_name += f"; (a) is {args.ar_model} itself"
    cmd = "python benchmarks/decode_speed.py " + " ".join(sys.argv[1:])
    lines = ["# Decoding speed", "", f"`{cmd}` — model: {model_name}, fp32 CPU, {torch.get_num_threads()} threads.", "",
             "tokens/s counts every answer column (<eos> padding included); *content* is the mean number of columns "
             "before the first <eos> ((a) always writes all of them).", "",
             "| answer | batch | method | NFE | tokens/forward | tokens/s | vs AR | content |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['answer_len']} | {r['batch']} | {r['method']} | {r['nfe']} | {r['tokens_per_forward']:.2f} | "
                     f"{r['tokens_per_s']:.1f} | {r['ratio_to_ar']:.2f}x | {r['content_tokens']:.0f} |")
    ar_ms = costs["AR step (HF generate, per token)"]
    full_ms = costs["prefix-cached forward over the whole answer, logits for one block (c, d)"]
    block_ms = costs["one block against a cache (e, d' after its first step)"]
    lines += ["", f"## Where the time goes ({long_len}-token answer, batch 1, median of 5)", "",
              "| forward | ms | AR steps it costs |", "|---|---|---|"]
    lines += [f"| {k} | {v:.2f} | {v / ar_ms:.1f} |" for k, v in costs.items()]
    lines += ["", f"(d) reaches 2.5x AR only if it commits at least 2.5 x {full_ms:.2f} / {ar_ms:.2f} = "
              f"**{2.5 * full_ms / ar_ms:.1f} tokens per forward** on average (ignoring its sampling overhead); "
              f"a sampler forwarding one {BLOCK}-token block against a cache needs {2.5 * block_ms / ar_ms:.1f}."]
    floor_ms = 1000 * floor["ar_step_bytes"] / floor["bandwidth_bytes_per_s"]
    lines += ["", "## The AR bandwidth floor (measured in this run)", "",
              f"Memory read bandwidth **{floor['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s** (best of 5 sums over 1 GiB). "
              f"One AR step at batch 1 reads {floor['ar_step_bytes'] / 1e6:.1f} MB of weights, so no AR decoder of this "
              f"model can take less than **{floor_ms:.2f} ms per token** here ({1000 / floor_ms:.0f} tokens/s); the "
              f"measured AR step above is {ar_ms:.2f} ms ({ar_ms / floor_ms:.1f}x the floor). A diffusion row above "
              f"{1000 / floor_ms:.0f} tokens/s at batch 1 is faster than any possible AR decoder of this model here."]
    if qual and args.ar_model:
        lines += ["", f"## Quality judged by the AR model ({qual['prompts']} test prompts, {qual['answer_len']}-token "
                  "answers)", "",
                  "NLL under the AR model (nats per token of each answer's text before its first <eos>; lower = more "
                  "likely), tokens judged, agreement (same token in the same column) with the AR model's greedy answers "
                  "and with the first diffusion row, content length, tokens committed per step.", "",
                  "| method | AR NLL | tokens judged | agreement with AR greedy | agreement with first row | content | "
                  "tokens/step |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['ar_nll']:.3f} | {r['tokens_judged']} | {100 * r['agreement_with_ar']:.1f}% | "
                  f"{'-' if r['agreement_with_first'] is None else format(100 * r['agreement_with_first'], '.1f') + '%'} | "
                  f"{r['content_tokens']:.1f} | {r['tokens_per_step']:.2f} |" for r in qual["rows"]]
    elif qual:
        lines += ["", f"## Quality ({qual['prompts']} test prompts, {qual['answer_len']}-token answers)", "",
                  "Model ELBO of each method's answers (nats/token, lower = more likely under the model), relative to "
                  "(b); token agreement with (b); tokens matching the reference continuation (over its text columns); "
                  "content length; tokens committed per step (per row, averaged). The (e) rows are written by the block-attention model and "
                  "judged by the same prefix model as the rest.", "",
                  "| method | ELBO | vs (b) | agreement with (b) | reference match | content | tokens/step |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['elbo']:.3f} | {100 * r['elbo_vs_b']:+.1f}% | {100 * r['agreement_with_b']:.1f}% | "
                  f"{100 * r['reference_match']:.1f}% | {r['content_tokens']:.1f} | {r['tokens_per_step']:.2f} |"
                  for r in qual["rows"]]
    return lines


if __name__ == "__main__":
    main()
