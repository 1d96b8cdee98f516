"""Token embeddings that start from what the tokenizers know (``model.init_embeddings: codebook``).

A freshly initialised transformer sees image code 17 and image code 912 as unrelated symbols, even
when the VQ encoder uses both for the same flat black patch: it must learn from data that they are
synonyms before it can read a picture. The tokenizers already hold that knowledge, as vectors:

- image VQ codes: the quantiser's codebook vectors ``[K, D]``;
- audio codes: each residual level's codebook ``[K, D]``;
- action bins: their ordinal position, as a few cosine features (neighbouring bins are close).

`init_code_embeddings` writes, for each such range, ``centred vectors @ P`` into the embedding rows
of its ids, where ``P`` is a fixed random projection ``[D, dim]`` (a Johnson-Lindenstrauss map:
distances between codes are kept up to a common scale), scaled to the model's ``init_std``. Text and
special ids keep their random initialisation. Only the initial values change; the embedding is
trained as usual.
"""

from __future__ import annotations

import math

import torch

ACTION_FEATURES = 16  # cosine features per action bin (fewer for fewer than 8 x 16 bins)


def ordinal_features(bins: int, features: int | None = None) -> torch.Tensor:
    """``[bins, features]``: ``cos(pi * k * x)`` for k = 1..features at x = bin / (bins - 1).

    By default ``min(16, bins // 8)`` features, so the fastest one turns by at most ~pi/8 per bin.
    """
    features = features or max(1, min(ACTION_FEATURES, bins // 8))
    x = torch.arange(bins, dtype=torch.float64) / max(1, bins - 1)
    k = torch.arange(1, features + 1, dtype=torch.float64)
    return torch.cos(math.pi * x[:, None] * k[None, :])


def code_vectors(toks) -> dict[str, torch.Tensor]:
    """Vocabulary range name -> ``[range size, D]`` vectors, for every tokenizer of ``toks`` that has them."""
    out: dict[str, torch.Tensor] = {}
    if getattr(toks, "image", None) is not None:
        (name,) = toks.image.vocab_ranges()
        out[name] = toks.image.codebook.detach().double().cpu()
    if getattr(toks, "audio", None) is not None:
        codebooks = toks.audio.codec.rvq.codebooks.detach().double().cpu()
        for level, name in enumerate(toks.audio.range_names()):
            out[name] = codebooks[level]
    if getattr(toks, "action", None) is not None:
        for name, size in toks.action.vocab_ranges().items():
            out[name] = ordinal_features(size)
    return out


def projected_rows(vectors_KD: torch.Tensor, dim: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """``[K, dim]`` rows: the centred vectors through a random Gaussian projection, scaled to ``std``."""
    centred = vectors_KD - vectors_KD.mean(0, keepdim=True)
    projection = torch.randn(vectors_KD.shape[1], dim, generator=generator, dtype=torch.float64)
    rows = centred @ projection
    scale = rows.std()
    if not torch.isfinite(scale) or scale == 0:  # every vector equal: nothing to say, keep a plain random init
        return torch.randn(vectors_KD.shape[0], dim, generator=generator, dtype=torch.float64) * std
    return rows * (std / scale)


@torch.no_grad()
def init_code_embeddings(embedding: torch.Tensor, vocab, toks, std: float, seed: int = 0) -> list[str]:
    """Overwrite the rows of ``embedding`` ``[V, dim]`` that belong to code ranges; returns the ranges set."""
    generator = torch.Generator().manual_seed(seed)
    done = []
    for name, vectors in code_vectors(toks).items():
        if name not in vocab.range_names:
            continue
        r = vocab.range(name)
        if vectors.shape[0] != r.size:
            raise ValueError(f"the {name!r} tokenizer has {vectors.shape[0]} codes but the vocabulary range holds "
                             f"{r.size}; use the tokenizers the vocabulary was built from")
        rows = projected_rows(vectors, embedding.shape[1], std, generator)
        embedding[r.offset:r.offset + r.size] = rows.to(embedding.dtype)
        done.append(name)
    return done
