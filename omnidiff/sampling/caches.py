"""Denoisers: how the sampling loop gets logits for the current block, with or without a KV cache.

Shape legend: B batch rows, P prompt columns (left-padded), A answer columns, V vocabulary.

Every denoiser answers ``logits(answer_BA, lo, hi)`` -> logits [B, hi - lo, V] for answer columns
``lo..hi`` and counts its forward passes (``nfe``). They differ in what they recompute:

- `Uncached`: the whole sequence every step (the reference).
- `PrefixCached`: **exact** under ``prefix`` attention. Prefix queries never see the answer, so the
  prefix keys/values are computed once and only answer tokens are fed afterwards.
- `BlockCached`: **exact** under ``block`` attention (BD3-LM). The prompt and every finished block
  are encoded once as clean ``x_0`` (block-causal) and appended to the cache; the current block's
  ``x_t`` attends that cache plus itself, exactly the keys the ``x_t ⊕ x_0`` layout lets it see.
- `CausalCached`: **exact** under ``causal`` attention (the AR twin): the prompt is encoded once, then
  each committed token is appended to the cache and its logits predict the next column, one forward
  per answer token, as an AR decoder with a KV cache runs.
- `ApproxCached`: Fast-dLLM's prefix or dual cache for ``full`` attention. At the first step of a
  block the whole sequence is encoded; the prefix (and, for ``dual``, the suffix after the block)
  keys/values are then reused for the block's later steps although the answer changed, which is an
  approximation: report its agreement with `Uncached`, do not assume identity.
"""

from __future__ import annotations

import torch
from torch import nn

from omnidiff.diffusion.masking import block_input
from omnidiff.models.layers import AttentionSpec, KVCache


def keep_columns(cache: KVCache, columns: torch.Tensor) -> None:
    """Keep only the cached key slots ``columns`` (same for every row) in every layer."""
    cache.keys = [None if k is None else k[:, :, columns] for k in cache.keys]
    cache.values = [None if v is None else v[:, :, columns] for v in cache.values]
    cache.key_padding = cache.key_padding[:, columns]


