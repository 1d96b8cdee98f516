"""Continuous image features for the prompt (``model.image_encoder``): the model *reads* pixels.

A prompt image still appears as its VQ codes, ``<image> c_0 .. c_{N-1} </image>``, so the sequence
layout, the vocabulary and every cache are unchanged. With an image encoder the model also sees the
picture through a convolutional backbone (any `timm` model with ``features_only``, trained with the
transformer): its feature map is pooled to the code grid ``[h, w]`` and projected to model width,
and feature ``i`` is *added* to the embedding of prompt code ``c_i``. Understanding tasks (caption,
VQA, VLA) then no longer depend on the quantiser giving the same content the same code, which the
VQ does not do (a flat colour gets hundreds of synonym codes); generated images (T2I answers) stay
codes and get no features.

Features are bound to rotary **positions**, not columns: row ``b`` adds feature ``i`` to the token
at position ``start[b] + i``. Positions are what every forward shares (left padding, a prefix cache,
the x_t ⊕ x_0 block layout and the packed complementary copies all keep the prompt at positions
``0 .. P-1``), so a cached decode, whose later forwards hold answer positions only, gets exactly the
same prompt states as an uncached one.

Tensor legend: ``M`` images, ``B`` rows, ``N = h * w`` codes per image, ``C`` model width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.models.grid_positions import GridPositions
from omnidiff.strict import from_known_keys


@dataclass
class ImageEncoderConfig:
    backbone: str = "resnet10t"  # a timm model name, built with features_only and no pretrained download;
    # or "patch": one linear map per code-grid patch (patch_backbone.py)
    out_index: int = 2  # which feature stage (timm out_indices): 2 is stride 8 for ResNets
    grid: int = 8  # side of the image tokenizer's code grid (set by the trainer from the tokenizer)
    image_size: int = 64  # side of the images fed in, in pixels (set by the trainer from the tokenizer)
    combine: str = "add"  # "add": feature i is added to code i's embedding | "replace": it takes its place,
    # so the codes' synonyms (docs/ablations.md, 5) no longer reach the model's reading of a prompt image
    grid_positions: bool = False  # add learned row + column embeddings to the features (grid_positions.py)
    freeze_backbone: bool = False  # keep a pretrained backbone (model.image_encoder_init) as it is: no gradient,
    # batch-norm statistics fixed; the norm and projection after it still train (docs/ablations.md, 14)

    def __post_init__(self):
        if self.combine not in ("add", "replace"):
            raise ValueError(f"model.image_encoder.combine must be 'add' or 'replace', got {self.combine!r}")
        if not isinstance(self.freeze_backbone, bool):
            raise ValueError(f"model.image_encoder.freeze_backbone must be true or false, got {self.freeze_backbone!r}")

    @classmethod
    def from_dict(cls, d: dict) -> ImageEncoderConfig:
        return from_known_keys(cls, d, "model.image_encoder")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImageInputs:
    """The prompt images of a batch.

    ``pixels`` [M, 3, S, S] in [-1, 1]; ``row_image`` [B]: which image row ``b`` reads (-1: none);
    ``start`` [B]: the rotary position of row ``b``'s first image code; ``features`` [M, N, C]: the
    encoder's output when already computed (`ImageEncoder.encode`; a decode computes it once, not per forward).
    """

    pixels: torch.Tensor
    row_image: torch.Tensor
    start: torch.Tensor
    features: torch.Tensor | None = None

    def to(self, device) -> ImageInputs:
        features = None if self.features is None else self.features.to(device)
        return ImageInputs(self.pixels.to(device), self.row_image.to(device), self.start.to(device), features)

    def repeat(self, times: int) -> ImageInputs:
        """The same images for ``times`` stacked copies of the batch (complementary masking)."""
        return ImageInputs(self.pixels, self.row_image.repeat(times), self.start.repeat(times), self.features)

    def select(self, index: torch.Tensor) -> ImageInputs:
        """The image inputs of batch rows ``index`` only (every picture is kept; rows point into them)."""
        return ImageInputs(self.pixels, self.row_image[index], self.start[index], self.features)

    @property
    def rows(self) -> int:
        return self.row_image.numel()


def image_code_start(prefix: torch.Tensor, vocab) -> int:
    """Index of the first image code in a 1-D prompt of real tokens (its rotary position), or -1."""
    if "image" not in vocab.range_names:
        return -1
    r = vocab.range("image")
    hits = ((prefix >= r.offset) & (prefix < r.end)).nonzero()
    return int(hits[0]) if len(hits) else -1


def image_inputs(prefixes: list[torch.Tensor], pixels: list[torch.Tensor | None], vocab) -> ImageInputs | None:
    """`ImageInputs` of prompts with their pictures (None where a prompt has no image); None if none has one.

    A prompt that holds image codes must come with its pixels, and the other way round.
    """
    if len(prefixes) != len(pixels):
        raise ValueError(f"got {len(prefixes)} prompts but {len(pixels)} images")
    kept, rows, starts = [], [], []
    for prefix, image in zip(prefixes, pixels, strict=True):
        start = image_code_start(prefix, vocab)
        if (start < 0) != (image is None):
            raise ValueError("a prompt with image codes needs its pixels and a prompt without needs none "
                             f"(image codes {'found' if start >= 0 else 'absent'}, pixels "
                             f"{'absent' if image is None else 'given'})")
        rows.append(len(kept) if image is not None else -1)
        starts.append(max(start, 0))
        if image is not None:
            kept.append(image)
    if not kept:
        return None
    return ImageInputs(torch.stack(kept), torch.tensor(rows, dtype=torch.long), torch.tensor(starts, dtype=torch.long))


def _backbone(cfg: ImageEncoderConfig, dim: int) -> tuple[nn.Module, int]:
    """The feature extractor ``cfg.backbone`` names and its output channels."""
    if cfg.backbone == "patch":
        from omnidiff.models.patch_backbone import PatchBackbone

        backbone = PatchBackbone(cfg.image_size, cfg.grid, dim)
        return backbone, backbone.channels
    import timm

    try:
        backbone = timm.create_model(cfg.backbone, pretrained=False, features_only=True, out_indices=(cfg.out_index,))
    except (RuntimeError, ValueError, IndexError) as err:
        raise ValueError(f"model.image_encoder.backbone {cfg.backbone!r} with out_index {cfg.out_index} cannot be "
                         f"built as a timm feature extractor ({err}); pick a timm model name such as resnet10t "
                         "and a stage index it has, or 'patch'") from None
    return backbone, backbone.feature_info.channels()[-1]


class ImageEncoder(nn.Module):
    """Pixels [M, 3, S, S] -> features [M, N, C] on the code grid, at model width."""

    def __init__(self, cfg: ImageEncoderConfig, dim: int):
        super().__init__()
        self.cfg = cfg
        self.backbone, channels = _backbone(cfg, dim)
        self.norm = nn.LayerNorm(channels)
        self.proj = nn.Linear(channels, dim)
        self.positions = GridPositions(cfg.grid, dim) if cfg.grid_positions else None
        if cfg.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> ImageEncoder:
        """As `nn.Module.train`, but a frozen backbone stays in eval mode (its batch-norm statistics are
        the pretrained ones, not re-estimated from each training batch)."""
        super().train(mode)
        if self.cfg.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, pixels_M3SS: torch.Tensor) -> torch.Tensor:
        S = self.cfg.image_size
        if pixels_M3SS.ndim != 4 or pixels_M3SS.shape[1:] != (3, S, S):
            raise ValueError(f"image encoder expects pixels [M, 3, {S}, {S}], got {tuple(pixels_M3SS.shape)}")
        fmap = self.backbone(pixels_M3SS)[-1]
        fmap = F.adaptive_avg_pool2d(fmap, self.cfg.grid)  # [M, channels, h, w]
        feats_MNC = self.proj(self.norm(fmap.flatten(2).transpose(1, 2)))
        return feats_MNC if self.positions is None else feats_MNC + self.positions().to(feats_MNC.dtype)

    def encode(self, images: ImageInputs) -> ImageInputs:
        """``images`` with their features computed, for a decode whose forwards all read the same pictures."""
        dtype = self.proj.weight.dtype
        return dataclasses.replace(images, features=self.forward(images.pixels.to(dtype)))

    def add_to(self, x_BLC: torch.Tensor, positions_BL: torch.Tensor, images: ImageInputs) -> torch.Tensor:
        """``x`` with feature i of row b's image added where ``positions == start[b] + i`` (or, with
        ``combine: replace``, put there instead of the code's embedding)."""
        if images.rows != x_BLC.shape[0]:
            raise ValueError(f"image inputs describe {images.rows} rows but the batch has {x_BLC.shape[0]}")
        feats_MNC = images.features if images.features is not None else self.forward(images.pixels.to(x_BLC.dtype))
        feats_MNC = feats_MNC.to(x_BLC.dtype)
        N = feats_MNC.shape[1]
        index_BL = positions_BL - images.start.view(-1, 1)
        hit_BL = (index_BL >= 0) & (index_BL < N) & (images.row_image.view(-1, 1) >= 0)
        flat = images.row_image.clamp_min(0).view(-1, 1) * N + index_BL.clamp(0, N - 1)
        added = feats_MNC.reshape(-1, feats_MNC.shape[-1])[flat]  # [B, L, C]
        hit = hit_BL.unsqueeze(-1).to(x_BLC.dtype)
        if self.cfg.combine == "replace":
            return x_BLC * (1 - hit) + added * hit
        return x_BLC + added * hit
