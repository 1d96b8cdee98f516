"""Run a trained model on one task: ``python infer.py <task> --model DIR [options]``.

Every task goes through its pipeline (`omnidiff.pipelines`); the result is
printed as JSON (decoding stats included) and images/audio are written where ``--out`` says.

    python infer.py text    --model runs/demo/model --prompt "In the beginning"
    python infer.py caption --model runs/demo/model --image scene.png
    python infer.py vqa     --model runs/demo/model --image scene.png --question "how many circles are there?"
    python infer.py t2i     --model runs/demo/model --prompt "a red circle" --guidance 2.0 --out circle.png
    python infer.py asr     --model runs/demo/model --audio speech.wav
    python infer.py tts     --model runs/demo/model --prompt "turn on the lights" --out lights.wav
    python infer.py vla     --model runs/demo/model --image obs.png --instruction "push the puck" [--proprio 0.1,0.6,0.2,1]

Tokenizers come from ``<model>/tokenizers`` (or ``<run>/tokenizers``) unless ``--tokenizers DIR``
is given; ``--tokenizer DIR`` (text only) points at a single text tokenizer folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ALL_TASKS = ("text", "caption", "vqa", "t2i", "asr", "tts", "vla")


def _need(args, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
    if missing:
        raise ValueError(f"the {args.task!r} task needs {' and '.join(missing)}")


def _image(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path).convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image PIL can read (PNG, JPEG, ...)") from None


def _audio(path: str) -> dict:
    import numpy as np
    import soundfile as sf

    try:
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"audio file {path} does not exist") from None
    except (RuntimeError, sf.LibsndfileError) as err:
        raise ValueError(f"{path} is not audio soundfile can read (WAV, FLAC, OGG): {err}") from None
    return {"array": np.ascontiguousarray(wave.mean(axis=1)), "sample_rate": int(rate)}


def _sampler(args, pipe):
    import dataclasses

    cfg = pipe.sampler
    changes = {k: v for k, v in {"steps": args.steps, "strategy": args.strategy, "threshold": args.threshold,
                                 "block_len": args.block_len, "temperature": args.temperature}.items() if v is not None}
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _load(args, cls, **kwargs):
    tokenizers = args.tokenizers
    if args.tokenizer:  # a lone text tokenizer folder
        from omnidiff.tokenization.registry import TokenizerSet

        tokenizers = TokenizerSet.load({"text": args.tokenizer})
    pipe = cls.from_pretrained(args.model, tokenizers, **kwargs)
    return pipe, _sampler(args, pipe)


def run(args) -> dict:
    from omnidiff import pipelines as P

    seed, n = args.seed, args.answer_len
    if args.task == "text":
        _need(args, "prompt")
        if not args.prompt.strip():
            raise ValueError("the prompt is empty; give --prompt some text")
        pipe, cfg = _load(args, P.TextPipeline)
        out = {"prompt": args.prompt, "continuation": pipe([args.prompt], answer_len=n, seed=seed, config=cfg)[0]}
    elif args.task == "caption":
        _need(args, "image")
        pipe, cfg = _load(args, P.CaptioningPipeline)
        out = {"image": args.image, "caption": pipe([_image(args.image)], answer_len=n, seed=seed, config=cfg)[0]}
    elif args.task == "vqa":
        _need(args, "image", "question")
        pipe, cfg = _load(args, P.VQAPipeline)
        answer = pipe([_image(args.image)], [args.question], answer_len=n, seed=seed, config=cfg)[0]
        out = {"image": args.image, "question": args.question, "answer": answer}
    elif args.task == "t2i":
        _need(args, "prompt", "out")
        pipe, cfg = _load(args, P.TextToImagePipeline)
        image = pipe([args.prompt], guidance_scale=args.guidance, answer_len=n, seed=seed, config=cfg)[0]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        image.save(args.out)
        out = {"prompt": args.prompt, "image": args.out, "size": list(image.size)}
    elif args.task == "asr":
        _need(args, "audio")
        pipe, cfg = _load(args, P.ASRPipeline)
        out = {"audio": args.audio, "transcript": pipe([_audio(args.audio)], answer_len=n, seed=seed, config=cfg)[0]}
    elif args.task == "tts":
        _need(args, "prompt", "out")
        import soundfile as sf

        pipe, cfg = _load(args, P.TTSPipeline)
        wav = pipe([args.prompt], guidance_scale=args.guidance, answer_len=n, seed=seed, config=cfg)[0]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        sf.write(args.out, wav["array"], wav["sample_rate"])
        out = {"prompt": args.prompt, "audio": args.out, "seconds": round(len(wav["array"]) / wav["sample_rate"], 3)}
    else:  # vla
        _need(args, "image", "instruction")
        proprio = None
        if args.proprio:
            try:
                proprio = [float(v) for v in args.proprio.split(",")]
            except ValueError:
                raise ValueError(f"--proprio must be comma-separated numbers, got {args.proprio!r}") from None
        pipe, cfg = _load(args, P.VLAPolicy)
        chunk = pipe.predict_action(_image(args.image), args.instruction, proprio, seed=seed, config=cfg)
        out = {"instruction": args.instruction, "actions": [[round(float(v), 5) for v in row] for row in chunk]}
    return {**out, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in pipe.last_stats.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run an OmniDiff model on one task.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("task", help=f"one of {list(ALL_TASKS)}")
    parser.add_argument("--model", required=True, help="folder written by train.py (<run>/model)")
    parser.add_argument("--tokenizers", help="tokenizer set folder (default: <model>/tokenizers)")
    parser.add_argument("--tokenizer", help="a single text tokenizer folder (text task)")
    parser.add_argument("--prompt", default="", help="text to continue (text), describe (t2i) or speak (tts)")
    parser.add_argument("--image", help="input image (caption, vqa, vla)")
    parser.add_argument("--question", help="question about the image (vqa)")
    parser.add_argument("--audio", help="input speech, WAV (asr)")
    parser.add_argument("--instruction", help="what the robot should do (vla)")
    parser.add_argument("--proprio", help="robot state, comma-separated (vla, when trained with it)")
    parser.add_argument("--out", help="output PNG (t2i) or WAV (tts)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (t2i, tts)")
    parser.add_argument("--answer-len", type=int, default=None, help="answer tokens (default: as trained)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--strategy", default=None, help="low_confidence, margin, entropy, random, threshold, hybrid")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--block-len", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.task not in ALL_TASKS:
        print(f"error: unknown task {args.task!r}; available: {list(ALL_TASKS)}", file=sys.stderr)
        return 2
    try:
        result = run(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
