"""Dense scene-label pretraining of the image encoder's backbone: every code-grid cell names what covers it.

    python -m omnidiff.training.dense_pretrain --data runs/data/shapes,runs/data/digits --out runs/encoder \\
        [--backbone resnet10t] [--out-index 2] [--grid 8] [--epochs 6] [--batch 128]

Why: a captioner trained from scratch has to learn *what is in the picture* (an encoder problem) and
*which answer word reads which part of it* (a routing problem) at once, from ~10 caption tokens per
scene. Measured with a transformer fed perfect per-cell attributes instead of pixels, routing alone
is learnt within a few hundred steps; from raw pixels the same transformer had not learnt shapes at
all by 600 steps (docs/ablations.md, section 14). The field's captioners start from an encoder that
already knows what pictures contain (CLIP/SigLIP towers in LLaVA, LaViDa, OpenVLA); none can reach
this machine, and a CLIP trained here on caption pairs learns global content but not where it is
(docs/ablations.md, section 8). The shape scenes carry their exact layout (``json["scene"]``: each
object's colour, shape, size and position), so this module trains the backbone the way detection
and segmentation towers are trained: for every cell of the model's code grid, classify the colour,
shape and size of the object that covers most of it, or "none". Handwritten digits
(data/build_digits.py, ``json["label"]``) add a fourth head: the digit class of every cell the ink
covers. Each dataset leaves the other's heads at "none".

The backbone is the same `timm` feature extractor ``model.image_encoder`` builds (``features_only``,
stage ``out_index``), pooled to the same grid, so its weights load with ``model.image_encoder_init``
(`omnidiff.training.clip.load_backbone`, the same ``backbone.safetensors`` format as the CLIP route).
``OUT/dense.json`` records the recipe and held-out per-cell accuracy on object cells before and after.

Tensor legend: ``N`` images, ``S`` image side, ``G`` grid side, ``A`` attributes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from omnidiff.data.shards import ShardStream, split_shards
from omnidiff.data.sources import shapes
from omnidiff.files import atomic_output
from omnidiff.training.clip import BACKBONE_FILE, run_cli
from omnidiff.training.minibatch_fit import fit_minibatches

# Each attribute's classes; label 0 of every head is "no object covers this cell".
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": tuple(shapes.COLOURS),
    "shape": shapes.SHAPES,
    "size": tuple(shapes.SIZE_FRACTIONS),
    "digit": tuple(str(d) for d in range(10)),
}
SCENE_ATTRIBUTES = ("colour", "shape", "size")  # the heads a shape scene labels (digits label "digit")
MIN_COVER = 0.15  # a cell belongs to an object when the object covers at least this share of its pixels


def cell_labels(scene: dict, grid: int, image_size: int) -> np.ndarray:
    """Labels [A, G, G] of one scene: 1 + class index of the object covering most of each cell, 0 for none."""
    if image_size % grid:
        raise ValueError(f"image side {image_size} must be a multiple of the grid side {grid}")
    scale = image_size / float(scene.get("size", image_size))
    cell = image_size // grid
    best = np.zeros((grid, grid), dtype=np.float32)
    labels = np.zeros((len(ATTRIBUTES), grid, grid), dtype=np.int64)
    for obj in scene["objects"]:
        mask = shapes.shape_mask(obj["shape"], obj["x"] * scale, obj["y"] * scale, obj["radius"] * scale, image_size)
        cover = mask.reshape(grid, cell, grid, cell).mean(axis=(1, 3))
        wins = (cover >= MIN_COVER) & (cover > best)
        best = np.where(wins, cover, best)
        for a, (name, classes) in enumerate(ATTRIBUTES.items()):
            if name in SCENE_ATTRIBUTES:
                labels[a][wins] = 1 + classes.index(obj[name])
    return labels


def digit_cell_labels(image_SS3: np.ndarray, digit: int, grid: int) -> np.ndarray:
    """Labels [A, G, G] of one handwritten digit: 1 + ``digit`` on the cells its ink covers, 0 elsewhere."""
    side = image_SS3.shape[0]
    if side % grid:
        raise ValueError(f"image side {side} must be a multiple of the grid side {grid}")
    if not 0 <= digit <= 9:
        raise ValueError(f"a digit label must be 0-9, got {digit}")
    cell = side // grid
    ink = image_SS3.mean(-1) > 127
    cover = ink.reshape(grid, cell, grid, cell).mean(axis=(1, 3))
    labels = np.zeros((len(ATTRIBUTES), grid, grid), dtype=np.int64)
    labels[list(ATTRIBUTES).index("digit")][cover >= MIN_COVER] = 1 + digit
    return labels


def load_split(data: str | Path, split: str, image_size: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels uint8 [N, 3, S, S], labels [N, A, G, G]) of one split of a shape-scene or digit dataset, in
    stored order."""
    from PIL import Image

    shards = split_shards(data, split)  # a missing dataset says how to build it
    count = json.loads((Path(data) / "manifest.json").read_text())["splits"][split]["count"]
    stream = iter(ShardStream(shards, shuffle=False))
    images, labels = [], []
    for _ in range(count):
        sample = next(stream)
        meta = sample.get("json") or {}
        image = next((sample[k] for k in ("png", "jpg", "jpeg") if k in sample), None)
        if image is None or ("scene" not in meta and "label" not in meta):
            raise ValueError(f"sample {sample.get('__key__', '?')} of {data} has no image, or neither json['scene'] "
                             "nor json['label']; dense pretraining reads shape scenes (data/build_shapes.py) and "
                             "handwritten digits (data/build_digits.py)")
        image = image.convert("RGB")
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.NEAREST)
        pixels = np.array(image, dtype=np.uint8)
        images.append(torch.from_numpy(pixels).permute(2, 0, 1))
        found = (cell_labels(meta["scene"], grid, image_size) if "scene" in meta
                 else digit_cell_labels(pixels, int(meta["label"]), grid))
        labels.append(torch.from_numpy(found))
    return torch.stack(images), torch.stack(labels)


