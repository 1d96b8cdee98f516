"""A memo of a frozen tokenizer's codes, keyed by the exact bytes of what it encodes (``data.code_cache``).

Training re-reads every picture and utterance once per epoch, and a prompt image or a speech clip
costs a VQ or codec forward each time: ~0.1 s of a 0.6-0.9 s caption training step on the CPU
(docs/ablations.md, section 9). A frozen tokenizer maps the same input to the same codes, so the
codes are kept after the first time. The key is a digest of the preprocessed input tensor (pixels
after resizing, the wave after resampling) with its shape and dtype, so a hit is exactly the input
that was encoded, never a near match. Codes are stored in the narrowest integer type that holds
them (a speech clip's few thousand codes in int16 take a few kB) and handed back as int64; least
recently used entries go first past ``max_entries``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import torch


class CodeCache:
    """Least-recently-used ``input tensor -> codes`` store; ``hits`` and ``misses`` count lookups."""

    def __init__(self, max_entries: int):
        if max_entries <= 0:
            raise ValueError(f"a code cache needs room for at least one entry, got max_entries={max_entries}")
        self.max_entries = max_entries
        self.entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def key(x: torch.Tensor) -> bytes:
        x = x.detach().cpu().contiguous()
        digest = hashlib.blake2b(x.numpy().tobytes(), digest_size=20)
        digest.update(repr((tuple(x.shape), str(x.dtype))).encode())
        return digest.digest()

    def lookup(self, x: torch.Tensor, encode: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The codes of ``x``: stored ones if ``x`` was seen, else ``encode()``'s, then stored."""
        k = self.key(x)
        codes = self.entries.get(k)
        if codes is not None:
            self.hits += 1
            self.entries.move_to_end(k)
            return codes.long()
        self.misses += 1
        codes = encode()
        self.entries[k] = codes.to(_narrow(codes))
        if len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return codes


def encode_through(cache: CodeCache | None, x: torch.Tensor, encode: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``encode()``, through ``cache`` when a tokenizer has one."""
    return encode() if cache is None else cache.lookup(x, encode)


def _narrow(codes: torch.Tensor) -> torch.dtype:
    if codes.numel() == 0:
        return torch.int16
    lo, hi = int(codes.min()), int(codes.max())
    for dtype in (torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return torch.int64


def enable_code_caches(toks, max_entries: int) -> None:
    """Give every tokenizer of ``toks`` that encodes through a network (image VQ, audio codec) a cache of
    ``max_entries`` (0: none). A cache of that size already in place is kept, so a second loader (validation)
    shares the training loader's codes."""
    for modality in toks.present():
        tok = getattr(toks, modality)
        if not hasattr(tok, "code_cache"):
            continue
        if max_entries <= 0:
            tok.code_cache = None
        elif tok.code_cache is None or tok.code_cache.max_entries != max_entries:
            tok.code_cache = CodeCache(max_entries)
