"""The LM head's starting bias: the log unigram prior of the training answers (``model.output_prior``).

A shared vocabulary spans every modality: a caption-and-VQA run scores each masked token against
~5,200 text, image, audio and action ids, of which its answers use ~50. With a zero-bias head all of
them start equally likely, and the first hundreds of steps go into pushing the unused ones down: the
gradient of ~5,000 near-equal rows is one large input-independent direction that reaches every
layer, and the picture is never read. Measured (docs/ablations.md, section 15,
``benchmarks/reading_speed.py --pad_vocab 4096``): colour probe 0.11 at step 100 and 0.14 at step 300
without the prior, 0.82 at step 100 with it.

So, before the first step, the head gets a bias ``log((n_v + a) / (n + a * V))`` from the counts ``n_v``
of answer tokens in a few training batches (``a`` = `SMOOTHING`): ids the answers use start at their
frequency, ids they never use start ~15 nats below and give no gradient. The bias trains with the
rest of the model (no weight decay); decoding still restricts ids to the answer's modality.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
import torch.distributed as dist

from omnidiff.data.mixing import build_mixture_loader

SMOOTHING = 0.01  # pseudo-count of every id: an unseen id starts at log(0.01 / n), ~ -14 for n = 10^4 tokens


def answer_log_prior(batches: Iterable[dict], vocab_size: int, smoothing: float = SMOOTHING) -> torch.Tensor:
    """float [V]: log of the smoothed frequency of every id among the batches' answer tokens."""
    if smoothing <= 0:
        raise ValueError(f"smoothing must be > 0 (an unseen id would get log 0), got {smoothing}")
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for batch in batches:
        tokens = batch["tokens"][batch["answer_mask"].bool()]
        if tokens.numel() and int(tokens.max()) >= vocab_size:
            raise ValueError(f"answer id {int(tokens.max())} is outside the vocabulary of {vocab_size}")
        counts += torch.bincount(tokens.flatten().cpu(), minlength=vocab_size).double()
    total = float(counts.sum())
    if total == 0:
        raise ValueError("the batches hold no answer tokens; the output prior needs training answers")
    return torch.log((counts + smoothing) / (total + smoothing * vocab_size)).float()


def mixture_log_prior(data, batches: int, toks, vocab, *, rank: int = 0, world: int = 1,
                      device: str = "cpu") -> torch.Tensor:
    """`answer_log_prior` of ``batches`` batches of the data mixture ``data`` (a `MixtureConfig`), read by a
    loader of its own (another seed, no pixels), so the training stream is untouched; with several ranks,
    the mean of their probabilities, so every rank starts from the same prior. Every task counts from the
    start, also those a curriculum adds later (``start``; its loader has no run length, ``steps=0``): the
    prior is that of the whole mixture."""
    own = dataclasses.replace(data, seed=data.seed + 104_729, image_inputs=False, audio_inputs=False, num_workers=0, steps=0)
    loader = build_mixture_loader(own, toks, vocab, rank=rank, world_size=world)
    log_prior = answer_log_prior((next(loader) for _ in range(batches)), len(vocab))
    if world > 1:
        probs = log_prior.exp().to(device)
        dist.all_reduce(probs)
        log_prior = (probs / world).log().cpu()
    return log_prior


def set_output_prior(lm_head: torch.nn.Linear, log_prior: torch.Tensor) -> None:
    """Put ``log_prior`` [V] into the head's bias (the model must be built with ``head_bias``)."""
    if lm_head.bias is None:
        raise ValueError("the LM head has no bias; build the model with head_bias=True to give it an output prior")
    if log_prior.shape != lm_head.bias.shape:
        raise ValueError(f"output prior has shape {tuple(log_prior.shape)}, the head's bias {tuple(lm_head.bias.shape)}")
    if not bool(torch.isfinite(log_prior).all()) or float(log_prior.max()) > 1e-6:
        raise ValueError("an output prior must be finite log-probabilities (<= 0)")
    with torch.no_grad():
        lm_head.bias.copy_(log_prior.to(lm_head.bias))
