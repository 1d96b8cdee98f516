"""Run a trained model on one task: ``python infer.py <task> --model DIR [options]``.

Every task goes through its pipeline (`omnidiff.pipelines`); the result is printed as JSON
(decoding stats included) and images/audio are written where ``--out`` says.

    python infer.py text    --model runs/demo/model --prompt "In the beginning"
    python infer.py caption --model runs/demo/model --image scene.png
    python infer.py vqa     --model runs/demo/model --image scene.png --question "how many circles are there?"
    python infer.py t2i     --model runs/demo/model --prompt "a red circle" --guidance 2.0 --out circle.png
    python infer.py asr     --model runs/demo/model --audio speech.wav
    python infer.py tts     --model runs/demo/model --prompt "turn on the lights" --out lights.wav
    python infer.py vla     --model runs/demo/model --image obs.png --instruction "push the puck" [--proprio 0.1,0.6,0.2,1]

Tokenizers come from ``<model>/tokenizers`` (or ``<run>/tokenizers``) unless ``--tokenizers DIR``
is given; ``--tokenizer DIR`` (text only) points at a single text tokenizer folder.

A bad input (a missing or damaged file, a number out of range, an option the task does not use) is
one ``error:`` line on stderr and exit status 2. Inputs are checked before the model is loaded, and
``--out`` is written through a temporary file, so a failed run leaves no partial output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from omnidiff.cli import Parser, bounded_float, bounded_int, float_list, report

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ALL_TASKS = ("text", "caption", "vqa", "t2i", "asr", "tts", "vla")
# task -> (options it needs, options it may take); the sampler options and --seed apply to every task.
TASK_OPTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "text": (("prompt",), ("tokenizer", "answer_len")),
    "caption": (("image",), ("answer_len",)),
    "vqa": (("image", "question"), ("answer_len",)),
    "t2i": (("prompt", "out"), ("guidance", "answer_len")),
    "asr": (("audio",), ("answer_len",)),
    "tts": (("prompt", "out"), ("guidance", "answer_len", "seconds")),
    "vla": (("image", "instruction"), ("proprio",)),
}
TASK_INPUTS = sorted({name for needed, optional in TASK_OPTIONS.values() for name in needed + optional})
TEXT_INPUTS = ("prompt", "question", "instruction")
THRESHOLD_STRATEGIES = ("threshold", "hybrid")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def check_args(args) -> None:
    """Refuse what the task cannot use, before anything is loaded."""
    if args.task not in ALL_TASKS:
        raise ValueError(f"unknown task {args.task!r}; available: {list(ALL_TASKS)}")
    needed, optional = TASK_OPTIONS[args.task]
    missing = [_flag(n) for n in needed if getattr(args, n) is None]
    if missing:
        raise ValueError(f"the {args.task!r} task needs {' and '.join(missing)}")
    for name in TASK_INPUTS:
        if getattr(args, name) is not None and name not in needed + optional:
            users = [t for t, (req, opt) in TASK_OPTIONS.items() if name in req + opt]
            raise ValueError(f"{_flag(name)} does not apply to the {args.task!r} task (it is used by {', '.join(users)})")
    for name in TEXT_INPUTS:
        if getattr(args, name) is not None and not getattr(args, name).strip():
            raise ValueError(f"the {name} is empty; give {_flag(name)} some text")
    if args.tokenizer and args.tokenizers:
        raise ValueError("give --tokenizers (a tokenizer set) or --tokenizer (one text tokenizer), not both")
    if args.strategy is not None:
        from omnidiff.sampling import STRATEGIES

        if args.strategy not in STRATEGIES:
            raise ValueError(f"--strategy {args.strategy!r} is not one of {list(STRATEGIES)}")
    if args.out is not None:
        output_format(args.task, Path(args.out))


def output_format(task: str, out: Path) -> str:
    """The file format ``--out`` asks for (from its suffix); refuses one that cannot be written."""
    suffix = out.suffix.lower()
    if task == "t2i":
        from PIL import Image

        Image.init()
        fmt = Image.registered_extensions().get(suffix)
        if fmt is None or fmt not in Image.SAVE:
            raise ValueError(f"--out {out}: cannot write images as {suffix or 'a file without a suffix'}; use .png or .jpg")
    else:
        import soundfile as sf

        fmt = suffix.lstrip(".").upper()
        if fmt not in sf.available_formats() or fmt == "RAW":
            raise ValueError(f"--out {out}: cannot write audio as {suffix or 'a file without a suffix'}; use .wav or .flac")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name, e.g. {out / ('out' + suffix)}")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, not a folder")
    return fmt


def _sampler(args, pipe):
    import dataclasses

    cfg = pipe.sampler
    changes = {k: v for k, v in {"steps": args.steps, "strategy": args.strategy, "threshold": args.threshold,
                                 "block_len": args.block_len, "temperature": args.temperature}.items() if v is not None}
    strategy = changes.get("strategy", cfg.strategy)
    if args.steps is not None and strategy == "threshold":
        raise ValueError("--steps does not apply to the threshold strategy (it takes the steps it needs); "
                         "pick a count strategy, e.g. --strategy low_confidence")
    if args.threshold is not None and strategy not in THRESHOLD_STRATEGIES:
        raise ValueError(f"--threshold applies to the {' and '.join(THRESHOLD_STRATEGIES)} strategies, "
                         f"not {strategy!r}")
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
    from omnidiff.files import atomic_output
    from omnidiff.pipelines.inputs import load_audio, load_image

    check_args(args)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr is for errors: no "Loading weights" bar before one
    image = load_image(args.image) if args.image is not None else None  # read before the model: fail fast
    audio = load_audio(args.audio) if args.audio is not None else None
    seed, n = args.seed, args.answer_len
    if args.task == "text":
        pipe, cfg = _load(args, P.TextPipeline)
        out = {"prompt": args.prompt, "continuation": pipe([args.prompt], answer_len=n, seed=seed, config=cfg)[0]}
    elif args.task == "caption":
        pipe, cfg = _load(args, P.CaptioningPipeline)
        out = {"image": args.image, "caption": pipe([image], answer_len=n, seed=seed, config=cfg)[0]}
    elif args.task == "vqa":
        pipe, cfg = _load(args, P.VQAPipeline)
        answer = pipe([image], [args.question], answer_len=n, seed=seed, config=cfg)[0]
        out = {"image": args.image, "question": args.question, "answer": answer}
    elif args.task == "t2i":
        pipe, cfg = _load(args, P.TextToImagePipeline)
        picture = pipe([args.prompt], guidance_scale=args.guidance, answer_len=n, seed=seed, config=cfg)[0]
        with atomic_output(args.out) as tmp:
            picture.save(tmp, format=output_format(args.task, Path(args.out)))
        out = {"prompt": args.prompt, "image": args.out, "size": list(picture.size)}
    elif args.task == "asr":
        pipe, cfg = _load(args, P.ASRPipeline)
        out = {"audio": args.audio, "transcript": pipe([audio], answer_len=n, seed=seed, config=cfg)[0]}
    elif args.task == "tts":
        import soundfile as sf

        pipe, cfg = _load(args, P.TTSPipeline)
        wav = pipe([args.prompt], guidance_scale=args.guidance, answer_len=n, seed=seed, config=cfg,
                   seconds=args.seconds)[0]
        with atomic_output(args.out) as tmp:
            sf.write(str(tmp), wav["array"], wav["sample_rate"], format=output_format(args.task, Path(args.out)))
        out = {"prompt": args.prompt, "audio": args.out, "seconds": round(len(wav["array"]) / wav["sample_rate"], 3)}
    else:  # vla
        pipe, cfg = _load(args, P.VLAPolicy)
        if args.proprio is not None and not pipe.task_impl.use_proprio:
            raise ValueError("this policy was trained without the robot state; drop --proprio")
        chunk = pipe.predict_action(image, args.instruction, args.proprio, seed=seed, config=cfg)
        out = {"instruction": args.instruction, "actions": [[round(float(v), 5) for v in row] for row in chunk]}
    return {**out, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in pipe.last_stats.items()}}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="infer.py", description="Run an OmniDiff model on one task.",
                    formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    count = bounded_int(1, 1_000_000)
    parser.add_argument("task", help=f"one of {list(ALL_TASKS)}")
    parser.add_argument("--model", required=True, help="folder written by train.py (<run>/model)")
    parser.add_argument("--tokenizers", help="tokenizer set folder (default: <model>/tokenizers)")
    parser.add_argument("--tokenizer", help="a single text tokenizer folder (text task)")
    parser.add_argument("--prompt", help="text to continue (text), describe (t2i) or speak (tts)")
    parser.add_argument("--image", help="input image (caption, vqa, vla)")
    parser.add_argument("--question", help="question about the image (vqa)")
    parser.add_argument("--audio", help="input speech: WAV, FLAC or OGG, any rate and channel count (asr)")
    parser.add_argument("--instruction", help="what the robot should do (vla)")
    parser.add_argument("--proprio", type=float_list, help="robot state, comma-separated (vla, when trained with it)")
    parser.add_argument("--out", help="output image, e.g. .png (t2i), or audio, e.g. .wav (tts)")
    parser.add_argument("--guidance", type=bounded_float(0, 100), help="classifier-free guidance scale (t2i, tts)")
    parser.add_argument("--seconds", type=bounded_float(0, 600, low_open=True),
                        help="how long to speak (tts; default: the model's speaking rate applied to the text)")
    parser.add_argument("--answer-len", type=count, help="answer tokens (default: as trained)")
    parser.add_argument("--steps", type=count, help="denoising steps (count strategies)")
    parser.add_argument("--strategy", help="low_confidence, margin, entropy, random, threshold, hybrid")
    parser.add_argument("--threshold", type=bounded_float(0, 1, low_open=True), help="confidence in (0, 1]")
    parser.add_argument("--block-len", type=count, help="semi-autoregressive block length")
    parser.add_argument("--temperature", type=bounded_float(0, 100), help="0 = argmax")
    parser.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        result = run(build_parser().parse_args(argv))
    except (ValueError, OSError) as err:  # bad input: usage, files, numbers (FileNotFoundError is an OSError)
        return report(err)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
