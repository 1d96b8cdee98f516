"""Forward masking of answer tokens, complementary copies, block draws and attention annealing.

Only answer positions (``answer_mask``) are ever replaced by ``<mask>``: the prefix and the pads
never are. Position j of sample b is masked independently with probability ``rate[b, j]``.

- Complementary masking (LaViDa): copy A masks each answer token with probability p, copy B masks
  exactly the answer tokens A left clean, so B is a draw at rate 1 - p and every answer position is
  masked in exactly one copy.
- Block diffusion (BD3-LM): column j belongs to block floor(j / block_size); each (sample, block)
  gets its own time, and the model input is ``x_t ⊕ x_0`` (2L tokens) under ``block`` attention.
- Attention annealing (DiffuLLaMA): the mask is ``causal OR reveal`` with ``reveal`` drawn per
  (query, key) pair with probability r = min(1, step / anneal_steps), so attention moves from causal
  (r = 0) to fully bidirectional (r = 1); the pattern goes to the model as
  ``AttentionSpec("full", allowed=pattern)``.

Shape legend: B batch, L tokens, K blocks, V vocabulary.
"""

from __future__ import annotations

import torch


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def mask_tokens(
    tokens_BL: torch.Tensor, answer_BL: torch.Tensor, rate: torch.Tensor, mask_id: int,
    *, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace answer tokens by ``mask_id`` with probability ``rate``.

    Args:
        tokens_BL: clean tokens x_0.
        answer_BL: bool, True on answer positions (the only ones that may be masked).
        rate: mask probability per sample [B] or per position [B, L].
        mask_id: the `<mask>` id (``vocab.mask_id``).
    Returns:
        (x_t, masked_BL) with masked_BL True where a token was replaced.
    """
    rate_BL = rate.view(-1, 1) if rate.dim() == 1 else rate
    u = _uniform(tuple(tokens_BL.shape), generator, tokens_BL.device)
    masked = (u < rate_BL) & answer_BL.bool()
    return torch.where(masked, torch.full_like(tokens_BL, mask_id), tokens_BL), masked


def complementary_copies(
    tokens_BL: torch.Tensor, answer_BL: torch.Tensor, rate_B: torch.Tensor, mask_id: int,
    *, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two noised copies per sample whose masked sets are complements over the answer.

    Returns:
        (x_t [2B, L], masked [2B, L], rate [2B]): rows 0..B-1 are copy A (rate p), rows B..2B-1
        copy B (rate 1 - p); row b and row B + b come from sample b.
    """
    x_a, masked_a = mask_tokens(tokens_BL, answer_BL, rate_B, mask_id, generator=generator)
    masked_b = answer_BL.bool() & ~masked_a
    x_b = torch.where(masked_b, torch.full_like(tokens_BL, mask_id), tokens_BL)
    return torch.cat([x_a, x_b]), torch.cat([masked_a, masked_b]), torch.cat([rate_B, 1.0 - rate_B])


# --------------------------------------------------------------------------------------- blocks
def num_blocks(length: int, block_size: int) -> int:
    if block_size <= 0 or length % block_size:
        raise ValueError(f"block size {block_size} must be positive and divide the sequence length {length}; "
                         f"pad the batch to a multiple of the block size")
    return length // block_size


def per_block_values(values_BK: torch.Tensor, length: int, block_size: int) -> torch.Tensor:
    """Broadcast one value per (sample, block) to every column: out[b, j] = values[b, j // block_size]."""
    if values_BK.shape[1] != num_blocks(length, block_size):
        raise ValueError(f"expected {length // block_size} block values, got {values_BK.shape[1]}")
    return values_BK.repeat_interleave(block_size, dim=1)


def block_input(x_t_BL: torch.Tensor, x_0_BL: torch.Tensor) -> torch.Tensor:
    """The ``x_t ⊕ x_0`` input [B, 2L] of ``block`` attention; logits[:, :L] are the x_t predictions."""
    if x_t_BL.shape != x_0_BL.shape:
        raise ValueError(f"x_t and x_0 must have the same shape, got {tuple(x_t_BL.shape)} and {tuple(x_0_BL.shape)}")
    return torch.cat([x_t_BL, x_0_BL], dim=1)


# --------------------------------------------------------------------------------------- annealing
def reveal_probability(step: int, anneal_steps: int) -> float:
    """Probability that a causally hidden (query, key) pair is visible at ``step``: 0 -> 1 over N steps."""
    if anneal_steps <= 0:
        raise ValueError(f"anneal_steps must be positive, got {anneal_steps}")
    return min(1.0, max(0.0, step / anneal_steps))


def annealed_attention_mask(
    padding_BL: torch.Tensor, reveal_prob: float, *, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Boolean pattern [B, L, L] (True = may attend): causal OR a Bernoulli(reveal_prob) reveal.

    Pass it as ``AttentionSpec("full", padding_mask=pad, allowed=...)``; the mask builder adds
    the padding and the always-visible diagonal.
    """
    if not 0.0 <= reveal_prob <= 1.0:
        raise ValueError(f"reveal probability must be in [0, 1], got {reveal_prob}")
    B, L = padding_BL.shape
    device = padding_BL.device
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
    reveal = _uniform((B, L, L), generator, device) < reveal_prob
    return causal | reveal
