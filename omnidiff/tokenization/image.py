"""Image tokenizer: a small VQ autoencoder (`diffusers.VQModel`) behind a pixel-unshuffle.

An RGB image of side ``image_size`` becomes an ``[h, w]`` grid of codebook indices (local ids
``0..codebook_size-1``), one range of the `Vocab` named ``image``; `to_global` flattens the grid
row-major. Notable choices:

- **Pixel-unshuffle in front, pixel-shuffle behind.** Folding ``unshuffle x unshuffle`` pixel
  blocks into channels lets the VQModel's convolutions run at a lower resolution, which is
  several times faster on CPU for the same downsampling ``f = unshuffle * 2**(len(blocks) - 1)``.
- **The VQModel's own encoder, ``quant_conv``, `VectorQuantizer` and decoder**, with the
  quantizer's corrected (non-legacy) loss: codebook term + ``beta`` x commitment term.
- **Dead-code re-seeding** (`reseed_dead_codes`): codes unused for a number of training steps are
  moved onto random recent encoder outputs; without it the codebook collapses early.
- **Or no codebook at all** (``quantizer: fsq``, `omnidiff/tokenization/fsq.py`): finite scalar
  quantisation rounds each latent channel to a few levels, so one flat colour keeps one code
  instead of hundreds of learned near-copies (the synonyms a model drawing images must unlearn).

Tensor legend: ``B`` batch, ``C`` channels, ``H, W`` pixels, ``h, w`` code grid, ``D`` code dim,
``K`` codebook size, ``N`` flattened code positions.

Folder layout written by `save`: ``image_tokenizer.json`` (format, modality, `ImageVQConfig`) and
``model.safetensors`` (the VQModel's weights).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from omnidiff.files import read_json, read_safetensors
from omnidiff.tokenization.base import single_range_to_global
from omnidiff.tokenization.code_cache import encode_through
from omnidiff.tokenization.fsq import FiniteScalarQuantizer, check_levels
from omnidiff.tokenization.vocab import Vocab

CONFIG_NAME = "image_tokenizer.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "omnidiff-image-vq/1"


@dataclass
class ImageVQConfig:
    """Architecture of the VQ autoencoder.

    Args:
        image_size: side of the (square) images it encodes, in pixels.
        unshuffle: pixel-unshuffle factor applied before the VQModel (1 = none).
        block_out_channels: channels of the VQModel's blocks; each block after the first halves
            the resolution.
        layers_per_block: ResNet layers per block.
        latent_channels: channels of the encoder output / decoder input.
        vq_embed_dim: dimension of a codebook vector.
        codebook_size: number of codes K (the tokenizer's vocabulary size).
        norm_num_groups: GroupNorm groups (must divide every block's channels).
        mid_attention: self-attention in the VQModel's middle block.
        beta: weight of the commitment term in the quantizer loss.
        quantizer: ``vq`` (a learned codebook, diffusers' `VectorQuantizer`) or ``fsq`` (finite scalar
            quantisation, `FiniteScalarQuantizer`: no codebook to learn, no synonyms by re-seeding).
        fsq_levels: with ``fsq``, the number of values of each latent channel, e.g. ``(8, 5, 5, 5)``;
            then ``codebook_size`` must be their product and ``vq_embed_dim`` their count.
    """

    image_size: int = 64
    unshuffle: int = 4
    block_out_channels: tuple[int, ...] = (64, 128)
    layers_per_block: int = 1
    latent_channels: int = 64
    vq_embed_dim: int = 32
    codebook_size: int = 512
    norm_num_groups: int = 32
    mid_attention: bool = False
    beta: float = 0.25
    quantizer: str = "vq"
    fsq_levels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.fsq_levels = tuple(int(v) for v in self.fsq_levels)
        if self.quantizer not in ("vq", "fsq"):
            raise ValueError(f"quantizer must be 'vq' or 'fsq', got {self.quantizer!r}")
        if self.quantizer == "fsq":
            levels = check_levels(self.fsq_levels)
            size = int(np.prod(levels))
            if self.codebook_size != size or self.vq_embed_dim != len(levels):
                raise ValueError(f"fsq_levels {list(levels)} give {size} codes of dimension {len(levels)}: set "
                                 f"codebook_size={size} and vq_embed_dim={len(levels)} (got {self.codebook_size} "
                                 f"and {self.vq_embed_dim})")
        elif self.fsq_levels:
            raise ValueError("fsq_levels only applies with quantizer: fsq; drop it or set quantizer: fsq")
        if not self.block_out_channels:
            raise ValueError("block_out_channels needs at least one block, e.g. (64, 128)")
        if self.unshuffle < 1:
            raise ValueError(f"unshuffle must be >= 1, got {self.unshuffle}")
        if self.image_size % self.downsample:
            raise ValueError(f"image_size {self.image_size} is not divisible by the downsampling factor "
                             f"{self.downsample} (unshuffle {self.unshuffle} x 2^{len(self.block_out_channels) - 1})")
        bad = [c for c in (*self.block_out_channels,) if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups {self.norm_num_groups} must divide every block's channels; {bad} do not")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}")

    @property
    def downsample(self) -> int:
        """Pixels per code along each side."""
        return self.unshuffle * 2 ** (len(self.block_out_channels) - 1)

    @property
    def codes_shape(self) -> tuple[int, int]:
        side = self.image_size // self.downsample
        return side, side


# Named presets; ``debug`` is the tiny CPU config the tests use.
PRESETS: dict[str, ImageVQConfig] = {
    "debug": ImageVQConfig(image_size=16, unshuffle=2, block_out_channels=(16, 16), latent_channels=8,
                           vq_embed_dim=4, codebook_size=32, norm_num_groups=8),
    "f8_64px": ImageVQConfig(),
}


def _build_vqmodel(cfg: ImageVQConfig) -> torch.nn.Module:
    from diffusers import VQModel

    blocks = len(cfg.block_out_channels)
    model = VQModel(
        in_channels=3 * cfg.unshuffle**2,
        out_channels=3 * cfg.unshuffle**2,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        sample_size=cfg.image_size // cfg.unshuffle,
        num_vq_embeddings=cfg.codebook_size,
        norm_num_groups=cfg.norm_num_groups,
        vq_embed_dim=cfg.vq_embed_dim,
        mid_block_add_attention=cfg.mid_attention,
    )
    if cfg.quantizer == "fsq":
        model.quantize = FiniteScalarQuantizer(cfg.fsq_levels)
        return model
    model.quantize.legacy = False  # beta on the commitment term, as in the VQ-VAE paper
    model.quantize.beta = cfg.beta
    return model


@dataclass
class VQOutput:
    """What one autoencoder pass returns (for training and evaluation)."""

    reconstruction: torch.Tensor  # [B, 3, H, W] in about [0, 1] (not clamped, so gradients flow)
    codes: torch.Tensor  # [B, h, w] long
    latents: torch.Tensor  # [N, D] encoder outputs before quantisation (for dead-code re-seeding)
    quant_loss: torch.Tensor  # scalar: codebook + beta * commitment
    extra: dict = field(default_factory=dict)


class ImageTokenizer:
    """RGB image <-> ``[h, w]`` grid of VQ codes (docs/design.md, "Tokenizers").

    Example:
        >>> tok = ImageTokenizer(PRESETS["debug"])
        >>> ids = tok.encode(Image.new("RGB", (16, 16)))
        >>> tuple(ids.shape) == tok.codes_shape
        True
    """

    modality = "image"
    range_name = "image"

    def __init__(self, config: ImageVQConfig | None = None, model: torch.nn.Module | None = None):
        self.config = config or ImageVQConfig()
        self.model = model if model is not None else _build_vqmodel(self.config)
        self.model.eval()
        self.code_cache = None  # a CodeCache (code_cache.py) while the tokenizer is frozen, e.g. in training

    # ------------------------------------------------------------------ properties
    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def codes_shape(self) -> tuple[int, int]:
        return self.config.codes_shape

    @property
    def tokens_per_image(self) -> int:
        h, w = self.codes_shape
        return h * w

    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    @property
    def codebook(self) -> torch.Tensor:
        """The ``[K, D]`` codebook (a view of the quantizer's embedding weight)."""
        return self.model.quantize.embedding.weight

    def vocab_ranges(self) -> dict[str, int]:
        return {self.range_name: self.vocab_size}

    # ------------------------------------------------------------------ pixels <-> tensors
    def to_tensor(self, image: Any) -> torch.Tensor:
        """A PIL image (any mode, resized bicubic if needed) or float tensor ``[3, S, S]`` in [0, 1] -> ``[3, S, S]``."""
        size = self.image_size
        if isinstance(image, Image.Image):
            if image.mode != "RGB":
                image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.BICUBIC)
            return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        if isinstance(image, torch.Tensor):
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"an image tensor must be [3, H, W], got shape {tuple(image.shape)}; "
                                 f"use encode_tensor for batches [B, 3, H, W]")
            if not image.is_floating_point():
                raise ValueError(f"an image tensor must be float in [0, 1], got {image.dtype}; divide uint8 by 255")
            self._check_tensor_size(image.shape[-2:])
            return image.float()
        raise ValueError(f"the image tokenizer encodes a PIL image or a float tensor [3, H, W], got {type(image).__name__}")

    def _check_tensor_size(self, hw) -> None:
        if tuple(hw) != (self.image_size, self.image_size):
            raise ValueError(f"image tensors must be {self.image_size}x{self.image_size}, got {tuple(hw)}; "
                             f"resize first (PIL images are resized automatically)")

    @staticmethod
    def to_pil(pixels_3HW: torch.Tensor) -> Image.Image:
        array = (pixels_3HW.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(array, mode="RGB")

    # ------------------------------------------------------------------ the autoencoder
    def _encode_latents(self, pixels_B3HW: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(pixels_B3HW * 2 - 1, self.config.unshuffle) if self.config.unshuffle > 1 else pixels_B3HW * 2 - 1
        return self.model.quant_conv(self.model.encoder(x))  # [B, D, h, w]

    def _decode_quantized(self, quant_BDhw: torch.Tensor) -> torch.Tensor:
        out = self.model.decoder(self.model.post_quant_conv(quant_BDhw), None)
        if self.config.unshuffle > 1:
            out = F.pixel_shuffle(out, self.config.unshuffle)
        return (out + 1) / 2

    def _nearest_codes(self, latents_BDhw: torch.Tensor) -> torch.Tensor:
        if self.config.quantizer == "fsq":
            return self.model.quantize.ids(latents_BDhw)
        b, d, h, w = latents_BDhw.shape
        flat_ND = latents_BDhw.permute(0, 2, 3, 1).reshape(-1, d)
        return torch.cdist(flat_ND, self.codebook).argmin(dim=1).view(b, h, w)

    def forward(self, pixels_B3HW: torch.Tensor) -> VQOutput:
        """Full autoencoder pass with straight-through gradients (used by training and evaluation)."""
        self._check_tensor_size(pixels_B3HW.shape[-2:])
        latents = self._encode_latents(pixels_B3HW)
        b, d, h, w = latents.shape
        quant, quant_loss, (_, _, indices) = self.model.quantize(latents)
        recon = self._decode_quantized(quant)
        return VQOutput(recon, indices.view(b, h, w), latents.permute(0, 2, 3, 1).reshape(-1, d), quant_loss)

    @torch.no_grad()
    def encode_tensor(self, pixels_B3HW: torch.Tensor) -> torch.Tensor:
        """Batched encode: float ``[B, 3, S, S]`` in [0, 1] -> long ``[B, h, w]`` codes."""
        if pixels_B3HW.ndim != 4 or pixels_B3HW.shape[1] != 3:
            raise ValueError(f"encode_tensor needs [B, 3, H, W], got shape {tuple(pixels_B3HW.shape)}")
        self._check_tensor_size(pixels_B3HW.shape[-2:])
        return self._nearest_codes(self._encode_latents(pixels_B3HW.float()))

    @torch.no_grad()
    def decode_tensor(self, codes_Bhw: torch.Tensor) -> torch.Tensor:
        """Batched decode: long ``[B, h, w]`` codes -> float ``[B, 3, S, S]`` clamped to [0, 1]."""
        codes_Bhw = torch.as_tensor(codes_Bhw)
        if codes_Bhw.ndim != 3 or tuple(codes_Bhw.shape[1:]) != self.codes_shape:
            raise ValueError(f"decode_tensor needs codes [B, {self.codes_shape[0]}, {self.codes_shape[1]}], "
                             f"got shape {tuple(codes_Bhw.shape)}")
        self._check_codes(codes_Bhw)
        b, h, w = codes_Bhw.shape
        quant = self.model.quantize.get_codebook_entry(codes_Bhw.reshape(-1).long(), (b, h, w, self.config.vq_embed_dim))
        return self._decode_quantized(quant).clamp(0, 1)

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.is_floating_point():
            raise ValueError(f"image codes must be integer ids, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.vocab_size):
            raise ValueError(f"image codes must be in [0, {self.vocab_size}); got min {int(codes.min())}, "
                             f"max {int(codes.max())}")

    # ------------------------------------------------------------------ the Tokenizer protocol
    def encode(self, image: Any) -> torch.Tensor:
        """PIL image or float tensor ``[3, S, S]`` in [0, 1] -> long ``[h, w]`` local ids."""
        pixels = self.to_tensor(image)
        return encode_through(self.code_cache, pixels, lambda: self.encode_tensor(pixels[None])[0])

    def decode(self, ids: torch.Tensor) -> Image.Image:
        """Long ``[h, w]`` ids (or their row-major flattening) -> RGB PIL image."""
        ids = torch.as_tensor(ids)
        if ids.ndim == 1 and ids.numel() == self.tokens_per_image:
            ids = ids.view(self.codes_shape)
        return self.to_pil(self.decode_tensor(ids[None])[0])

    def encode_batch(self, images: list[Any]) -> list[torch.Tensor]:
        if not images:
            return []
        codes = self.encode_tensor(torch.stack([self.to_tensor(im) for im in images]))
        return list(codes.unbind(0))

    def decode_batch(self, ids: list[torch.Tensor]) -> list[Image.Image]:
        if not ids:
            return []
        grids = [torch.as_tensor(i).view(self.codes_shape) if torch.as_tensor(i).ndim == 1 else torch.as_tensor(i)
                 for i in ids]
        return [self.to_pil(p) for p in self.decode_tensor(torch.stack(grids)).unbind(0)]

    def to_global(self, vocab: Vocab, local_ids: torch.Tensor) -> torch.Tensor:
        return single_range_to_global(vocab, self.range_name, local_ids)

    def from_global(self, vocab: Vocab, global_ids: torch.Tensor) -> torch.Tensor:
        """Flat global ids -> ``[h, w]`` local ids (a flat tensor of another length stays flat)."""
        local = vocab.to_local(self.range_name, torch.as_tensor(global_ids).reshape(-1))
        return local.view(self.codes_shape) if local.numel() == self.tokens_per_image else local

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME))
        settings = {"format": FORMAT, "modality": "image", "kind": "vq",
                    "config": {k: list(v) if isinstance(v, tuple) else v
                               for k, v in dataclasses.asdict(self.config).items()}}
        (directory / CONFIG_NAME).write_text(json.dumps(settings, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> ImageTokenizer:
        """Rebuild the model from ``image_tokenizer.json`` and load ``model.safetensors`` into it."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not config_path.exists() or not weights_path.exists():
            raise FileNotFoundError(f"{directory} holds no image tokenizer: expected {CONFIG_NAME} and {WEIGHTS_NAME} "
                                    f"(train one with tokenizers/train_image_vq.py)")
        settings = read_json(config_path, "image tokenizer settings")
        if not isinstance(settings, dict) or settings.get("format") != FORMAT or not isinstance(settings.get("config"), dict):
            found = settings.get("format") if isinstance(settings, dict) else None
            raise ValueError(f"{config_path} has format {found!r}, expected {FORMAT!r} with a config section")
        known = {f.name for f in dataclasses.fields(ImageVQConfig)}
        unknown = sorted(set(settings["config"]) - known)
        if unknown:
            raise ValueError(f"{config_path} has unknown config keys {unknown}; known: {sorted(known)}")
        tok = cls(ImageVQConfig(**settings["config"]))
        state = read_safetensors(weights_path)
        expected = tok.model.state_dict()
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
        if missing or extra or wrong:
            raise ValueError(f"{weights_path} does not match the architecture in {config_path}: "
                             f"missing {missing[:3]}, unexpected {extra[:3]}, wrong shapes {sorted(wrong)[:3]}; "
                             f"the two files must come from the same save()")
        tok.model.load_state_dict(state)
        return tok


# ---------------------------------------------------------------------------------------------- training helpers
def foreground_weights(pixels_B3HW: torch.Tensor, weight: float, threshold: float = 0.15) -> torch.Tensor:
    """Per-pixel loss weights ``[B, 1, H, W]``: 1 on the background, ``1 + weight`` elsewhere.

    The background is each image's per-channel median colour; a pixel is foreground when its
    colour differs from it by more than ``threshold`` (summed over channels). Shape scenes are
    mostly background, so without this small objects (and their colours) are learned last.
    """
    background = pixels_B3HW.flatten(2).median(dim=2).values[:, :, None, None]
    foreground = (pixels_B3HW - background).abs().sum(1, keepdim=True) > threshold
    return 1.0 + weight * foreground.float()


def vq_loss(tok: ImageTokenizer, pixels_B3HW: torch.Tensor, *, l1_weight: float = 1.0, l2_weight: float = 1.0,
            lowpass_weight: float = 1.0, lowpass: int = 4, quant_weight: float = 1.0,
            foreground_weight: float = 0.0, edge_weight: float = 0.0) -> tuple[torch.Tensor, VQOutput, dict]:
    """Training loss of one batch: reconstruction (L1 + L2) + low-pass colour term + quantizer loss.

    The low-pass term compares ``lowpass x lowpass`` average-pooled images: an autoencoder learns
    outlines before colours, and this term pushes flat colour regions early. With
    ``foreground_weight > 0`` the pixel terms weigh non-background pixels more (`foreground_weights`).
    The edge term (L1 between horizontal and vertical pixel differences) is a cheap stand-in for a
    perceptual loss: it penalises the blur that rounds the corners of small shapes.

    Returns:
        ``(total, output, stats)`` where ``stats`` holds floats for logging.
    """
    out = tok.forward(pixels_B3HW)
    diff = out.reconstruction - pixels_B3HW
    weights = foreground_weights(pixels_B3HW, foreground_weight) if foreground_weight > 0 else 1.0
    l1, l2 = (weights * diff.abs()).mean(), (weights * diff.pow(2)).mean()
    low = F.avg_pool2d(diff, lowpass).abs().mean() if lowpass > 1 else diff.new_zeros(())
    edge = diff.new_zeros(())
    if edge_weight > 0:
        edge = (diff[..., :, 1:] - diff[..., :, :-1]).abs().mean() + (diff[..., 1:, :] - diff[..., :-1, :]).abs().mean()
    total = l1_weight * l1 + l2_weight * l2 + lowpass_weight * low + edge_weight * edge + quant_weight * out.quant_loss
    with torch.no_grad():
        mse = (out.reconstruction.clamp(0, 1) - pixels_B3HW).pow(2).flatten(1).mean(1)
        psnr = (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()
    stats = {"loss": float(total.detach()), "l1": float(l1.detach()), "l2": float(l2.detach()),
             "lowpass": float(low.detach()), "edge": float(edge.detach()), "quant": float(out.quant_loss.detach()), "psnr": float(psnr)}
    return total, out, stats


def code_statistics(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Codebook usage (fraction of codes that occur) and perplexity of the code histogram."""
    counts = torch.bincount(codes.reshape(-1), minlength=codebook_size).float()
    probs = counts / counts.sum().clamp_min(1)
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return {"usage": float((counts > 0).float().mean()), "perplexity": float(entropy.exp())}


@torch.no_grad()
def reseed_dead_codes(codebook_KD: torch.Tensor, steps_unused_K: torch.Tensor, latents_ND: torch.Tensor,
                      max_unused: int, generator: torch.Generator | None = None, noise: float = 0.01) -> int:
    """Move every code unused for ``max_unused`` steps onto a random recent encoder output.

    Args:
        codebook_KD: the codebook weight, changed in place.
        steps_unused_K: per-code count of steps since it was last chosen; reset to 0 for re-seeded codes.
        latents_ND: recent encoder outputs (before quantisation) to draw new codes from.
        max_unused: steps a code may stay unused before it is re-seeded (>= 1).
        generator: RNG for the draw (for reproducible training).
        noise: relative noise added so several re-seeded codes do not coincide.

    Returns:
        The number of re-seeded codes.
    """
    if max_unused < 1:
        raise ValueError(f"max_unused must be >= 1 step, got {max_unused}")
    if latents_ND.ndim != 2 or latents_ND.shape[1] != codebook_KD.shape[1]:
        raise ValueError(f"latents must be [N, {codebook_KD.shape[1]}], got {tuple(latents_ND.shape)}")
    dead = (steps_unused_K >= max_unused).nonzero().flatten()
    if dead.numel() == 0 or latents_ND.shape[0] == 0:
        return 0
    pick = torch.randint(0, latents_ND.shape[0], (dead.numel(),), generator=generator)
    chosen = latents_ND[pick].to(codebook_KD.dtype)
    scale = chosen.std().clamp_min(1e-6) * noise
    codebook_KD[dead] = chosen + scale * torch.randn(chosen.shape, generator=generator)
    steps_unused_K[dead] = 0
    return int(dead.numel())


def update_unused_steps(steps_unused_K: torch.Tensor, codes: torch.Tensor) -> None:
    """Add one step to every code's counter and reset the counters of codes in ``codes``."""
    steps_unused_K += 1
    steps_unused_K[torch.unique(codes.reshape(-1))] = 0
