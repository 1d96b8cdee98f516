"""Decoding speed: autoregressive Llama vs our masked-diffusion sampler with and without caches.

    python benchmarks/decode_speed.py [--quick] [--json PATH] [--checkpoint DIR --tokenizer DIR --data DIR]

Methods, on one model size (our `tiny` preset, or the checkpoint given) and answers of 64 and 256
tokens at batch 1 and 8:

    (a) ar          Hugging Face LlamaForCausalLM.generate, greedy, KV cache, same dimensions
    (b) diffusion   low-confidence remasking, one token per step, no cache
    (c) +prefix     (b) with the exact prefix KV cache (prefix attention)
    (d) +threshold  (c) committing every token with p >= 0.9 (Fast-dLLM), blocks of 32
    (e) block       block diffusion (block attention, blocks of 32) with the exact block cache

All rows run in one process, interleaved per setting, so machine load hits them alike; the table
reports NFE, tokens per forward, tokens/s and the ratio to (a). With a trained checkpoint it also
reports how close (d) stays to (b): exact-match agreement of the tokens and the model's own ELBO
(nats per token, Monte-Carlo) of each method's answers. Writes docs/benchmarks/decode.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from omnidiff.models.presets import preset_config  # noqa: E402
from omnidiff.models.transformer import Transformer  # noqa: E402
from omnidiff.sampling import SamplerConfig, generate  # noqa: E402
from omnidiff.tokenization.vocab import Vocab  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "decode.md"
METHODS = {
    "b: diffusion, no cache": SamplerConfig(attention="prefix", cache="none"),
    "c: + exact prefix cache": SamplerConfig(attention="prefix", cache="prefix"),
    "d: + threshold 0.9 (blocks of 32)": SamplerConfig(attention="prefix", cache="prefix", strategy="threshold",
                                                       threshold=0.9, block_len=32),
    "e: block diffusion + block cache": SamplerConfig(attention="block", cache="block", block_len=32,
                                                      strategy="threshold", threshold=0.9),
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
            "wall_time_s": wall}


def load_model(args):
    if args.checkpoint:
        from omnidiff.models.hf import OmniDiffModel

        wrapper = OmniDiffModel.from_pretrained(args.checkpoint)
        return wrapper.model.eval(), wrapper.vocab
    vocab = Vocab.build({"text": 4096})
    torch.manual_seed(0)
    return Transformer(preset_config(args.preset, vocab_size=len(vocab))).eval(), vocab


def load_prompts(args, vocab, n: int) -> list[torch.Tensor]:
    if args.data and args.tokenizer:
        from omnidiff.data.shards import ShardStream, split_shards
        from omnidiff.tokenization.text import TextTokenizer

        tok = TextTokenizer.load(args.tokenizer)
        out = []
        for sample in ShardStream(split_shards(args.data, "test"), shuffle=False):
            ids = tok.to_global(vocab, tok.encode(sample["txt"]))
            if ids.numel() >= 24:
                out.append(torch.cat([torch.tensor([vocab.bos_id]), ids[:16 + len(out) % 8]]))
            if len(out) == n:
                return out
    g = torch.Generator().manual_seed(0)
    text = vocab.range("text")
    return [torch.cat([torch.tensor([vocab.bos_id]), torch.randint(text.offset, text.end, (15 + i % 8,), generator=g)])
            for i in range(n)]


def quality(model, vocab, prompts, answer_len: int) -> dict:
    """Agreement of (d) with (b) and the model's ELBO of each method's answers."""
    from omnidiff.diffusion.likelihood import LikelihoodConfig, answer_log_likelihood

    outs = {k: generate(model, prompts, answer_len=answer_len, vocab=vocab, config=METHODS[k]).tokens
            for k in ("b: diffusion, no cache", "d: + threshold 0.9 (blocks of 32)")}
    b, d = outs.values()
    lcfg = LikelihoodConfig(num_samples=16, batch_size=32, mask_id=vocab.mask_id, pad_id=vocab.pad_id)
    elbo = {k: float(answer_log_likelihood(model, prompts, list(v), lcfg, generator=torch.Generator().manual_seed(0)
                                           ).nats_per_token.mean()) for k, v in outs.items()}
    return {"answer_len": answer_len, "prompts": len(prompts), "token_agreement_d_vs_b": float((b == d).float().mean()),
            "elbo_b": elbo["b: diffusion, no cache"], "elbo_d": elbo["d: + threshold 0.9 (blocks of 32)"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64-token answers, batch 1 only")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--checkpoint", help="an OmniDiffModel folder (e.g. runs/text_recipe/model)")
    parser.add_argument("--tokenizer", help="text tokenizer folder, for real prompts")
    parser.add_argument("--data", help="text dataset folder, for real prompts (test split)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    model, vocab = load_model(args)
    llama = llama_twin(model.cfg)
    settings = [(64, 1)] if args.quick else [(64, 1), (64, 8), (256, 1), (256, 8)]
    rows = []
    for answer_len, batch in settings:
        prompts = load_prompts(args, vocab, batch)
        run_ar(llama, prompts[:1], 4)  # warm-up
        ar = run_ar(llama, prompts, answer_len)
        rows.append({"method": "a: HF Llama generate (AR, KV cache)", "answer_len": answer_len, "batch": batch, **ar,
                     "ratio_to_ar": 1.0})
        for name, cfg in METHODS.items():
            st = generate(model, prompts, answer_len=answer_len, vocab=vocab, config=cfg).stats
            rows.append({"method": name, "answer_len": answer_len, "batch": batch, "nfe": st["nfe"],
                         "tokens_per_forward": st["tokens_per_forward"], "tokens_per_s": st["tokens_per_s"],
                         "wall_time_s": st["wall_time_s"], "ratio_to_ar": st["tokens_per_s"] / ar["tokens_per_s"]})
            print(f"{answer_len:4d} x{batch} {name:40s} nfe {st['nfe']:4d}  {st['tokens_per_s']:8.1f} tok/s  "
                  f"{rows[-1]['ratio_to_ar']:.2f}x AR", flush=True)
    qual = quality(model, vocab, load_prompts(args, vocab, 16), 64) if args.checkpoint else None

    model_name = args.checkpoint or f"{args.preset} (random init)"
    lines = ["# Decoding speed", "", f"`python benchmarks/decode_speed.py{' --quick' if args.quick else ''}"
             f"{' --checkpoint ' + args.checkpoint if args.checkpoint else ''}` — model: {model_name}, "
             f"fp32 CPU, {torch.get_num_threads()} threads.", "",
             "| answer | batch | method | NFE | tokens/forward | tokens/s | vs AR |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['answer_len']} | {r['batch']} | {r['method']} | {r['nfe']} | {r['tokens_per_forward']:.2f} | "
                     f"{r['tokens_per_s']:.1f} | {r['ratio_to_ar']:.2f}x |")
    if qual:
        lines += ["", f"Quality on {qual['prompts']} test prompts, {qual['answer_len']}-token answers: (d) agrees with "
                  f"(b) on {100 * qual['token_agreement_d_vs_b']:.1f}% of tokens; model ELBO of the answers "
                  f"(nats/token, lower = more likely): (b) {qual['elbo_b']:.3f}, (d) {qual['elbo_d']:.3f}."]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    out_doc = DOC if not args.checkpoint else DOC.with_name("decode_trained.md")
    out_doc.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
        if qual:
            args.json.with_suffix(".quality.json").write_text(json.dumps(qual, indent=2))


if __name__ == "__main__":
    main()
