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

import torch  # noqa: E402

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


def run_ar(llama, prompts: list[torch.Tensor], answer_len: int) -> dict:
    P = max(p.numel() for p in prompts)
    ids = torch.zeros(len(prompts), P, dtype=torch.long)
    att = torch.zeros(len(prompts), P, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - p.numel():], att[i, P - p.numel():] = p, 1
    start = time.perf_counter()
    with torch.no_grad():
        llama.generate(input_ids=ids, attention_mask=att, max_new_tokens=answer_len, min_new_tokens=answer_len,
                       do_sample=False, use_cache=True)
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
def forward_costs(model, llama, prompt: torch.Tensor, answer_len: int, repeats: int = 5) -> dict:
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
    ar = run_ar(llama, [prompt], steps)
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


def main() -> None:
    if any(a == "--run" or a.startswith(("--task", "--run=")) for a in sys.argv[1:]):  # the per-task table
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from task_decode import main as task_main

        raise SystemExit(task_main(sys.argv[1:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64-token answers, batch 1 only")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--checkpoint", help="an OmniDiffModel folder (e.g. runs/text_recipe/model)")
    parser.add_argument("--block-checkpoint", help="a model of the same size trained with block attention, for (e) "
                        "(e.g. runs/text_block/model); default: (e) runs on --checkpoint, for speed only")
    parser.add_argument("--tokenizer", help="text tokenizer folder, for real prompts")
    parser.add_argument("--data", help="text dataset folder, for real prompts (test split)")
    parser.add_argument("--quality-len", type=int, default=256, help="answer length of the quality section")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for name, path in (("--checkpoint", args.checkpoint), ("--block-checkpoint", args.block_checkpoint),
                       ("--tokenizer", args.tokenizer), ("--data", args.data)):
        if path and not Path(path).exists():
            raise SystemExit(f"error: {name} {path} does not exist")

    model, vocab = load_model(args)
    block_model = load_model(args, args.block_checkpoint)[0] if args.block_checkpoint else None
    if block_model is not None and block_model.cfg != model.cfg:
        raise SystemExit("error: --block-checkpoint must have the same model config (size, vocabulary) as --checkpoint")
    llama = llama_twin(model.cfg)
    settings = [(64, 1)] if args.quick else [(64, 1), (64, 8), (256, 1), (256, 8)]
    rows = []
    for answer_len, batch in settings:
        prompts = [p for p, _ in load_prompts(args, vocab, batch)]
        run_ar(llama, prompts[:1], 4)  # warm-up
        ar = run_ar(llama, prompts, answer_len)
        rows.append({"method": "a: HF Llama generate (AR, KV cache)", "answer_len": answer_len, "batch": batch, **ar,
                     "ratio_to_ar": 1.0})
        for name, cfg in METHODS.items():
            out = generate(model_for(cfg, model, block_model), prompts, answer_len=answer_len, vocab=vocab, config=cfg)
            st = out.stats
            rows.append({"method": name, "answer_len": answer_len, "batch": batch, "nfe": st["nfe"],
                         "tokens_per_forward": st["tokens_per_forward"], "tokens_per_s": st["tokens_per_s"],
                         "wall_time_s": st["wall_time_s"], "ratio_to_ar": st["tokens_per_s"] / ar["tokens_per_s"],
                         "content_tokens": content_length(out.tokens, vocab.eos_id)})
            print(f"{answer_len:4d} x{batch} {name:40s} nfe {st['nfe']:4d}  {st['tokens_per_s']:8.1f} tok/s  "
                  f"{rows[-1]['ratio_to_ar']:.2f}x AR  content {rows[-1]['content_tokens']:.0f}", flush=True)
    long_len = 64 if args.quick else 256
    costs = forward_costs(model, llama, load_prompts(args, vocab, 1)[0][0], long_len)
    qual = quality(model, vocab, load_prompts(args, vocab, 16, skip=8), args.quality_len, block_model
                   ) if args.checkpoint else None

    model_name = args.checkpoint or f"{args.preset} (random init)"
    if args.block_checkpoint:
        model_name += f"; (e) on {args.block_checkpoint}"
    cmd = "python benchmarks/decode_speed.py" + (" --quick" if args.quick else "") + (
        f" --checkpoint {args.checkpoint}" if args.checkpoint else "") + (
        f" --block-checkpoint {args.block_checkpoint}" if args.block_checkpoint else "") + (
        f" --tokenizer {args.tokenizer} --data {args.data}" if args.data else "")
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
    lines += ["", f"## Where the time goes ({long_len}-token answer, batch 1, median of 5)", "",
              "| forward | ms | AR steps it costs |", "|---|---|---|"]
    lines += [f"| {k} | {v:.2f} | {v / ar_ms:.1f} |" for k, v in costs.items()]
    lines += ["", f"(d) reaches 2.5x AR only if it commits at least 2.5 x {full_ms:.2f} / {ar_ms:.2f} = "
              f"**{2.5 * full_ms / ar_ms:.1f} tokens per forward** on average (ignoring its sampling overhead)."]
    if qual:
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
    out_doc = DOCS / ("decode_trained.md" if args.checkpoint else "decode.md")
    out_doc.parent.mkdir(parents=True, exist_ok=True)
    out_doc.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
        extra = {"forward_ms": costs, **({"quality": qual} if qual else {})}
        args.json.with_suffix(".details.json").write_text(json.dumps(extra, indent=2))


if __name__ == "__main__":
    main()
