"""Which output ids the training softmax spans (``objective.softmax``).

``full`` scores every masked token against the whole vocabulary. ``batch`` scores it against only
the ids that occur among the batch's answer tokens (in-batch candidates, as in sampled-softmax
training): a caption batch competes over its ~20 caption words instead of ~5,000 text, image,
audio and action ids. Measured (docs/ablations.md, section 14): with the same 38 ids in use, 4,096
more that never occur stop the model from learning to read the picture (colour probe 11% against
71% at 100 steps), and in-batch candidates bring it back (71%). Ids outside the candidates get no
gradient from that batch. The logged ELBO still uses the full softmax, so it stays a bound on the
likelihood under the whole vocabulary; decoding restricts to the answer's modality as before.

Shape legend: N scored tokens, V vocabulary, B batch, L tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SOFTMAX_MODES = ("full", "batch")


def candidate_ids(x_0_BL: torch.Tensor, answer_BL: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """bool [V]: True on every id that occurs among the batch's answer tokens."""
    keep = torch.zeros(vocab_size, dtype=torch.bool, device=x_0_BL.device)
    keep[x_0_BL[answer_BL.bool()].unique()] = True
    return keep


def training_cross_entropy(logits_NV: torch.Tensor, targets_N: torch.Tensor, mode: str,
                           keep_V: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token cross-entropy [N] over the whole vocabulary (``full``) or over ``keep_V`` only (``batch``)."""
    if mode == "full":
        return F.cross_entropy(logits_NV.float(), targets_N, reduction="none")
    if mode != "batch":
        raise ValueError(f"unknown objective.softmax {mode!r}; allowed: {list(SOFTMAX_MODES)}")
    if keep_V is None or not bool(keep_V[targets_N].all()):
        raise ValueError("in-batch softmax needs candidates that hold every target (candidate_ids of the batch)")
    return F.cross_entropy(logits_NV.float().masked_fill(~keep_V, float("-inf")), targets_N, reduction="none")
