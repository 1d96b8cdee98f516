"""CTC pretraining of the audio encoder's speech backbone on the speech set's transcripts.

    python -m omnidiff.training.ctc_pretrain --data runs/data/speech --out runs/audio_encoder \\
        [--epochs 40] [--batch 32] [--channels 192] [--layers 3]

Why: speech recognition inside the shared model reads a clip as codec codes, and from ~1,000 training
transcripts the transformer must learn at once what the codes sound like (the codec gives a sound many
near-synonym codes) and which words they spell; after hundreds of steps it still writes "the the the"
(docs/ablations.md). The field's speech-language models read audio through an encoder that already
knows speech (Whisper's encoder in front of the LLM). None reaches this machine, so this module trains
one the way acoustic models are trained: connectionist temporal classification (CTC, Graves et al.
2006) of each clip's characters from its feature frames, with SpecAugment (time and frequency masks,
Park et al. 2019) and speed perturbation (0.9x / 1.1x, Ko et al. 2015) so that a voice it never
heard still reads. The backbone is `omnidiff.models.speech_backbone.SpeechBackbone`, the trunk of
``model.audio_encoder``, so its weights load with ``model.audio_encoder_init``.

``OUT/ctc.json`` records the recipe and the held-out split's greedy-CTC word and character error
rates before and after (the speech set's val split is spoken by a voice the train split never uses).

Tensor legend: ``M`` clips, ``T`` samples, ``F`` frames, ``K`` CTC classes (blank + characters).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from omnidiff.data.shards import read_split
from omnidiff.eval.speech import edit_distance, word_error_rate
from omnidiff.files import atomic_output
from omnidiff.models.audio_encoder import pad_waves
from omnidiff.models.speech_backbone import SpeechBackbone, SpeechBackboneConfig
from omnidiff.tokenization.audio import resample
from omnidiff.training.clip import BACKBONE_FILE, run_cli
from omnidiff.training.minibatch_fit import fit_minibatches

SPEEDS = (0.9, 1.0, 1.1)  # speed perturbation factors, one drawn per training clip


def spelling(text: str) -> str:
    """The characters CTC spells: lower case, letters, digits, apostrophes and single spaces."""
    kept = "".join(c if c.isalnum() or c == "'" else " " for c in text.lower())
    return " ".join(kept.split())


def load_split(data: str | Path, split: str, sample_rate: int) -> tuple[list[torch.Tensor], list[str]]:
    """(waves at ``sample_rate``, transcripts) of one split of a built speech dataset, in stored order."""
    waves, texts = [], []
    for sample in read_split(data, split):  # a missing dataset says how to build it
        wav, text = sample.get("wav"), sample.get("txt")
        if not isinstance(wav, dict) or not isinstance(text, str) or not spelling(text):
            raise ValueError(f"sample {sample.get('__key__', '?')} of {data} lacks a wav or a transcript; CTC "
                             "pretraining reads a speech dataset (data/build_speech.py)")
        wave = torch.as_tensor(np.asarray(wav["array"], dtype=np.float32)).flatten()
        waves.append(resample(wave, int(wav["sample_rate"]), sample_rate))
        texts.append(spelling(text))
    return waves, texts


class CTCReader(nn.Module):
    """The speech backbone plus a linear CTC head over blank + the alphabet."""

    def __init__(self, cfg: SpeechBackboneConfig, alphabet: str, spec_augment: bool = True):
        super().__init__()
        import torchaudio.transforms as T

        self.alphabet = alphabet
        self.backbone = SpeechBackbone(cfg)
        self.head = nn.Linear(cfg.channels, 1 + len(alphabet))
        self.masks = nn.Sequential(T.FrequencyMasking(15), T.FrequencyMasking(15), T.TimeMasking(12),
                                   T.TimeMasking(12)) if spec_augment else None

    def forward(self, waves_MT: torch.Tensor, lengths_M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probabilities [M, F, K], real frames [M])."""
        augment = self.masks if self.training else None
        feats, frames = self.backbone(waves_MT, lengths_M, augment=augment)
        return self.head(feats).log_softmax(-1), frames

    def targets(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        index = {c: i + 1 for i, c in enumerate(self.alphabet)}
        ids = [[index[c] for c in t if c in index] for t in texts]
        return torch.tensor([i for row in ids for i in row], dtype=torch.long), torch.tensor([len(r) for r in ids])

    def greedy(self, logp_MFK: torch.Tensor, frames_M: torch.Tensor) -> list[str]:
        """Best path: the argmax class of each frame, repeats merged, blanks dropped."""
        out = []
        for best, n in zip(logp_MFK.argmax(-1).tolist(), frames_M.tolist(), strict=True):
            chars, last = [], 0
            for k in best[:n]:
                if k != last and k:
                    chars.append(self.alphabet[k - 1])
                last = k
            out.append(" ".join("".join(chars).split()))
        return out


@torch.no_grad()
def error_rates(model: CTCReader, waves: list[torch.Tensor], texts: list[str], batch: int = 64) -> dict:
    """Greedy-CTC word and character error rates (corpus level) and a few transcripts."""
    was = model.training
    model.eval()
    hyps = []
    for i in range(0, len(waves), batch):
        logp, frames = model(*pad_waves(waves[i:i + batch]))
        hyps += model.greedy(logp, frames)
    model.train(was)
    chars = sum(edit_distance(list(r), list(h)) for r, h in zip(texts, hyps, strict=True))
    return {"wer": round(word_error_rate(texts, hyps), 4), "cer": round(chars / max(1, sum(map(len, texts))), 4),
            "examples": [{"reference": r, "heard": h} for r, h in list(zip(texts, hyps, strict=True))[:6]]}


def perturbed(wave: torch.Tensor, speed: float, sample_rate: int) -> torch.Tensor:
    """``wave`` played ``speed`` times faster (pitch and tempo together, as tape speed does)."""
    if speed == 1.0:
        return wave
    return resample(wave, int(round(sample_rate * speed)), sample_rate)


def pretrain(data: str, out: str, *, channels: int = 192, layers: int = 3, heads: int = 4, epochs: int = 40,
             batch: int = 32, lr: float = 1e-3, seed: int = 0, sample_rate: int = 16000, hop_length: int = 256) -> dict:
    """Train, write ``OUT/backbone.safetensors`` and ``OUT/ctc.json``; returns the summary."""
    if epochs < 1 or batch < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch >= 1 and lr > 0; got {epochs}, {batch}, {lr}")
    torch.manual_seed(seed)
    cfg = SpeechBackboneConfig(sample_rate=sample_rate, hop_length=hop_length, channels=channels, layers=layers,
                               heads=heads)
    train_waves, train_texts = load_split(data, "train", sample_rate)
    val_waves, val_texts = load_split(data, "val", sample_rate)
    if len(train_waves) < batch:
        raise ValueError(f"{data} has {len(train_waves)} training clips, fewer than one batch of {batch}; lower --batch")
    alphabet = "".join(sorted({c for t in train_texts for c in t}))
    model = CTCReader(cfg, alphabet)
    before = error_rates(model, val_waves, val_texts)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        waves = [perturbed(train_waves[i], float(rng.choice(SPEEDS)), sample_rate) for i in idx.tolist()]
        logp, frames = model(*pad_waves(waves))
        targets, target_lengths = model.targets([train_texts[i] for i in idx.tolist()])
        return F.ctc_loss(logp.transpose(0, 1), targets, frames, target_lengths, zero_infinity=True)

    history = fit_minibatches(model, loss_of, len(train_waves), epochs=epochs, batch=batch, lr=lr, weight_decay=0.01,
                              warmup_steps=min(100, epochs * (len(train_waves) // batch) // 10 + 1), seed=seed,
                              desc="ctc-pretrain")
    after = error_rates(model, val_waves, val_texts)
    train_after = error_rates(model, train_waves[:len(val_waves)], train_texts[:len(val_waves)])
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_speech_backbone(model.backbone, out_dir / BACKBONE_FILE)
    summary = {"backbone": cfg.to_dict(), "data": str(data), "alphabet": alphabet, "train_clips": len(train_waves),
               "val_clips": len(val_waves), "epochs": epochs, "batch": batch, "lr": lr, "steps": len(history),
               "minutes": round((time.perf_counter() - start) / 60, 2), "val_before": before, "val_after": after,
               "train_after": train_after, "loss_first": history[0] if history else None,
               "loss_last": history[-1] if history else None, "loss_history": history}
    with atomic_output(out_dir / "ctc.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def save_speech_backbone(backbone: SpeechBackbone, path: str | Path) -> None:
    """Write ``backbone``'s weights with its settings, as ``model.audio_encoder_init`` reads them."""
    trunk = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
    with atomic_output(Path(path)) as tmp:
        save_file(trunk, str(tmp), metadata={"backbone": "speech", "config": json.dumps(backbone.cfg.to_dict()),
                                             "objective": "ctc_characters"})


def load_speech_backbone(encoder: nn.Module, path: str | Path) -> None:
    """Copy a CTC-pretrained backbone (``backbone.safetensors`` of `pretrain`) into ``encoder.backbone``; its
    recorded shape must be the encoder's."""
    path = Path(path)
    if path.is_dir():
        path = path / BACKBONE_FILE
    if not path.is_file():
        raise ValueError(f"model.audio_encoder_init: {path} does not exist; make it with `python -m "
                         "omnidiff.training.ctc_pretrain --data <speech dataset> --out <dir>`")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("backbone") != "speech":
        raise ValueError(f"model.audio_encoder_init {path} is not a speech backbone (made by "
                         "omnidiff.training.ctc_pretrain); give the folder that module wrote")
    saved, wanted = json.loads(meta["config"]), encoder.cfg.backbone.to_dict()
    differ = {k: (saved.get(k), v) for k, v in wanted.items() if k != "dropout" and saved.get(k) != v}
    if differ:
        raise ValueError(f"model.audio_encoder_init {path} was pretrained with other settings than "
                         f"model.audio_encoder.backbone (saved, wanted): {differ}; pretrain with these or change them")
    encoder.backbone.load_state_dict(load_file(str(path)), strict=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a built speech dataset folder (data/build_speech.py)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--channels", type=int, default=192, help="model.audio_encoder.backbone.channels")
    parser.add_argument("--layers", type=int, default=3, help="model.audio_encoder.backbone.layers")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    return run_cli(lambda: pretrain(args.data, args.out, channels=args.channels, layers=args.layers,
                                    epochs=args.epochs, batch=args.batch, lr=args.lr))


if __name__ == "__main__":
    raise SystemExit(main())
