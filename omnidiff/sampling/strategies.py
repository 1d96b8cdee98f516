"""Which masked tokens to commit at a denoising step: pure functions over logits.

Shape legend: B batch rows, N candidate columns (the current block), V vocabulary.

A step first *proposes* a token for every masked column (argmax, or Gumbel-max with a
temperature, computed in float64 so that low-probability tokens are not lost to rounding),
then *scores* each proposal (probability, margin, negative entropy or a random number) and finally
*selects* which proposals to commit: the k best per row (LLaDA's low-confidence remasking and its
variants) or every proposal above a threshold (Fast-dLLM), always at least one per row so the loop
progresses. Randomness comes from one `torch.Generator` per row, so a row's result never depends
on the other rows of the batch.
"""

from __future__ import annotations

import torch

STRATEGIES = ("low_confidence", "margin", "entropy", "random", "threshold", "hybrid")

# The score each strategy ranks by ("threshold" and "hybrid" rank by probability too).
_SCORE_OF = {"low_confidence": "probability", "margin": "margin", "entropy": "neg_entropy", "random": "random",
             "threshold": "probability", "hybrid": "probability"}


def row_noise(generators: list[torch.Generator | None], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Uniform(0, 1) float64 noise [B, *shape], row b drawn from ``generators[b]`` only.

    A row whose generator is None (nothing left to decode) gets 0.5 and draws nothing, so its
    generator's state is the same as if the row were decoded alone.
    """
    rows = [torch.full(shape, 0.5, dtype=torch.float64) if g is None
            else torch.rand(shape, generator=g, dtype=torch.float64, device=g.device).cpu() for g in generators]
    return torch.stack(rows).to(device)


def propose(logits_BNV: torch.Tensor, temperature: float, generators: list[torch.Generator | None] | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(proposed ids [B, N], float64 probabilities [B, N, V] at temperature 1).

    With ``temperature > 0`` the proposal is Gumbel-max over ``logits / temperature``, an exact
    draw from the tempered softmax.
    """
    logits = logits_BNV.double()
    probs = logits.softmax(-1)
    if temperature <= 0:
        return logits.argmax(-1), probs
    if generators is None:
        raise ValueError("sampling with temperature > 0 needs a generator (pass generator=torch.Generator())")
    u = row_noise(generators, tuple(logits.shape[1:]), logits.device).clamp_(1e-300, 1.0)
    gumbel = -torch.log(-torch.log(u))
    return (logits / temperature + gumbel).argmax(-1), probs


def score(strategy: str, ids_BN: torch.Tensor, probs_BNV: torch.Tensor,
          generators: list[torch.Generator | None] | None = None) -> torch.Tensor:
    """How sure the model is of each proposal (higher = commit earlier), float64 [B, N]."""
    kind = _SCORE_OF.get(strategy)
    if kind is None:
        raise ValueError(f"unknown strategy {strategy!r}; allowed: {list(STRATEGIES)}")
    if kind == "probability":
        return probs_BNV.gather(-1, ids_BN.unsqueeze(-1)).squeeze(-1)
    if kind == "margin":
        top2 = probs_BNV.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    if kind == "neg_entropy":
        return (probs_BNV * probs_BNV.clamp_min(1e-300).log()).sum(-1)
    if generators is None:
        raise ValueError("the 'random' strategy needs a generator (pass generator=torch.Generator())")
    return row_noise(generators, (ids_BN.shape[1],), ids_BN.device)


def select_top_k(scores_BN: torch.Tensor, candidates_BN: torch.Tensor, k_B: torch.Tensor) -> torch.Tensor:
    """Commit mask [B, N]: the ``k_B[b]`` highest-scoring candidates of each row.

    Ties break towards the leftmost column (a stable sort), so results are deterministic.
    """
    s = scores_BN.masked_fill(~candidates_BN, float("-inf"))
    order = torch.sort(s, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(s.shape[1], device=s.device).expand_as(order))
    k = torch.minimum(k_B.to(s.device), candidates_BN.sum(-1)).view(-1, 1)
    return (rank < k) & candidates_BN


def select_threshold(scores_BN: torch.Tensor, candidates_BN: torch.Tensor, threshold: float,
                     min_k_B: torch.Tensor | None = None) -> torch.Tensor:
    """Commit every candidate scoring >= ``threshold``, and at least ``min_k_B`` (default 1) per row."""
    above = (scores_BN >= threshold) & candidates_BN
    if min_k_B is None:
        min_k_B = torch.ones(scores_BN.shape[0], dtype=torch.long, device=scores_BN.device)
    return above | select_top_k(scores_BN, candidates_BN, min_k_B)


def remask_low_confidence(probs_BNV: torch.Tensor, tokens_BN: torch.Tensor, committed_before_BN: torch.Tensor,
                          threshold: float) -> torch.Tensor:
    """Secondary remasking (Discrete Diffusion VLA): committed tokens whose probability under the
    current logits fell below ``threshold`` go back to <mask>. Returns the mask [B, N] to reset."""
    p = probs_BNV.gather(-1, tokens_BN.unsqueeze(-1)).squeeze(-1)
    return committed_before_BN & (p < threshold)
