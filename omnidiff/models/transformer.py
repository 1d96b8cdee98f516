"""The bidirectional (MoE) transformer that predicts every token of the unified vocabulary.

``Transformer.forward(tokens, *, attention, positions=None, kv_cache=None) -> logits``. Losses live
outside the model (omnidiff/diffusion); so does parallelism (omnidiff/training/distributed.py).
Feed-forward layers are dense SwiGLU or MoE per layer (``moe_layers``); the MoE auxiliary losses
come back only when asked (``return_aux=True``).

Positions: by default each sample counts its real (non-pad) tokens from 0, so left padding does not
shift anything; under ``block`` attention the two copies x_t and x_0 share positions 0..L-1; with a
cache, new tokens continue after the cached real tokens.

Shape legend: B batch, L tokens, C model width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from omnidiff.models.audio_encoder import AudioEncoder, AudioEncoderConfig, AudioInputs
from omnidiff.models.image_encoder import ImageEncoder, ImageEncoderConfig, ImageInputs
from omnidiff.models.layers import (
    AttentionSpec,
    KVCache,
    RMSNorm,
    RotaryEmbedding,
    SelfAttention,
    SwiGLU,
    as_spec,
    build_attention_mask,
)
from omnidiff.models.moe import MoEAux, MoEConfig, MoEFeedForward
from omnidiff.strict import from_known_keys


@dataclass
class TransformerConfig:
    vocab_size: int
    dim: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None  # None = num_heads (no grouped-query attention)
    ffn_hidden: int = 768  # dense SwiGLU width
    moe: MoEConfig | None = None
    moe_layers: tuple[int, ...] | str = "all_but_first"  # indices, "all", "all_but_first" or "none"
    max_positions: int = 4096
    rope_theta: float = 10000.0
    qk_norm: bool = True
    attn_bias: bool = False  # Qwen2 uses q/k/v biases
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    head_bias: bool = False  # the LM head has a bias (model.output_prior starts it at the answers' log prior)
    init_std: float = 0.02
    gradient_checkpointing: bool = False
    check_inputs: bool = True  # validate token ids (one host sync per forward)
    image_encoder: ImageEncoderConfig | None = None  # prompt images also read as pixels (models/image_encoder.py)
    audio_encoder: AudioEncoderConfig | None = None  # prompt audio also heard as a waveform (models/audio_encoder.py)
    extra: dict = field(default_factory=dict)  # free-form metadata (e.g. source of an AR init)

    def __post_init__(self):
        if isinstance(self.moe, dict):
            self.moe = MoEConfig(**self.moe)
        if isinstance(self.image_encoder, dict):
            self.image_encoder = ImageEncoderConfig.from_dict(self.image_encoder)
        if isinstance(self.audio_encoder, dict):
            self.audio_encoder = AudioEncoderConfig.from_dict(self.audio_encoder)
        if isinstance(self.moe_layers, list):
            self.moe_layers = tuple(self.moe_layers)
        if self.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {self.vocab_size}")
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        bad = [i for i in self.moe_layer_indices() if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"moe_layers {bad} out of range for {self.num_layers} layers")

    def moe_layer_indices(self) -> tuple[int, ...]:
        if self.moe is None or self.moe_layers == "none":
            return ()
        if self.moe_layers == "all":
            return tuple(range(self.num_layers))
        if self.moe_layers == "all_but_first":
            return tuple(range(1, self.num_layers))
        if isinstance(self.moe_layers, str):
            raise ValueError(f"moe_layers must be indices, 'all', 'all_but_first' or 'none'; got {self.moe_layers!r}")
        return tuple(self.moe_layers)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["moe_layers"] = list(self.moe_layers) if isinstance(self.moe_layers, tuple) else self.moe_layers
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TransformerConfig:
        return from_known_keys(cls, d, "TransformerConfig")


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, use_moe: bool):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = SelfAttention(cfg.dim, cfg.num_heads, cfg.num_kv_heads, cfg.qk_norm, cfg.attn_bias, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = MoEFeedForward(cfg.dim, cfg.moe) if use_moe else SwiGLU(cfg.dim, cfg.ffn_hidden)

    def forward(self, x, rope, positions, mask, kv_cache, layer, query_columns=None) -> tuple[torch.Tensor, MoEAux | None]:
        h = self.attn(self.attn_norm(x), rope, positions, mask, kv_cache, layer, query_columns)
        x = (x if query_columns is None else x[:, query_columns]) + h
        h = self.ffn(self.ffn_norm(x))
        aux = None
        if isinstance(h, tuple):
            h, aux = h
        return x + h, aux


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        moe_at = set(cfg.moe_layer_indices())
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        # Each layer built fresh (no deepcopy) so DeepSpeed ZeRO-3 zero.Init can partition it.
        self.layers = nn.ModuleList([Block(cfg, i in moe_at) for i in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=cfg.head_bias)
        self.rope = RotaryEmbedding(cfg.dim // cfg.num_heads, cfg.max_positions, cfg.rope_theta)
        self.image_encoder = ImageEncoder(cfg.image_encoder, cfg.dim) if cfg.image_encoder is not None else None
        self.audio_encoder = AudioEncoder(cfg.audio_encoder, cfg.dim) if cfg.audio_encoder is not None else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        own_init = [enc.backbone for enc in (self.image_encoder, self.audio_encoder) if enc is not None]
        skipped = {id(m) for backbone in own_init for m in backbone.modules()}
        for module in self.modules():
            if id(module) in skipped:
                continue  # the encoders' backbones keep their own initialisation
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, MoEFeedForward):
                module.reset_parameters(std)
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def encode_images(self, images: ImageInputs) -> ImageInputs:
        """``images`` with the image encoder's features computed once (a decode passes the result to every
        forward instead of re-running the backbone each step)."""
        if self.image_encoder is None:
            raise ValueError("image inputs were given but this model has no image encoder (model.image_encoder)")
        return self.image_encoder.encode(images)

    def encode_audio(self, audio: AudioInputs) -> AudioInputs:
        """``audio`` with the audio encoder's features computed once (for every forward of a decode)."""
        if self.audio_encoder is None:
            raise ValueError("audio inputs were given but this model has no audio encoder (model.audio_encoder)")
        return self.audio_encoder.encode(audio)

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        attention: str | AttentionSpec = "full",
        positions: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        return_aux: bool = False,
        return_hidden: bool = False,
        logits_columns: slice | None = None,
        logits_mask: torch.Tensor | None = None,
        images: ImageInputs | None = None,
        audio: AudioInputs | None = None,
    ):
        """Logits [B, L, V] for ``tokens`` [B, L].

        Args:
            attention: a mode name or an `AttentionSpec` (mode, prefix lengths, block size, padding).
            positions: [B, L] rotary positions; derived from the padding mask when omitted.
            kv_cache: cached keys/values to attend over; extended unless ``kv_cache.frozen``.
            return_aux: also return the combined `MoEAux` (None for a dense model).
            return_hidden: also return the per-layer hidden states (inputs to each block + final).
            logits_columns: compute logits only for these columns of ``tokens`` (a slice), e.g. the
                block a sampler is filling. Exact: every column still feeds keys/values (and the
                cache), but the last layer's queries, FFN, norm and LM head run on these columns
                only. The last hidden state and the last layer's MoE statistics then cover only them.
            logits_mask: bool [B, L]: return logits [N, V] of the N marked positions only (row-major
                order, as ``logits[logits_mask]`` of the full forward), the ones a loss reads. The
                trunk runs on every position; the final norm and the LM head (a [*, V] matmul, the
                largest single cost at this size) skip the rest.
            images: the prompt images of the rows (`ImageInputs`), read by the image encoder and added to
                the embeddings of their codes (needs ``image_encoder`` in the config).
            audio: the prompt clips of the rows (`AudioInputs`), heard by the audio encoder in place of (or
                added to) the embeddings of their codes (needs ``audio_encoder`` in the config).
        """
        spec = as_spec(attention)
        B, L = tokens.shape
        if self.cfg.check_inputs:
            self._check_tokens(tokens)
        pad_BL = spec.padding_mask
        if spec.mode == "block":
            if L % 2:
                raise ValueError(f"block attention expects x_t ⊕ x_0 (an even length), got {L} tokens")
            half = pad_BL if pad_BL is not None else torch.ones(B, L // 2, dtype=torch.bool, device=tokens.device)
            pad_BL = torch.cat([half, half], 1)
        elif pad_BL is None:
            pad_BL = torch.ones(B, L, dtype=torch.bool, device=tokens.device)
        if pad_BL.shape != (B, L):
            raise ValueError(f"padding_mask must be {(B, L if spec.mode != 'block' else L // 2)}, got {tuple(spec.padding_mask.shape)}")
        if positions is None:
            positions = self.default_positions(spec, pad_BL, kv_cache)
        if int(positions.max()) >= self.cfg.max_positions:
            raise ValueError(f"position {int(positions.max())} exceeds max_positions={self.cfg.max_positions}")

        key_padding = kv_cache.key_padding_with(pad_BL) if kv_cache is not None else pad_BL
        if kv_cache is not None and kv_cache.length and spec.mode == "block":
            raise ValueError("block attention is for the uncached x_t ⊕ x_0 layout; with a block cache use 'full' or 'prefix'")
        mask = build_attention_mask(spec, B, L, key_padding.shape[1], tokens.device, key_padding)

        x = self.embed(tokens)
        if images is not None:
            if self.image_encoder is None:
                raise ValueError("image inputs were given but this model has no image encoder (model.image_encoder)")
            x = self.image_encoder.add_to(x, positions, images)
        if audio is not None:
            if self.audio_encoder is None:
                raise ValueError("audio inputs were given but this model has no audio encoder (model.audio_encoder)")
            x = self.audio_encoder.add_to(x, positions, audio)
        hidden, auxes = [x], []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            cols = logits_columns if i == last else None
            if self.cfg.gradient_checkpointing and self.training and kv_cache is None:
                x, aux = checkpoint(layer, x, self.rope, positions, mask, None, i, cols, use_reentrant=False)
            else:
                x, aux = layer(x, self.rope, positions, mask, kv_cache, i, cols)
            if aux is not None:
                auxes.append(aux)
            if return_hidden:
                hidden.append(x)
        if kv_cache is not None:
            kv_cache.commit_padding(pad_BL)
        if logits_mask is not None:
            if logits_columns is not None or logits_mask.shape != x.shape[:2]:
                raise ValueError(f"logits_mask must be bool {tuple(x.shape[:2])} and cannot be combined with "
                                 "logits_columns")
            x = x[logits_mask]
        logits = self.lm_head(self.norm(x))
        out = (logits,)
        if return_aux:
            out += (MoEAux.combine(auxes),)
        if return_hidden:
            out += (hidden,)
        return out[0] if len(out) == 1 else out

    @staticmethod
    def default_positions(spec: AttentionSpec, pad_BL: torch.Tensor, kv_cache: KVCache | None) -> torch.Tensor:
        if spec.mode == "block":
            half = pad_BL[:, : pad_BL.shape[1] // 2]
            p = (half.long().cumsum(1) - 1).clamp_min(0)
            return torch.cat([p, p], 1)
        if kv_cache is not None:
            return kv_cache.positions_after(pad_BL)
        return (pad_BL.long().cumsum(1) - 1).clamp_min(0)

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"tokens must be an integer tensor, got {tokens.dtype}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.cfg.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.cfg.vocab_size}); got min {lo}, max {hi}")

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg.num_layers)

    def moe_layers(self) -> list[MoEFeedForward]:
        return [b.ffn for b in self.layers if isinstance(b.ffn, MoEFeedForward)]
