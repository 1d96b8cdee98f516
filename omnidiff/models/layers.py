"""Transformer building blocks: RMSNorm, rotary embeddings, SwiGLU, attention, the mask builder, KV cache.

All four attention modes (docs/design.md, "Attention modes") come from ONE function, `build_attention_mask`,
so the training forward, the uncached sampler and every cached sampler see the same rule:

- ``full``   every query sees every (non-pad) key;
- ``prefix`` queries before the prefix boundary see only the prefix, answer queries see all;
             this keeps the prefix's keys/values independent of the answer (exact prefix cache);
- ``block``  BD3-LM: the input is ``x_t ⊕ x_0`` (2L tokens); with block b(k) = floor(pos/B),
             x_t sees x_t of its own block and x_0 of strictly earlier blocks, x_0 sees x_0 of its
             own and earlier blocks, x_0 never sees x_t;
- ``causal`` key index <= query index (AR baselines, AR-to-diffusion warm-up).

Masks are boolean, True = may attend, shaped [B, 1, Q, K]. Queries are the last Q of the K key
slots (cached keys come first), which is how cached decoding indexes them.

Shape legend: B batch, L/Q query length, K key length, H heads, D head dim, C model width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_MODES = ("full", "prefix", "block", "causal")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 so bf16 activations keep their scale (standard practice in LLaMA-style code).
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return x32.type_as(x) * self.weight


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (half-split layout, as in LLaMA/Qwen2 HF checkpoints)."""

    def __init__(self, head_dim: int, max_positions: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head dimension, got {head_dim}")
        self.head_dim, self.max_positions, self.theta = head_dim, max_positions, theta
        self.register_buffer("cos", torch.empty(max_positions, head_dim // 2), persistent=False)
        self.register_buffer("sin", torch.empty(max_positions, head_dim // 2), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """(Re)compute the tables; loaders that build modules on the meta device call this."""
        d = self.head_dim
        device = self.cos.device if not self.cos.is_meta else torch.device("cpu")
        # fp32 inverse frequencies times fp32 positions, as the Hugging Face Llama/Qwen2 code computes
        # them: a checkpoint mapped from there then reproduces its logits bit for bit. (fp64 angles
        # differ by ~1e-5 rad at position 500, which moves SmolLM2-135M's logits by ~1e-4.)
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d))
        positions = torch.arange(self.max_positions, dtype=torch.float32, device=device)
        angles = torch.outer(positions, inv_freq)
        self.cos = angles.cos().float()
        self.sin = angles.sin().float()

    def forward(self, x_BHLD: torch.Tensor, positions_BL: torch.Tensor) -> torch.Tensor:
        cos = self.cos[positions_BL].unsqueeze(1).to(x_BHLD.dtype)  # [B, 1, L, D/2]
        sin = self.sin[positions_BL].unsqueeze(1).to(x_BHLD.dtype)
        x1, x2 = x_BHLD.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class SwiGLU(nn.Module):
    """Dense gated feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


# --------------------------------------------------------------------------------------- masks
@dataclass(frozen=True)
class AttentionSpec:
    """Which attention pattern a forward uses.

    Args:
        mode: one of ATTENTION_MODES.
        prefix_lengths: [B] int, for ``prefix``: the column where each sample's answer starts
            (left pads count as prefix columns).
        block_size: for ``block``: block length B; the input holds 2L tokens (x_t then x_0).
        padding_mask: [B, L] bool, True on real tokens, over the tokens of this forward (for
            ``block``, over one copy of length L; it is applied to both copies).
        allowed: optional [B, Q, K] bool ANDed into the mode's mask, for patterns no mode names
            (e.g. the causal-to-bidirectional annealing of AR-to-diffusion adaptation: mode
            ``full`` plus the annealed pattern here).
    """

    mode: str = "full"
    prefix_lengths: torch.Tensor | None = None
    block_size: int | None = None
    padding_mask: torch.Tensor | None = None
    allowed: torch.Tensor | None = None

    def __post_init__(self):
        if self.mode not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {self.mode!r}; allowed: {list(ATTENTION_MODES)}")
        if self.mode == "prefix" and self.prefix_lengths is None:
            raise ValueError("attention mode 'prefix' needs prefix_lengths (the column where each answer starts)")
        if self.mode == "block" and (self.block_size is None or self.block_size <= 0):
            raise ValueError(f"attention mode 'block' needs a positive block_size, got {self.block_size}")


def as_spec(attention: str | AttentionSpec) -> AttentionSpec:
    return AttentionSpec(mode=attention) if isinstance(attention, str) else attention


def build_attention_mask(
    spec: AttentionSpec, batch: int, q_len: int, k_len: int, device: torch.device | str = "cpu",
    key_padding_BK: torch.Tensor | None = None,
) -> torch.Tensor:
    """The boolean attention mask [B, 1, Q, K] for ``spec`` (True = may attend).

    Queries occupy key slots ``k_len - q_len .. k_len - 1``. ``key_padding_BK`` (True = real key)
    overrides the padding derived from ``spec.padding_mask`` when a cache holds earlier keys.
    Every query may always attend to its own slot, so fully padded rows stay finite; for real
    tokens that slot is allowed by every mode anyway.
    """
    q_idx = torch.arange(k_len - q_len, k_len, device=device).view(q_len, 1)
    k_idx = torch.arange(k_len, device=device).view(1, k_len)
    mode = spec.mode
    if mode == "full":
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device).expand(batch, q_len, k_len)
    elif mode == "causal":
        allowed = (k_idx <= q_idx).expand(batch, q_len, k_len)
    elif mode == "prefix":
        p = torch.as_tensor(spec.prefix_lengths, device=device).view(batch, 1, 1)
        if int(p.max()) > k_len or int(p.min()) < 0:
            raise ValueError(
                f"prefix length must be within the sequence: got prefix lengths in "
                f"[{int(p.min())}, {int(p.max())}] for a sequence of {k_len} tokens"
            )
        allowed = (k_idx.unsqueeze(0) < p) | (q_idx.unsqueeze(0) >= p)
    else:  # block
        if k_len % 2:
            raise ValueError(f"block attention expects x_t ⊕ x_0 (an even length), got {k_len} tokens")
        L, B = k_len // 2, spec.block_size
        if L % B:
            raise ValueError(f"block size {B} must divide the sequence length {L}; pick a divisor of {L}")
        q_x0, k_x0 = q_idx >= L, k_idx >= L
        q_blk, k_blk = (q_idx % L) // B, (k_idx % L) // B
        allowed = (
            (~q_x0 & ~k_x0 & (q_blk == k_blk))
            | (~q_x0 & k_x0 & (k_blk < q_blk))
            | (q_x0 & k_x0 & (k_blk <= q_blk))
        ).expand(batch, q_len, k_len)
    if spec.allowed is not None:
        if spec.allowed.shape != (batch, q_len, k_len):
            raise ValueError(f"explicit allowed mask must be [batch, queries, keys] = {(batch, q_len, k_len)}, "
                             f"got {tuple(spec.allowed.shape)}")
        allowed = allowed & spec.allowed.to(device=device, dtype=torch.bool)
    if key_padding_BK is None and spec.padding_mask is not None:
        key_padding_BK = spec.padding_mask.bool()
        if mode == "block":
            key_padding_BK = torch.cat([key_padding_BK, key_padding_BK], dim=1)
    if key_padding_BK is not None:
        if key_padding_BK.shape != (batch, k_len):
            raise ValueError(f"padding mask must be [batch, keys] = {(batch, k_len)}, got {tuple(key_padding_BK.shape)}")
        allowed = allowed & key_padding_BK.to(device).view(batch, 1, k_len)
    allowed = allowed | (k_idx == q_idx)
    return allowed.unsqueeze(1)


# --------------------------------------------------------------------------------------- cache
class KVCache:
    """Per-layer keys/values (after RoPE and QK-norm) plus the padding of every cached slot.

    Attention reads the cached keys in front of the new ones. When ``frozen`` is False the new
    keys are appended (prefix encoding, finished blocks); when True they are only used for this
    forward (answer tokens that change every denoising step).
    """

    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.key_padding: torch.Tensor | None = None  # [B, K] bool, True = real
        self.frozen = False

    @property
    def length(self) -> int:
        return 0 if self.key_padding is None else self.key_padding.shape[1]

    def positions_after(self, padding_BL: torch.Tensor) -> torch.Tensor:
        """Default positions for new tokens: continue each sample's count of real cached tokens."""
        start = 0 if self.key_padding is None else self.key_padding.sum(1, keepdim=True)
        return (start + padding_BL.long().cumsum(1) - 1).clamp_min(0)

    def key_padding_with(self, padding_BL: torch.Tensor) -> torch.Tensor:
        padding_BL = padding_BL.bool()
        return padding_BL if self.key_padding is None else torch.cat([self.key_padding, padding_BL], 1)

    def attend(self, layer: int, k_BHLD: torch.Tensor, v_BHLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values to attend over: cached ones followed by the new ones (stored unless frozen)."""
        old_k, old_v = self.keys[layer], self.values[layer]
        if old_k is not None:
            k_BHLD = torch.cat([old_k, k_BHLD], dim=2)
            v_BHLD = torch.cat([old_v, v_BHLD], dim=2)
        if not self.frozen:
            self.keys[layer], self.values[layer] = k_BHLD, v_BHLD
        return k_BHLD, v_BHLD

    def commit_padding(self, padding_BL: torch.Tensor) -> None:
        """Record the padding of the tokens just appended (called once per forward, after all layers)."""
        if not self.frozen:
            self.key_padding = self.key_padding_with(padding_BL)

    def select(self, index: torch.Tensor) -> KVCache:
        """A cache holding only the batch rows ``index`` (for dropping finished samples)."""
        out = KVCache(len(self.keys))
        out.keys = [None if k is None else k[index] for k in self.keys]
        out.values = [None if v is None else v[index] for v in self.values]
        out.key_padding = None if self.key_padding is None else self.key_padding[index]
        out.frozen = self.frozen
        return out


# --------------------------------------------------------------------------------------- attention
class SelfAttention(nn.Module):
    """Multi-head (optionally grouped-query) attention with QK-norm and RoPE, through SDPA."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, qk_norm: bool = True, bias: bool = False,
                 norm_eps: float = 1e-6):
        super().__init__()
        if dim % num_heads or num_heads % num_kv_heads:
            raise ValueError(f"dim {dim} must divide by heads {num_heads}, and heads by kv heads {num_kv_heads}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, dim // num_heads
        self.q_proj = nn.Linear(dim, num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else nn.Identity()

    def forward(self, x_BLC: torch.Tensor, rope: RotaryEmbedding, positions_BL: torch.Tensor, mask_B1QK: torch.Tensor,
                kv_cache: KVCache | None = None, layer: int = 0, query_columns: slice | None = None) -> torch.Tensor:
        """Attention output [B, L, C]; with ``query_columns`` only those columns are queries (every
        column still provides keys/values, and is cached as usual), output [B, len(columns), C]."""
        B, L, _ = x_BLC.shape
        k = self.k_norm(self.k_proj(x_BLC).view(B, L, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x_BLC).view(B, L, self.num_kv_heads, self.head_dim).transpose(1, 2)
        k = rope(k, positions_BL)
        if query_columns is not None:
            x_BLC, positions_BL, mask_B1QK = x_BLC[:, query_columns], positions_BL[:, query_columns], mask_B1QK[:, :, query_columns]
        Q = x_BLC.shape[1]
        q = self.q_norm(self.q_proj(x_BLC).view(B, Q, self.num_heads, self.head_dim)).transpose(1, 2)
        q = rope(q, positions_BL)
        if kv_cache is not None:
            k, v = kv_cache.attend(layer, k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_B1QK, enable_gqa=self.num_kv_heads != self.num_heads)
        return self.o_proj(out.transpose(1, 2).reshape(B, Q, -1))
