"""Contrastive pretraining (CLIP) of the image encoder's backbone on the image-caption pairs of a dataset.

    python -m omnidiff.training.clip --data runs/data/shapes --text-tokenizer runs/tokenizers/text \\
        --out runs/clip/shapes [--backbone resnet10t] [--image-size 64] [--epochs 3] [--batch 256]

The understanding models of the field read images through an encoder that already knows what
pictures contain (LLaVA, LaViDa and OpenVLA start from CLIP/SigLIP towers). No such weights can
reach this machine, so this module makes one from the data it has: `open_clip`'s ``CLIP`` with the
`timm` backbone ``model.image_encoder`` names as its vision tower and a small text transformer
over the project's BPE ids of each image's canonical caption, trained with `open_clip.ClipLoss`.
The trunk's weights are written to ``OUT/backbone.safetensors``; ``model.image_encoder_init``
points a run at them (`load_backbone`). ``OUT/clip.json`` records the recipe and held-out
image-to-caption retrieval before and after (a retrieved caption counts when its text equals the
true one, so scenes that share a caption are not counted as misses).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from omnidiff.data.shards import ShardStream, split_shards
from omnidiff.files import atomic_output
from omnidiff.tasks.captioning import pick_caption

PAD, EOS, OFFSET = 0, 2, 3  # text-tower ids: 0 pads, 2 ends a caption, BPE id k is k + 3
BACKBONE_FILE = "backbone.safetensors"


def load_pairs(data: str | Path, split: str, image_size: int, text_tok, context: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(pixels [N, 3, S, S] in [-1, 1], caption ids [N, context], caption texts) of one split, in stored order."""
    import numpy as np
    from PIL import Image

    images, ids, texts = [], [], []
    shards = split_shards(data, split)  # a missing dataset says how to build it
    count = json.loads((Path(data) / "manifest.json").read_text())["splits"][split]["count"]
    stream = iter(ShardStream(shards, shuffle=False))
    for _ in range(count):
        sample = next(stream)
        image = next((sample[k] for k in ("png", "jpg", "jpeg") if k in sample), None)
        if image is None:
            raise ValueError(f"sample {sample.get('__key__', '?')} of {data} has no image; CLIP needs image-caption pairs")
        image = image.convert("RGB")
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BICUBIC)
        images.append(torch.from_numpy(np.asarray(image, dtype=np.uint8)).permute(2, 0, 1))
        text = pick_caption(sample, "first")
        tokens = (text_tok.encode(text)[: context - 1] + OFFSET).tolist() + [EOS]
        ids.append(torch.tensor(tokens + [PAD] * (context - len(tokens))))
        texts.append(text)
    pixels = torch.stack(images).float() / 127.5 - 1.0
    return pixels, torch.stack(ids), texts


def build_clip(backbone: str, image_size: int, vocab_size: int, context: int, embed_dim: int = 128) -> nn.Module:
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(timm_model_name=backbone, timm_model_pretrained=False, timm_pool="avg",
                           timm_proj="linear", image_size=image_size)
    text = CLIPTextCfg(context_length=context, vocab_size=vocab_size + OFFSET, width=128, heads=4, layers=2,
                       pad_id=PAD, eos_id=EOS, pool_type="eos")
    return open_clip.CLIP(embed_dim, vision, text)


@torch.no_grad()
def retrieval(model: nn.Module, pixels: torch.Tensor, ids: torch.Tensor, texts: list[str], batch: int = 256) -> dict:
    """Held-out image -> caption and caption -> image top-1, counting a hit when the caption texts match."""
    model.eval()
    img = torch.cat([model.encode_image(pixels[i:i + batch], normalize=True) for i in range(0, len(pixels), batch)])
    txt = torch.cat([model.encode_text(ids[i:i + batch], normalize=True) for i in range(0, len(ids), batch)])
    model.train()
    sim = img @ txt.T
    i2t = sum(texts[j] == texts[i] for i, j in enumerate(sim.argmax(1).tolist())) / len(texts)
    t2i = sum(texts[j] == texts[i] for i, j in enumerate(sim.argmax(0).tolist())) / len(texts)
    return {"image_to_caption_top1": round(i2t, 4), "caption_to_image_top1": round(t2i, 4)}


