"""Train the mel RVQ audio codec: ``python tokenizers/train_audio_codec.py --config configs/tokenizers/audio.yaml --out runs/tokenizers/audio``.

Training speech is synthesised on the fly with the training voices of
`omnidiff.data.sources.speech` (never the held-out voice) and texts from ``data/build_speech.py``,
or read from built shards with ``--data DIR`` (train split). Steps:

1. log-mels of every utterance; per-bin mean/std become the codec's normalisation;
2. ``warmup_steps`` as a plain autoencoder (no quantiser), so the latents mean something;
3. k-means initialisation of each RVQ level on ``kmeans_frames`` latent frames;
4. ``steps`` with the quantiser (EMA codebooks, dead codes re-seeded every ``reseed_every`` steps).

Writes ``metrics.jsonl`` (loss, mel L1, codebook usage per level on the validation utterances),
``report.json`` and the tokenizer to ``--out`` atomically (a temporary folder renamed at the end).
``--init DIR`` continues training a saved codec (same settings; no warm-up or k-means).
Settings: dataclass defaults < YAML (``codec:`` and ``train:`` sections) < ``key.sub=value`` overrides.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from tqdm import tqdm  # noqa: E402

from omnidiff.config import parse_overrides  # noqa: E402
from omnidiff.tokenization.audio import AudioCodecConfig, AudioTokenizer, codec_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CodecTrainConfig:
    """How to train the codec (the codec's own shape is `AudioCodecConfig`)."""

    utterances: int = 2000  # synthesised training utterances (ignored with --data)
    val_utterances: int = 60
    max_seconds: float = 6.0
    crop_frames: int = 96  # mel frames per training crop (~1.5 s)
    batch_size: int = 16
    warmup_steps: int = 200
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    kmeans_frames: int = 20000
    kmeans_iters: int = 10
    log_every: int = 50
    max_minutes: float = 7.0  # training time budget: LR decays by time too, then training stops
    seed: int = 0
    threads: int = 2


def _section(cls, data: dict | None, where: str):
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in {where}; known: {sorted(known)}")
    defaults = cls()
    for key, value in data.items():
        wanted = type(getattr(defaults, key))
        if wanted is float and isinstance(value, int | str) and not isinstance(value, bool):
            try:  # YAML reads "2e-3" (no dot) as a string
                data[key] = float(value)
            except ValueError:
                raise ValueError(f"{where}.{key} must be a number, got {value!r}") from None
        elif not isinstance(value, wanted):
            raise ValueError(f"{where}.{key} must be {wanted.__name__}, got {value!r}")
    return cls(**data)


def load_settings(path: Path | None, overrides: list[str]) -> tuple[AudioCodecConfig, CodecTrainConfig]:
    """YAML ``codec:``/``train:`` sections plus dotted overrides -> the two configs."""
    tree: dict = {}
    if path is not None:
        if not path.exists():
            raise FileNotFoundError(f"no config at {path}")
        tree = yaml.safe_load(path.read_text()) or {}
    for key, value in parse_overrides(overrides).items():
        if not isinstance(value, dict):
            raise ValueError(f"override {key}={value!r} needs a section: codec.{key}=... or train.{key}=...")
        tree.setdefault(key, {}).update(value)
    unknown = sorted(set(tree) - {"codec", "train"})
    if unknown:
        raise ValueError(f"unknown config sections {unknown}; use codec: and train:")
    return _section(AudioCodecConfig, tree.get("codec"), "codec"), _section(CodecTrainConfig, tree.get("train"), "train")


def _speech_builder():
    spec = importlib.util.spec_from_file_location("build_speech", ROOT / "data" / "build_speech.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthesised_waves(count: int, seed: int, max_seconds: float) -> list[np.ndarray]:
    """``count`` utterances from the training voices (sentences, digit strings, commands)."""
    from omnidiff.data.sources import speech

    builder = _speech_builder()
    sentences = builder.corpus_sentences()
    kinds, weights = ("sentence", "digits", "command"), np.array([0.6, 0.2, 0.2])
    waves = []
    for i in tqdm(range(count), desc="synthesise", unit="utt"):
        rng = np.random.default_rng([seed, i])
        voice = speech.TRAIN_VOICES[int(rng.integers(len(speech.TRAIN_VOICES)))]
        for _ in range(20):
            text = builder.make_text(kinds[int(rng.choice(3, p=weights))], rng, sentences)
            wave = speech.synthesize(text, voice)
            if len(wave) <= max_seconds * 16000:
                break
        waves.append(wave)
    return waves


def shard_waves(data: Path, split: str, limit: int) -> list[tuple[np.ndarray, int]]:
    from omnidiff.data.shards import ShardStream, split_shards

    manifest = json.loads((data / "manifest.json").read_text())
    count = min(limit, manifest["splits"][split]["count"]) if limit else manifest["splits"][split]["count"]
    stream = iter(ShardStream(split_shards(data, split), shuffle=False))
    return [(s["wav"]["array"], s["wav"]["sample_rate"]) for s in (next(stream) for _ in range(count))]


def usage_per_level(tok: AudioTokenizer, mels: list[torch.Tensor]) -> list[float]:
    """Fraction of each level's codes used when encoding ``mels`` (normalised log-mels [M, T])."""
    seen = torch.zeros(tok.levels, tok.codebook_size, dtype=torch.bool)
    with torch.no_grad():
        for mel in mels:
            z = tok.codec.encode_latent(tok.codec.pad_frames(mel[None]))
            _, codes, _ = tok.codec.rvq(z[0].T)
            for level in range(tok.levels):
                seen[level, codes[:, level]] = True
    return [round(float(s.float().mean()), 4) for s in seen]


def validation_l1(tok: AudioTokenizer, mels: list[torch.Tensor], quantise: bool = True) -> float:
    total = frames = 0.0
    with torch.no_grad():
        for mel in mels:
            x = tok.codec.pad_frames(mel[None])
            recon, _, _ = tok.codec(x, quantise=quantise)
            total += float((recon - x).abs().sum())
            frames += x.numel()
    return total / frames


def random_crops(mels: list[torch.Tensor], weights: np.ndarray, batch: int, frames: int,
                 rng: np.random.Generator) -> torch.Tensor:
    """A batch ``[B, M, frames]`` of random crops (utterances picked by length; short ones padded)."""
    out = []
    for idx in rng.choice(len(mels), size=batch, p=weights):
        mel = mels[idx]
        if mel.shape[1] < frames:
            mel = torch.nn.functional.pad(mel[None], (0, frames - mel.shape[1]), mode="replicate")[0]
        start = int(rng.integers(0, mel.shape[1] - frames + 1))
        out.append(mel[:, start: start + frames])
    return torch.stack(out)


def train(codec_cfg: AudioCodecConfig, cfg: CodecTrainConfig, out: Path, data: Path | None,
          init: Path | None = None) -> dict:
    """Train (or, from ``init``, continue training) a codec; returns the report written next to it."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    started = time.time()
    if init is not None:
        tok = AudioTokenizer.load(init)
        if tok.config != codec_cfg:
            raise ValueError(f"--init {init} was trained with different codec settings: {asdict(tok.config)}; "
                             "drop --init or use its settings")
        cfg = replace(cfg, warmup_steps=0)  # already warm: no autoencoder phase, no k-means re-init
    else:
        tok = AudioTokenizer(codec_cfg)
    if data is not None:
        train_raw = shard_waves(data, "train", cfg.utterances)
        val_raw = shard_waves(data, "val", cfg.val_utterances)
    else:
        waves = synthesised_waves(cfg.utterances + cfg.val_utterances, cfg.seed, cfg.max_seconds)
        train_raw = [(w, 16000) for w in waves[: cfg.utterances]]
        val_raw = [(w, 16000) for w in waves[cfg.utterances:]]
    log_mels = [tok.log_mel(tok.wave_tensor((torch.from_numpy(np.asarray(w, np.float32)), int(sr))))
                for w, sr in tqdm(train_raw + val_raw, desc="log-mel", unit="utt")]
    train_mels, val_mels = log_mels[: len(train_raw)], log_mels[len(train_raw):]
    if init is None:  # a continued codec keeps the statistics its weights were trained with
        every = torch.cat(train_mels, 1)
        tok.codec.mel_mean.copy_(every.mean(1))
        tok.codec.mel_std.copy_(every.std(1).clamp_min(1e-3))
    train_mels = [tok.codec.normalise(m) for m in train_mels]
    val_mels = [tok.codec.normalise(m) for m in val_mels]
    lengths = np.array([m.shape[1] for m in train_mels], dtype=np.float64)
    weights = lengths / lengths.sum()
    seconds_of_audio = float(sum(len(w) / sr for w, sr in train_raw))
    data_seconds = time.time() - started

    codec = tok.codec.train()
    optim = torch.optim.AdamW(codec.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.warmup_steps + cfg.steps
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    metrics = (tmp / "metrics.jsonl").open("w")
    train_start = time.time()
    step, window = 0, []
    bar = tqdm(total=total_steps, desc="train codec", unit="step")
    while step < total_steps:
        quantise = step >= cfg.warmup_steps
        if step == cfg.warmup_steps and init is None:
            with torch.no_grad():
                sample = random_crops(train_mels, weights, max(1, cfg.kmeans_frames * codec_cfg.downsample
                                                               // cfg.crop_frames), cfg.crop_frames, rng)
                z = codec.encode_latent(sample)
                codec.rvq.kmeans_init(z.transpose(1, 2).reshape(-1, z.shape[1]), iters=cfg.kmeans_iters, seed=cfg.seed)
        # Progress is the larger of the step and the time fractions, so a run cut short by
        # max_minutes still ends on a decayed learning rate.
        progress = min(1.0, max(step / total_steps, (time.time() - train_start) / (cfg.max_minutes * 60)))
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * progress)) if quantise else cfg.lr
        for group in optim.param_groups:
            group["lr"] = lr
        batch = random_crops(train_mels, weights, cfg.batch_size, cfg.crop_frames, rng)
        loss, stats = codec_loss(codec, batch, update=quantise, quantise=quantise)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
        optim.step()
        step += 1
        window.append(stats)
        bar.update(1)
        if step % cfg.log_every == 0 or step == total_steps:
            codec.eval()
            row = {"step": step, "phase": "rvq" if quantise else "autoencoder", "lr": lr,
                   **{k: round(float(np.mean([w[k] for w in window])), 5) for k in window[0]},
                   "val_mel_l1": round(validation_l1(tok, val_mels, quantise=quantise), 5),
                   "seconds": round(time.time() - started, 1)}
            if quantise:
                row["usage"] = usage_per_level(tok, val_mels)
            codec.train()
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            bar.set_postfix(loss=row["loss"], val=row["val_mel_l1"])
            window = []
        if quantise and progress >= 1.0 and step < total_steps:
            print(f"time budget of {cfg.max_minutes} min spent at step {step}; stopping", file=sys.stderr)
            break
    bar.close()
    metrics.close()
    codec.eval()
    report = {"steps": step, "train_utterances": len(train_raw), "train_audio_seconds": round(seconds_of_audio, 1),
              "data_seconds": round(data_seconds, 1), "train_seconds": round(time.time() - started - data_seconds, 1),
              "val_mel_l1": round(validation_l1(tok, val_mels), 5),
              "val_mel_l1_unquantised": round(validation_l1(tok, val_mels, quantise=False), 5),
              "usage": usage_per_level(tok, val_mels), "tokens_per_second": tok.tokens_per_second,
              "codec": asdict(codec_cfg), "train": asdict(cfg), "data": str(data) if data else "synthesised",
              "init": str(init) if init else None}
    tok.save(tmp)
    (tmp / "report.json").write_text(json.dumps(report, indent=2))
    (tmp / "config.yaml").write_text(yaml.safe_dump({"codec": asdict(codec_cfg), "train": asdict(cfg)}, sort_keys=False))
    if out.exists():
        old = out.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tokenizers" / "audio.yaml")
    parser.add_argument("--out", type=Path, default=Path("runs/tokenizers/audio"))
    parser.add_argument("--data", type=Path, default=None, help="built speech shards (data/build_speech.py)")
    parser.add_argument("--init", type=Path, default=None, help="continue training this saved codec")
    parser.add_argument("overrides", nargs="*", help="dotted settings, e.g. train.steps=200 codec.levels=6")
    args = parser.parse_args()
    try:
        codec_cfg, cfg = load_settings(args.config, args.overrides)
        if args.data is not None and not (args.data / "manifest.json").exists():
            raise FileNotFoundError(f"{args.data} has no manifest.json; build it with "
                                    f"`python data/build_speech.py --out {args.data}`")
        report = train(codec_cfg, cfg, args.out, args.data, args.init)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({k: v for k, v in report.items() if k not in ("codec", "train")}))


if __name__ == "__main__":
    main()