class DenseLabeller(nn.Module):
    """The image encoder's backbone plus one linear classifier per attribute on each grid cell."""

    def __init__(self, backbone: str, out_index: int, grid: int):
        super().__init__()
        import timm

        self.grid = grid
        self.backbone = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=(out_index,))
        channels = self.backbone.feature_info.channels()[-1]
        self.norm = nn.LayerNorm(channels)
        self.heads = nn.ModuleList([nn.Linear(channels, 1 + len(c)) for c in ATTRIBUTES.values()])

    def forward(self, pixels_N3SS: torch.Tensor) -> list[torch.Tensor]:
        """Per attribute, logits [N, classes, G, G]."""
        fmap = F.adaptive_avg_pool2d(self.backbone(pixels_N3SS)[-1], self.grid)
        feats = self.norm(fmap.permute(0, 2, 3, 1))  # [N, G, G, channels]
        return [head(feats).permute(0, 3, 1, 2) for head in self.heads]


def to_pixels(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> floats in [-1, 1], the image encoder's input range (`formatting.image_pixels`)."""
    return images_u8.float() / 127.5 - 1.0


@torch.no_grad()
def object_cell_accuracy(model: DenseLabeller, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> dict:
    """Per attribute, the share of object-covered cells classified right (background cells excluded)."""
    was = model.training
    model.eval()
    right = torch.zeros(len(ATTRIBUTES))
    total = torch.zeros(len(ATTRIBUTES))
    for i in range(0, len(images), batch):
        logits = model(to_pixels(images[i:i + batch]))
        lab = labels[i:i + batch]
        for a, lg in enumerate(logits):
            obj = lab[:, a] > 0
            right[a] += (lg.argmax(1) == lab[:, a])[obj].sum()
            total[a] += obj.sum()
    model.train(was)
    return {name: round(float(right[a] / total[a].clamp_min(1)), 4) for a, name in enumerate(ATTRIBUTES)}


def load_datasets(data: str, split: str, image_size: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`load_split` of every comma-separated dataset folder in ``data``, concatenated."""
    parts = [load_split(d.strip(), split, image_size, grid) for d in data.split(",") if d.strip()]
    if not parts:
        raise ValueError("--data names no dataset; give one or more folders, comma-separated")
    return torch.cat([p for p, _ in parts]), torch.cat([lab for _, lab in parts])


def pretrain(data: str, out: str, *, backbone: str = "resnet10t", out_index: int = 2, grid: int = 8,
             image_size: int = 64, epochs: int = 6, batch: int = 128, lr: float = 2e-3, seed: int = 0) -> dict:
    """Train, write ``OUT/backbone.safetensors`` and ``OUT/dense.json``; returns the summary."""
    if epochs < 1 or batch < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch >= 1 and lr > 0; got {epochs}, {batch}, {lr}")
    torch.manual_seed(seed)
    train_px, train_lab = load_datasets(data, "train", image_size, grid)
    val_px, val_lab = load_datasets(data, "val", image_size, grid)
    if len(train_px) < batch:
        raise ValueError(f"{data} has {len(train_px)} training scenes, fewer than one batch of {batch}; lower --batch")
    model = DenseLabeller(backbone, out_index, grid)
    before = object_cell_accuracy(model, val_px, val_lab)
    start = time.perf_counter()

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        logits, lab = model(to_pixels(train_px[idx])), train_lab[idx]
        return sum(F.cross_entropy(lg, lab[:, a]) for a, lg in enumerate(logits)) / len(logits)

    history = fit_minibatches(model, loss_of, len(train_px), epochs=epochs, batch=batch, lr=lr, weight_decay=0.05,
                              warmup_steps=min(50, epochs * (len(train_px) // batch) // 10 + 1), seed=seed,
                              desc="dense-pretrain")
    after = object_cell_accuracy(model, val_px, val_lab)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    trunk = {k: v.detach().contiguous() for k, v in model.backbone.state_dict().items()}
    with atomic_output(out_dir / BACKBONE_FILE) as tmp:
        save_file(trunk, str(tmp), metadata={"backbone": backbone, "image_size": str(image_size),
                                             "objective": "dense_scene_labels"})
    summary = {"backbone": backbone, "out_index": out_index, "grid": grid, "image_size": image_size,
               "data": str(data), "train_scenes": len(train_px), "val_scenes": len(val_px), "epochs": epochs,
               "batch": batch, "lr": lr, "steps": len(history), "minutes": round((time.perf_counter() - start) / 60, 2),
               "val_object_cell_accuracy_before": before, "val_object_cell_accuracy_after": after,
               "loss_first": history[0] if history else None, "loss_last": history[-1] if history else None,
               "loss_history": history}
    with atomic_output(out_dir / "dense.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="built shape-scene and/or digit dataset folders, comma-separated "
                        "(e.g. runs/data/shapes,runs/data/digits)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--backbone", default="resnet10t", help="a timm model name (model.image_encoder.backbone)")
    parser.add_argument("--out-index", type=int, default=2, help="the feature stage (model.image_encoder.out_index)")
    parser.add_argument("--grid", type=int, default=8, help="side of the image tokenizer's code grid")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args(argv)
    return run_cli(lambda: pretrain(args.data, args.out, backbone=args.backbone, out_index=args.out_index,
                                    grid=args.grid, image_size=args.image_size, epochs=args.epochs, batch=args.batch,
                                    lr=args.lr))


if __name__ == "__main__":
    raise SystemExit(main())