def pretrain(data: str, text_tokenizer: str, out: str, *, backbone: str = "resnet10t", image_size: int = 64,
             epochs: int = 3, batch: int = 256, lr: float = 2e-3, context: int = 32, seed: int = 0) -> dict:
    """Train, write ``OUT/backbone.safetensors`` and ``OUT/clip.json``; returns the summary."""
    from open_clip import ClipLoss

    from omnidiff.tokenization.text import TextTokenizer
    from omnidiff.training.minibatch_fit import fit_minibatches

    torch.manual_seed(seed)
    tok = TextTokenizer.load(text_tokenizer)
    train_px, train_ids, _ = load_pairs(data, "train", image_size, tok, context)
    val_px, val_ids, val_texts = load_pairs(data, "val", image_size, tok, context)
    model = build_clip(backbone, image_size, tok.vocab_size, context)
    loss_fn, before = ClipLoss(), retrieval(model, val_px, val_ids, val_texts)
    start = time.perf_counter()
    history = fit_minibatches(model, lambda idx: loss_fn(*model(train_px[idx], train_ids[idx])), len(train_px),
                              epochs=epochs, batch=batch, lr=lr, weight_decay=0.1, warmup_steps=20, seed=seed,
                              desc="clip")
    after = retrieval(model, val_px, val_ids, val_texts)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    trunk = {k: v.detach().contiguous() for k, v in model.visual.trunk.state_dict().items()}
    with atomic_output(out_dir / BACKBONE_FILE) as tmp:
        save_file(trunk, str(tmp), metadata={"backbone": backbone, "image_size": str(image_size)})
    summary = {"backbone": backbone, "image_size": image_size, "data": str(data), "train_pairs": len(train_px),
               "val_pairs": len(val_px), "epochs": epochs, "batch": batch, "lr": lr, "steps": len(history),
               "minutes": round((time.perf_counter() - start) / 60, 2), "val_before": before, "val_after": after,
               "loss_first": history[0] if history else None, "loss_last": history[-1] if history else None,
               "loss_history": history}
    with atomic_output(out_dir / "clip.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def load_backbone(encoder: nn.Module, path: str | Path) -> None:
    """Copy pretrained trunk weights (``backbone.safetensors`` of `pretrain` here or of
    `omnidiff.training.dense_pretrain.pretrain`) into ``encoder.backbone``.

    The backbone is a timm feature extractor over the first stages of the same network, so every one
    of its weights must be in the file (the later stages the extractor does not use are ignored).
    """
    path = Path(path)
    if path.is_dir():
        path = path / BACKBONE_FILE
    if not path.is_file():
        raise ValueError(f"model.image_encoder_init: {path} does not exist; make it with `python -m "
                         "omnidiff.training.dense_pretrain --data <shape-scene dataset> --out <dir>` (dense scene "
                         "labels) or `python -m omnidiff.training.clip --data <image-caption dataset> --text-tokenizer "
                         "<folder> --out <dir>` (CLIP)")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    wanted = encoder.cfg.backbone
    if meta.get("backbone", wanted) != wanted:
        raise ValueError(f"model.image_encoder_init {path} holds a {meta['backbone']!r} backbone, but "
                         f"model.image_encoder.backbone is {wanted!r}; pretrain that backbone or change it")
    result = encoder.backbone.load_state_dict(load_file(str(path)), strict=False)
    if result.missing_keys:
        raise ValueError(f"model.image_encoder_init {path} lacks {len(result.missing_keys)} backbone weights "
                         f"(first: {result.missing_keys[0]}); it was not made for this backbone")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a built image-caption dataset folder (e.g. runs/data/shapes)")
    parser.add_argument("--text-tokenizer", required=True, help="the text tokenizer folder the captions are read with")
    parser.add_argument("--out", required=True)
    parser.add_argument("--backbone", default="resnet10t", help="a timm model name (model.image_encoder.backbone)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args(argv)
    return run_cli(lambda: pretrain(args.data, args.text_tokenizer, args.out, backbone=args.backbone,
                                    image_size=args.image_size, epochs=args.epochs, batch=args.batch, lr=args.lr))


def run_cli(pretrain_call) -> int:
    """A backbone pretraining for a command line: its summary (without the loss history) printed as JSON and
    exit 0, or a bad input's message on stderr and exit 2 (shared by this module and dense_pretrain.py)."""
    try:
        summary = pretrain_call()
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "loss_history"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
