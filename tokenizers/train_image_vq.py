"""Train the image VQ tokenizer: ``python tokenizers/train_image_vq.py --config configs/tokenizers/image_shapes.yaml [key=value ...] --out runs/tokenizers/image``.

Images come straight from the sources (shape scenes from `omnidiff.data.sources.shapes`, MNIST
digits from `omnidiff.data.sources.mnist`, or a mix) or, with ``--data DIR`` (repeatable), from the
``png`` members of built shards. The loss is L1 + L2 + a low-pass colour term + the quantizer's
codebook/commitment loss; codes unused for ``train.max_unused`` steps are re-seeded from recent
encoder outputs. Each ``log_every`` steps one JSON line goes to ``metrics.jsonl`` (loss, PSNR,
codebook usage and perplexity over the interval, re-seeded codes). The run is written into
``<out>.partial`` and renamed to ``<out>`` at the end, so ``<out>`` always holds a complete
tokenizer: ``image_tokenizer.json`` + ``model.safetensors``, ``train_config.yaml``,
``metrics.jsonl`` and ``reconstructions.png`` (originals on top, reconstructions below).

Config = `TrainVQConfig` defaults < YAML file < dotted overrides (``train.steps=200``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from omnidiff.config import _build, _merge, parse_overrides, to_dict  # noqa: E402
from omnidiff.tokenization.image import (  # noqa: E402
    ImageTokenizer,
    ImageVQConfig,
    code_statistics,
    reseed_dead_codes,
    update_unused_steps,
    vq_loss,
)

SOURCES = ("shapes", "mnist", "mix", "shards")


@dataclass
class DataConfig:
    source: str = "mix"  # "shapes" | "mnist" | "mix" | "shards" (the --data folders)
    mnist_fraction: float = 0.3  # share of digits in a "mix" batch
    max_objects: int = 3
    seed: int = 0


@dataclass
class LossConfig:
    l1: float = 1.0
    l2: float = 1.0
    lowpass: float = 1.0
    lowpass_size: int = 4
    quant: float = 1.0
    foreground: float = 0.0  # extra weight of non-background pixels in L1/L2
    edge: float = 0.0  # L1 between image gradients (keeps corners of small shapes sharp)


@dataclass
class TrainLoopConfig:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    max_unused: int = 20  # steps a code may stay unused before re-seeding
    reseed_every: int = 10
    reseed_until: float = 0.9  # fraction of the steps after which codes are no longer re-seeded
    latent_memory: int = 4  # batches of encoder outputs kept for re-seeding
    log_every: int = 25
    max_minutes: float = 0.0  # > 0: stop early (and save) after this many minutes
    seed: int = 0
    init: str = ""  # a saved tokenizer folder to continue from (same model config), e.g. a time-boxed earlier run
    threads: int = 1  # torch threads; one is faster for these small convolutions when the cores are shared


@dataclass
class TrainVQConfig:
    model: ImageVQConfig = field(default_factory=ImageVQConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)


def load_train_config(path: str | Path | None, overrides: list[str]) -> TrainVQConfig:
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist (tokenizer recipes live in configs/tokenizers/)")
        tree = yaml.safe_load(path.read_text()) or {}
    cfg = _build(TrainVQConfig, _merge(tree, parse_overrides(overrides)), "")
    if cfg.data.source not in SOURCES:
        raise ValueError(f"data.source must be one of {list(SOURCES)}, got {cfg.data.source!r}")
    if not 0.0 <= cfg.data.mnist_fraction <= 1.0:
        raise ValueError(f"data.mnist_fraction must be in [0, 1], got {cfg.data.mnist_fraction}")
    if cfg.train.steps < 1 or cfg.train.batch_size < 1:
        raise ValueError(f"train.steps and train.batch_size must be >= 1, got {cfg.train.steps}, {cfg.train.batch_size}")
    return cfg


# ---------------------------------------------------------------------------------------------- data
def pil_to_tensor(images: list[Image.Image], size: int) -> torch.Tensor:
    """PIL images -> float ``[B, 3, size, size]`` in [0, 1] (converted to RGB and resized as needed)."""
    arrays = []
    for im in images:
        im = im.convert("RGB") if im.mode != "RGB" else im
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(im, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def source_images(cfg: DataConfig, size: int, batch_size: int, split_seed: int = 0) -> Iterator[list[Image.Image]]:
    """Batches of images rendered from the sources; batch ``i`` depends only on ``(seed, split_seed, i)``.

    Shapes are drawn from ``default_rng([seed, split_seed, i])``; digits come from MNIST's
    training split (``split_seed`` only changes the draw, evaluation uses the test split).
    """
    from omnidiff.data.sources import shapes

    scene_cfg = shapes.ShapesConfig(size=size, min_objects=1, max_objects=cfg.max_objects)
    digits = None
    if cfg.source in ("mnist", "mix"):
        from omnidiff.data.sources import mnist

        digits = mnist.load_mnist("train")[0]
    fraction = {"shapes": 0.0, "mnist": 1.0, "mix": cfg.mnist_fraction}[cfg.source]
    i = 0
    while True:
        rng = np.random.default_rng([cfg.seed, split_seed, i])
        batch = []
        for _ in range(batch_size):
            if digits is not None and rng.random() < fraction:
                from omnidiff.data.sources.mnist import digit_image

                batch.append(digit_image(digits[int(rng.integers(len(digits)))], size))
            else:
                batch.append(shapes.render_scene(shapes.random_scene(rng, scene_cfg), scene_cfg))
        yield batch
        i += 1


def shard_images(folders: list[Path], batch_size: int, seed: int) -> Iterator[list[Image.Image]]:
    """Batches of the ``png`` members of the train splits of built datasets (round-robin over folders)."""
    from omnidiff.data.shards import ShardStream, split_shards

    streams = [iter(ShardStream(split_shards(f, "train"), seed=seed)) for f in folders]
    k = 0
    while True:
        batch = []
        while len(batch) < batch_size:
            sample = next(streams[k % len(streams)])
            k += 1
            if "png" not in sample:
                raise ValueError(f"sample {sample.get('__key__')} has no png member; --data needs image datasets")
            batch.append(sample["png"])
        yield batch


# ---------------------------------------------------------------------------------------------- training
def lr_at(step: int, cfg: TrainLoopConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def save_grid(tok: ImageTokenizer, originals: torch.Tensor, path: Path, scale: int = 2) -> None:
    """Originals on the top row, their reconstructions below, upscaled ``scale`` x without smoothing."""
    tok.model.eval()
    recon = tok.decode_tensor(tok.encode_tensor(originals))
    rows = [torch.cat(list(originals), dim=2), torch.cat(list(recon), dim=2)]
    grid = ImageTokenizer.to_pil(torch.cat(rows, dim=1))
    grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST).save(path)


def train(cfg: TrainVQConfig, out: Path, data_dirs: list[Path] | None = None, progress: bool = True) -> dict:
    """Train a tokenizer with ``cfg`` and write the run into ``out``; returns the last metrics line."""
    from tqdm import tqdm

    torch.manual_seed(cfg.train.seed)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    size = cfg.model.image_size
    if cfg.data.source == "shards" or data_dirs:
        if not data_dirs:
            raise ValueError("data.source is 'shards' but no --data folder was given")
        batches = shard_images(data_dirs, cfg.train.batch_size, cfg.data.seed)
    else:
        batches = source_images(cfg.data, size, cfg.train.batch_size)
    preview = pil_to_tensor(next(source_images(dataclasses.replace(cfg.data, seed=cfg.data.seed + 7919), size, 8, 1))
                            if not data_dirs else next(shard_images(data_dirs, 8, cfg.data.seed + 1)), size)

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "train_config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    tok = ImageTokenizer(cfg.model)
    if cfg.train.init:
        tok = ImageTokenizer.load(cfg.train.init)
        if tok.config != cfg.model:
            raise ValueError(f"train.init={cfg.train.init} has model config {tok.config}, but this run asks for "
                             f"{cfg.model}; use the same model settings or drop train.init")
    model = tok.model
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, betas=(0.9, 0.99))
    unused = torch.zeros(cfg.model.codebook_size, dtype=torch.long)
    memory: list[torch.Tensor] = []
    interval_codes: list[torch.Tensor] = []
    interval_stats: list[dict] = []
    reseeded_total, reseeded_interval = 0, 0
    start = time.time()
    last: dict = {}
    bar = tqdm(range(cfg.train.steps), disable=not progress, desc="image-vq", unit="step")
    with (partial / "metrics.jsonl").open("w") as log:
        for step in bar:
            pixels = pil_to_tensor(next(batches), size)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg.train)
            loss, output, stats = vq_loss(tok, pixels, l1_weight=cfg.loss.l1, l2_weight=cfg.loss.l2,
                                          lowpass_weight=cfg.loss.lowpass, lowpass=cfg.loss.lowpass_size,
                                          quant_weight=cfg.loss.quant, foreground_weight=cfg.loss.foreground,
                                          edge_weight=cfg.loss.edge)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()

            update_unused_steps(unused, output.codes)
            memory = [*memory, output.latents.detach()][-cfg.train.latent_memory:]
            interval_codes.append(output.codes.detach())
            interval_stats.append(stats)
            if (cfg.model.quantizer == "vq" and step % cfg.train.reseed_every == 0
                    and step < cfg.train.reseed_until * cfg.train.steps):
                n = reseed_dead_codes(tok.codebook.data, unused, torch.cat(memory), cfg.train.max_unused, gen)
                reseeded_total, reseeded_interval = reseeded_total + n, reseeded_interval + n

            minutes = (time.time() - start) / 60
            stop = cfg.train.max_minutes > 0 and minutes >= cfg.train.max_minutes
            if (step + 1) % cfg.train.log_every == 0 or step + 1 == cfg.train.steps or stop:
                last = {"step": step + 1, "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - start, 1)}
                for key in interval_stats[0]:
                    last[key] = round(float(np.mean([s[key] for s in interval_stats])), 5)
                last.update({k: round(v, 4) for k, v in
                             code_statistics(torch.cat(interval_codes), cfg.model.codebook_size).items()})
                last.update({"reseeded": reseeded_interval, "reseeded_total": reseeded_total})
                log.write(json.dumps(last) + "\n")
                log.flush()
                bar.set_postfix(loss=last["loss"], psnr=last["psnr"], usage=last["usage"])
                interval_codes, interval_stats, reseeded_interval = [], [], 0
            if stop:
                print(f"stopping at step {step + 1}: train.max_minutes={cfg.train.max_minutes} reached", file=sys.stderr)
                break
    model.eval()
    tok.save(partial)
    save_grid(tok, preview, partial / "reconstructions.png")
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.rename(out)
    return last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="YAML recipe (configs/tokenizers/*.yaml)")
    parser.add_argument("--out", type=Path, default=Path("runs/tokenizers/image"))
    parser.add_argument("--data", type=Path, action="append", default=None,
                        help="built image dataset folder (repeatable); overrides data.source")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.steps=200")
    args = parser.parse_args(argv)
    try:
        cfg = load_train_config(args.config, args.overrides)
        last = train(cfg, args.out, args.data, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
