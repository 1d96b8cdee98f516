"""Denoisers: how the sampling loop gets logits for the current block, with or without a KV cache.

Shape legend: B batch rows, P prompt columns (left-padded), A answer columns, V vocabulary.

Every denoiser answers ``logits(answer_BA, lo, hi)`` -> logits [B, hi - lo, V] for answer columns
``lo..hi`` and counts its forward passes (``nfe``). They differ in what they recompute:

- `Uncached`: the whole sequence every step (the reference).
- `PrefixCached`: **exact** under ``prefix`` attention. Prefix queries never see the answer, so the
  prefix keys/values are computed once, in the first step's forward over prompt and answer, and only
  answer tokens are fed afterwards.
- `BlockCached`: **exact** under ``block`` attention (BD3-LM). The prompt and every finished block
  are encoded once as clean ``x_0`` (block-causal) and appended to the cache, in front of the next
  step's block; the current block's ``x_t`` attends that cache plus itself, exactly the keys the
  ``x_t ⊕ x_0`` layout lets it see.
- `CausalCached`: **exact** under ``causal`` attention (the AR twin): the prompt is encoded once, then
  each committed token is appended to the cache and its logits predict the next column, one forward
  per answer token, as an AR decoder with a KV cache runs.
- `ApproxCached`: Fast-dLLM's prefix or dual cache for ``full`` attention. At the first step of a
  block the whole sequence is encoded; the prefix (and, for ``dual``, the suffix after the block)
  keys/values are then reused for the block's later steps although the answer changed, which is an
  approximation: report its agreement with `Uncached`, do not assume identity.

Neither exact diffusion cache spends a forward on the prompt alone: what is to be cached joins the next
denoising step's forward, so a decode costs one forward per step, as an AR decoder's first token comes
from its prompt forward.
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
    """Exact prefix KV cache for models decoded with ``prefix`` attention.

    The prompt is not encoded on its own: the first denoising step runs prompt and answer in one forward
    under ``prefix`` attention, exactly the uncached step, and keeps only the prompt's keys/values in
    the cache (prompt queries never see the answer, so those are the prompt's own). Later steps feed
    the answer alone against that cache. The first step thus costs one forward, not two, as an AR
    decoder takes its first token from its prompt forward.
    """

    def begin(self):
        self.cache = None

    def logits(self, answer_BA, lo, hi):
        if self.cache is None:
            return self._first_step(answer_BA, lo, hi)
        ones = torch.ones_like(answer_BA, dtype=torch.bool)
        spec = AttentionSpec("full", padding_mask=ones)
        if self.shift and lo == 0:  # column 0 is predicted by the last prompt token
            if hi == 1:
                return self.last_prefix_logits
            out = self._forward(answer_BA, spec, self.positions[:, self.P:], self.cache, slice(0, hi - 1))
            return torch.cat([self.last_prefix_logits, out], 1)
        return self._forward(answer_BA, spec, self.positions[:, self.P:], self.cache, self._columns(0, lo, hi))

    def _first_step(self, answer_BA, lo, hi):
        """Prompt and answer in one forward; the cache keeps the prompt's columns only."""
        B = answer_BA.shape[0]
        self.cache = self.model.new_cache()
        lengths = torch.full((B,), self.P, dtype=torch.long, device=answer_BA.device)
        spec = AttentionSpec("prefix", prefix_lengths=lengths, padding_mask=self.pad)
        out = self._forward(torch.cat([self.prefix, answer_BA], 1), spec, self.positions, self.cache,
                            self._columns(self.P, lo, hi))
        keep_columns(self.cache, torch.arange(self.P, device=answer_BA.device))
        self.cache.frozen = True
        if self.shift and lo == 0:  # later steps of this block read column 0's logits from here
            self.last_prefix_logits = out[:, :1]
        return out


def block_causal(pad_BL: torch.Tensor, block_size: int, start: int = 0) -> torch.Tensor:
    """[B, L, L] pattern of the ``x_0`` half of block attention: own and earlier blocks (columns counted
    from ``start``)."""
    idx = torch.arange(start, start + pad_BL.shape[1], device=pad_BL.device) // block_size
    return (idx.view(-1, 1) >= idx.view(1, -1)).expand(pad_BL.shape[0], -1, -1)


class BlockCached(Denoiser):
    """Exact block cache for models decoded with ``block`` attention (prompt length a multiple of the block).

    What the cache still lacks (the prompt at first, then each finished block as clean ``x_0``) is not
    encoded in a forward of its own: it rides in front of the next step's ``x_t`` block. Those columns
    attend as the ``x_0`` half does in training (the cache and their own and earlier blocks, never the
    ``x_t`` behind them), so their keys/values, the only part of them kept, are the ones a separate
    forward would store; the ``x_t`` block attends the cache, them and itself. A decode thus costs one
    forward per step, and one that stops early never encodes its last block.
    """

    def begin(self):
        self.cache = self.model.new_cache()
        self.pending = (0, self.P)  # sequence columns still to be cached: the prompt

    def logits(self, answer_BA, lo, hi):
        if self.pending is not None:
            return self._with_pending(answer_BA, lo, hi)
        tokens = answer_BA[:, lo:hi]  # the cache is frozen since the pending columns were stored
        spec = AttentionSpec("full", padding_mask=torch.ones_like(tokens, dtype=torch.bool))
        return self._forward(tokens, spec, self.positions[:, self.P + lo: self.P + hi], self.cache)

    def end_block(self, answer_BA, lo, hi):
        self.pending = (self.P + lo, self.P + hi)  # cached with the next block's first step, if there is one

    def _with_pending(self, answer_BA, lo, hi):
        """One forward over the pending clean columns followed by the ``x_t`` block; only the former are cached."""
        a, b = self.pending  # the prompt, or one finished block of the answer
        clean = self.prefix[:, a:b] if b <= self.P else answer_BA[:, a - self.P: b - self.P]
        noisy = answer_BA[:, lo:hi]
        B, m, n, K = clean.shape[0], b - a, hi - lo, self.cache.length
        pad = torch.cat([self.pad[:, a:b], torch.ones_like(noisy, dtype=torch.bool)], 1)
        allowed = torch.ones(B, m + n, K + m + n, dtype=torch.bool, device=clean.device)
        allowed[:, :m, K:K + m] = block_causal(self.pad[:, a:b], self.block_size, start=a)
        allowed[:, :m, K + m:] = False  # clean columns never see the noisy block
        positions = torch.cat([self.positions[:, a:b], self.positions[:, self.P + lo: self.P + hi]], 1)
        self.cache.frozen = False
        out = self._forward(torch.cat([clean, noisy], 1), AttentionSpec("full", padding_mask=pad, allowed=allowed),
                            positions, self.cache, slice(m, m + n))
        keep_columns(self.cache, torch.arange(K + m, device=clean.device))
        self.cache.frozen, self.pending = True, None
        return out


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