class Denoiser:
    """Base: holds the left-padded prompt and the positions of the full sequence."""

    def __init__(self, model: nn.Module, prefix_BP: torch.Tensor, prefix_pad_BP: torch.Tensor, answer_len: int,
                 attention: str = "prefix", block_size: int | None = None, shift: bool = False):
        self.model, self.prefix, self.prefix_pad = model, prefix_BP, prefix_pad_BP.bool()
        self.attention, self.block_size, self.shift = attention, block_size, shift
        B, P = prefix_BP.shape
        self.P, self.A = P, answer_len
        self.pad = torch.cat([self.prefix_pad, torch.ones(B, answer_len, dtype=torch.bool, device=prefix_BP.device)], 1)
        self.positions = (self.pad.long().cumsum(1) - 1).clamp_min(0)
        self.nfe = 0

    def begin(self) -> None:
        """Called once before the first block."""

    def end_block(self, answer_BA: torch.Tensor, lo: int, hi: int) -> None:
        """Called when columns ``lo..hi`` of the answer are final."""

    def logits(self, answer_BA: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        raise NotImplementedError

    def _forward(self, tokens: torch.Tensor, spec: AttentionSpec, positions: torch.Tensor | None = None,
                 cache: KVCache | None = None, columns: slice | None = None) -> torch.Tensor:
        """Logits of ``tokens`` (only for ``columns``, when given: the model skips the rest exactly)."""
        self.nfe += 1
        return self.model(tokens, attention=spec, positions=positions, kv_cache=cache, logits_columns=columns)

    def _columns(self, start: int, lo: int, hi: int) -> slice:
        """Columns whose logits predict answer columns lo..hi when the answer starts at ``start``."""
        return slice(start + lo - 1, start + hi - 1) if self.shift else slice(start + lo, start + hi)


class Uncached(Denoiser):
    """The whole prompt + answer every step, in the model's attention mode."""

    def logits(self, answer_BA, lo, hi):
        x = torch.cat([self.prefix, answer_BA], 1)
        cols = self._columns(self.P, lo, hi)  # the prompt has >= 1 column, so a shifted slice stays >= 0
        if self.attention == "block":  # x_t comes first in the x_t ⊕ x_0 layout, so the columns are the same
            spec = AttentionSpec("block", block_size=self.block_size, padding_mask=self.pad)
            return self._forward(block_input(x, x), spec, columns=cols)
        if self.attention == "prefix":
            lengths = torch.full((x.shape[0],), self.P, dtype=torch.long, device=x.device)
            return self._forward(x, AttentionSpec("prefix", prefix_lengths=lengths, padding_mask=self.pad), columns=cols)
        return self._forward(x, AttentionSpec(self.attention, padding_mask=self.pad), columns=cols)


class PrefixCached(Denoiser):
    """Exact prefix KV cache for models decoded with ``prefix`` attention."""

    def begin(self):
        self.cache = self.model.new_cache()
        out = self._forward(self.prefix, AttentionSpec("full", padding_mask=self.prefix_pad),
                            self.positions[:, : self.P], self.cache)
        self.last_prefix_logits = out[:, -1:]  # predicts answer column 0 when ``shift`` is on
        self.cache.frozen = True

    def logits(self, answer_BA, lo, hi):
        ones = torch.ones_like(answer_BA, dtype=torch.bool)
        spec = AttentionSpec("full", padding_mask=ones)
        if self.shift and lo == 0:  # column 0 is predicted by the last prompt token
            if hi == 1:
                return self.last_prefix_logits
            out = self._forward(answer_BA, spec, self.positions[:, self.P:], self.cache, slice(0, hi - 1))
            return torch.cat([self.last_prefix_logits, out], 1)
        return self._forward(answer_BA, spec, self.positions[:, self.P:], self.cache, self._columns(0, lo, hi))


def block_causal(pad_BL: torch.Tensor, block_size: int) -> torch.Tensor:
    """[B, L, L] pattern of the ``x_0`` half of block attention: own and earlier blocks."""
    idx = torch.arange(pad_BL.shape[1], device=pad_BL.device) // block_size
    return (idx.view(-1, 1) >= idx.view(1, -1)).expand(pad_BL.shape[0], -1, -1)


class BlockCached(Denoiser):
    """Exact block cache for models decoded with ``block`` attention (prompt length a multiple of the block)."""

    def begin(self):
        self.cache = self.model.new_cache()
        spec = AttentionSpec("full", padding_mask=self.prefix_pad, allowed=block_causal(self.prefix_pad, self.block_size))
        self._forward(self.prefix, spec, self.positions[:, : self.P], self.cache)

    def _block(self, answer_BA, lo, hi, frozen: bool):
        self.cache.frozen = frozen
        tokens = answer_BA[:, lo:hi]
        spec = AttentionSpec("full", padding_mask=torch.ones_like(tokens, dtype=torch.bool))
        return self._forward(tokens, spec, self.positions[:, self.P + lo: self.P + hi], self.cache)

    def logits(self, answer_BA, lo, hi):
        return self._block(answer_BA, lo, hi, frozen=True)

    def end_block(self, answer_BA, lo, hi):
        self._block(answer_BA, lo, hi, frozen=False)


class CausalCached(Denoiser):
    """Exact KV cache for ``causal`` (AR) models decoded one column per block with ``shift``."""

    def begin(self):
        if not self.shift:
            raise ValueError("the causal cache reads each column's logits from the column before (shift=True)")
        self.cache = self.model.new_cache()
        spec = AttentionSpec("causal", padding_mask=self.prefix_pad)
        self.next_logits = self._forward(self.prefix, spec, self.positions[:, : self.P], self.cache,
                                         slice(self.P - 1, self.P))

    def logits(self, answer_BA, lo, hi):
        if hi != lo + 1:
            raise ValueError(f"the causal cache decodes one column at a time (block_len=1), got columns {lo}..{hi - 1}")
        return self.next_logits

    def end_block(self, answer_BA, lo, hi):
        if hi == self.A:  # nothing is left to predict
            return
        tokens = answer_BA[:, lo:hi]
        spec = AttentionSpec("full", padding_mask=torch.ones_like(tokens, dtype=torch.bool))  # the newest key
        self.next_logits = self._forward(tokens, spec, self.positions[:, self.P + lo: self.P + hi], self.cache)


class ApproxCached(Denoiser):
    """Fast-dLLM prefix (``kind="prefix"``) or dual (``kind="dual"``) cache, refreshed at each block start."""

    def __init__(self, *args, kind: str = "prefix", **kwargs):
        super().__init__(*args, **kwargs)
        if kind not in ("prefix", "dual"):
            raise ValueError(f"approximate cache kind must be 'prefix' or 'dual', got {kind!r}")
        self.kind, self.block_lo = kind, None

    def logits(self, answer_BA, lo, hi):
        P = self.P
        if self.block_lo != lo:  # first step of a block: full forward, then keep what stays cached
            self.block_lo = lo
            self.cache = self.model.new_cache()
            x = torch.cat([self.prefix, answer_BA], 1)
            if self.attention == "prefix":
                lengths = torch.full((x.shape[0],), P, dtype=torch.long, device=x.device)
                spec = AttentionSpec("prefix", prefix_lengths=lengths, padding_mask=self.pad)
            else:
                spec = AttentionSpec("full", padding_mask=self.pad)
            out = self._forward(x, spec, self.positions, self.cache, slice(P + lo, P + hi))
            cols = torch.arange(x.shape[1], device=x.device)
            keep = cols < P if self.kind == "prefix" else (cols < P + lo) | (cols >= P + hi)
            keep_columns(self.cache, cols[keep])
            self.cache.frozen = True
            return out
        if self.kind == "prefix":
            ones = torch.ones_like(answer_BA, dtype=torch.bool)
            return self._forward(answer_BA, AttentionSpec("full", padding_mask=ones), self.positions[:, P:], self.cache,
                                 slice(lo, hi))
        tokens = answer_BA[:, lo:hi]
        spec = AttentionSpec("full", padding_mask=torch.ones_like(tokens, dtype=torch.bool))
        return self._forward(tokens, spec, self.positions[:, P + lo: P + hi], self.cache)
