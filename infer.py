"""Run a trained model: ``python infer.py <task> --model DIR [options]``.

Tasks of DESIGN.md section 10; this build serves ``text`` (continue a prompt). A command table maps
each task to its handler; tasks whose pipelines are not in this build say so and exit with status 2.

    python infer.py text --model runs/text_recipe/model --tokenizer runs/text_recipe/tokenizer \\
        --prompt "In the beginning" --answer-len 64 --strategy threshold --threshold 0.9 --block-len 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ALL_TASKS = ("text", "caption", "vqa", "t2i", "asr", "tts", "vla")


def run_text(args) -> dict:
    import torch

    from omnidiff.models.hf import OmniDiffModel
    from omnidiff.sampling import SamplerConfig, generate
    from omnidiff.tokenization.text import TextTokenizer

    if not args.prompt.strip():
        raise ValueError("the prompt is empty; give --prompt some text")
    model_dir = Path(args.model)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir} is not a model folder (no config.json); export one with train.py "
                                f"(it writes <run>/model)")
    tok_dir = Path(args.tokenizer or model_dir.parent / "tokenizers" / "text")
    tok = TextTokenizer.load(tok_dir)
    wrapper = OmniDiffModel.from_pretrained(model_dir)
    model, vocab = wrapper.model.eval(), wrapper.vocab
    if vocab is None:
        raise ValueError(f"{model_dir} carries no vocabulary (omnidiff_vocab.json); re-export it with train.py")
    if vocab.range("text").size != tok.vocab_size:
        raise ValueError(f"tokenizer {tok_dir} has {tok.vocab_size} ids but the model's text range has "
                         f"{vocab.range('text').size}: use the tokenizer the model was trained with")
    prompt = torch.cat([torch.tensor([vocab.bos_id]), tok.to_global(vocab, tok.encode(args.prompt))])
    cfg = SamplerConfig(steps=args.steps, strategy=args.strategy, threshold=args.threshold, block_len=args.block_len,
                        temperature=args.temperature, attention="prefix", cache="prefix")
    out = generate(model, [prompt], answer_len=args.answer_len, vocab=vocab, config=cfg,
                   generator=torch.Generator().manual_seed(args.seed))
    return {"prompt": args.prompt, "continuation": tok.decode_global(vocab, out.tokens[0]), **out.stats}


COMMANDS = {"text": run_text}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run an OmniDiff model on one task.")
    parser.add_argument("task", help=f"one of {list(ALL_TASKS)}")
    parser.add_argument("--model", required=True, help="folder written by train.py (<run>/model)")
    parser.add_argument("--tokenizer", help="text tokenizer folder (default: <run>/tokenizers/text)")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--answer-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--strategy", default="low_confidence")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--block-len", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.task not in COMMANDS:
        known = "not available in this build" if args.task in ALL_TASKS else "unknown task"
        print(f"error: {known}: {args.task!r}; available: {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        result = COMMANDS[args.task](args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
