"""The masked-diffusion sampling loop: a canvas of <mask> answer tokens filled block by block.

Shape legend: B batch rows, P prompt columns, A answer columns, N columns of the current block,
V vocabulary.

Each step: logits for the block (from a `Denoiser`, cached or not) -> restricted to the answer
modality's ids -> optional classifier-free guidance -> proposals (argmax or Gumbel-max) -> scores ->
commit some (a schedule count, or a confidence threshold) -> optional secondary remasking. Blocks go
left to right (semi-autoregressive); a row stops early once a finished block holds <eos> followed by
nothing but <eos>, and the rest of its answer is <eos>.

The loop always ends: <mask> is never an allowed answer id, every step commits at least one token,
remasking stops after ``block_len`` steps of a block, and a guard raises RuntimeError past
``2 * block_len`` steps per block (at most ``1 + 2A + A / block_len`` forwards per model branch).

Rows are independent: prompts are left-padded, each row draws its randomness from its own
generator, and a row that has nothing left to do draws nothing, so a sample's tokens never depend on
the rest of the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from omnidiff.models.audio_encoder import AudioInputs
from omnidiff.models.image_encoder import ImageInputs
from omnidiff.sampling.caches import ApproxCached, BlockCached, CausalCached, Denoiser, PrefixCached, Uncached
from omnidiff.sampling.schedules import COMMIT_SCHEDULES, commit_counts
from omnidiff.sampling.strategies import (
    STRATEGIES,
    propose,
    remask_low_confidence,
    score,
    select_threshold,
    select_top_k,
)
from omnidiff.sampling.validation import check_bool, check_int, check_real

CACHES = ("none", "prefix", "block", "causal", "approx_prefix", "approx_dual")
ATTENTIONS = ("prefix", "full", "block", "causal")


@dataclass(frozen=True)
class SamplerConfig:
    """How to decode an answer.

    Args:
        steps: denoising steps over the whole answer (None: one token per step, i.e. the answer
            length); split evenly over the blocks. Ignored by ``threshold`` (which takes as many
            steps as it needs, at most one per token).
        strategy: which proposals to commit, one of STRATEGIES.
        schedule: how many per step for count-based strategies, one of COMMIT_SCHEDULES.
        shift_a: the ``shifted`` schedule's a (< 1 front-loads commits).
        threshold: confidence tau for ``threshold``/``hybrid`` strategies, in (0, 1].
        block_len: semi-autoregressive block length (None: one block); must divide the answer.
        temperature: 0 = argmax; > 0 = Gumbel-max sampling at that temperature.
        guidance_scale: classifier-free guidance s in ``uncond + s (cond - uncond)``; None = off.
        remask_threshold: secondary remasking of committed tokens whose probability drops below it.
        attention: the attention mode the model was trained with: "prefix", "full", "block" or
            "causal" (an AR model: decoded left to right, block_len=1 and shift=True).
        cache: "none", "prefix" (exact, prefix attention), "block" (exact, block attention),
            "causal" (exact, causal attention: the AR decoder's KV cache),
            "approx_prefix" / "approx_dual" (Fast-dLLM, approximate).
        early_stop: stop a row after a block that ends its answer with <eos>.
        shift: logits at column i predict token i + 1 (AR-adapted models).
        answer_specials: special tokens the answer may contain besides its modality's range.
    """

    steps: int | None = None
    strategy: str = "low_confidence"
    schedule: str = "even"
    shift_a: float = 1 / 3
    threshold: float = 0.9
    block_len: int | None = None
    temperature: float = 0.0
    guidance_scale: float | None = None
    remask_threshold: float | None = None
    attention: str = "prefix"
    cache: str = "none"
    early_stop: bool = True
    shift: bool = False
    answer_specials: tuple[str, ...] = ("<eos>",)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; allowed: {list(STRATEGIES)}")
        if self.schedule not in COMMIT_SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; allowed: {list(COMMIT_SCHEDULES)}")
        check_int("steps", self.steps, optional=True)
        check_int("block_len", self.block_len, optional=True)
        check_real("shift_a", self.shift_a, low=0, low_open=True, hint="< 1 front-loads commits (default 1/3)")
        check_real("threshold", self.threshold, low=0, high=1, low_open=True, hint="e.g. 0.9")
        check_real("temperature", self.temperature, low=0, hint="0 decodes by argmax, > 0 samples (e.g. 0.7)")
        check_real("guidance_scale", self.guidance_scale, optional=True, hint="e.g. 2.0, or None for no guidance")
        check_real("remask_threshold", self.remask_threshold, low=0, high=1, low_open=True, high_open=True,
                   optional=True, hint="e.g. 0.1, or None to keep every commit")
        check_bool("early_stop", self.early_stop)
        check_bool("shift", self.shift)
        if isinstance(self.answer_specials, str) or not all(isinstance(t, str) for t in self.answer_specials):
            raise ValueError(f"answer_specials must be a tuple of special-token names such as ('<eos>',), "
                             f"got {self.answer_specials!r}")
        if "<mask>" in self.answer_specials:
            raise ValueError("answer_specials includes '<mask>': <mask> marks a column still to decode and can never "
                             "be an answer token; remove it")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r}; allowed: {list(ATTENTIONS)}")
        if self.cache not in CACHES:
            raise ValueError(f"unknown cache {self.cache!r}; allowed: {list(CACHES)}")
        if (self.attention == "causal") != (self.cache == "causal") and self.cache != "none":
            raise ValueError("cache='causal' is the exact cache of attention='causal' (and the only cache it has); "
                             f"got attention={self.attention!r}, cache={self.cache!r}")
        if self.cache == "prefix" and self.attention != "prefix":
            raise ValueError("the exact prefix cache needs attention='prefix' (with 'full' attention the prefix "
                             "depends on the answer); use cache='approx_prefix' for full attention")
        if (self.cache == "block" and self.attention != "block") or (
                self.attention == "block" and self.cache not in ("none", "block")):
            raise ValueError("block attention decodes with cache='block' or 'none', and cache='block' needs "
                             "attention='block'")
        if self.attention == "block" and self.block_len is None:
            raise ValueError("attention='block' needs block_len (the block size the model was trained with)")
        if self.attention == "causal" and (self.block_len != 1 or not self.shift):
            raise ValueError("attention='causal' decodes an AR model left to right: set block_len=1 and shift=True "
                             f"(got block_len={self.block_len}, shift={self.shift})")
        if self.shift and self.cache not in ("none", "prefix", "causal"):
            raise ValueError(f"shift works with cache 'none', 'prefix' or 'causal', not {self.cache!r}")


@dataclass
class SampleOutput:
    tokens: torch.Tensor  # [B, A] global ids of the answers
    # nfe, tokens_per_forward (answer columns per batch forward), tokens_per_step (answer columns per
    # denoising step a row took part in, averaged over rows: a row's own parallelism), tokens_per_s, wall_time_s
    stats: dict[str, float] = field(default_factory=dict)


def _as_prompts(prompts) -> list[torch.Tensor]:
    if isinstance(prompts, torch.Tensor):
        prompts = [prompts] if prompts.dim() == 1 else list(prompts)
    prompts = [torch.as_tensor(p, dtype=torch.long).reshape(-1) for p in prompts]
    if not prompts:
        raise ValueError("no prompts given")
    for i, p in enumerate(prompts):
        if p.numel() == 0:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token (e.g. <bos>)")
    return prompts


def left_pad(prompts: list[torch.Tensor], pad_id: int, multiple: int = 1, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, P] tokens, [B, P] real-token mask), right-aligned; P is rounded up to ``multiple``."""
    P = max(p.numel() for p in prompts)
    P = -(-P // multiple) * multiple
    tokens = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    pad = torch.zeros(len(prompts), P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        tokens[i, P - p.numel():] = p
        pad[i, P - p.numel():] = True
    return tokens.to(device), pad.to(device)


def row_generators(generator, batch: int) -> list[torch.Generator] | None:
    """One generator per row: given as a list, or seeded from one generator, or None."""
    if generator is None:
        return None
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} prompts; pass one per prompt or one in all")
        return list(generator)
    seeds = torch.randint(0, 2**62, (batch,), generator=generator, device=generator.device).tolist()
    return [torch.Generator(device=generator.device).manual_seed(int(s)) for s in seeds]


class WithPromptInputs:
    """``model`` with the prompt images and/or clips bound to every forward (the rest of its interface passes
    through); the image and audio encoders run once here, not in every denoising step."""

    def __init__(self, model: nn.Module, images: ImageInputs | None, audio: AudioInputs | None):
        self.model, self.inputs = model, {}
        with torch.no_grad():
            if images is not None:
                self.inputs["images"] = model.encode_images(images)
            if audio is not None:
                self.inputs["audio"] = model.encode_audio(audio)

    def __call__(self, tokens, **kwargs):
        return self.model(tokens, **self.inputs, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def make_denoiser(model: nn.Module, prefix_BP, prefix_pad_BP, answer_len: int, config: SamplerConfig) -> Denoiser:
    kwargs = dict(attention=config.attention, block_size=config.block_len, shift=config.shift)
    if config.cache == "prefix":
        return PrefixCached(model, prefix_BP, prefix_pad_BP, answer_len, **kwargs)
    if config.cache == "causal":
        return CausalCached(model, prefix_BP, prefix_pad_BP, answer_len, **kwargs)
    if config.cache == "block":
        return BlockCached(model, prefix_BP, prefix_pad_BP, answer_len, **kwargs)
    if config.cache.startswith("approx_"):
        return ApproxCached(model, prefix_BP, prefix_pad_BP, answer_len, kind=config.cache[len("approx_"):], **kwargs)
    return Uncached(model, prefix_BP, prefix_pad_BP, answer_len, **kwargs)


def _finished_with_eos(block_BN: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Rows whose block holds an <eos> followed only by <eos> (the answer has ended)."""
    is_eos = block_BN == eos_id
    tail_all_eos = is_eos.flip(1).cummin(1).values.flip(1)  # True where every column from here on is <eos>
    first = is_eos.int().argmax(1, keepdim=True)
    return is_eos.any(1) & tail_all_eos.gather(1, first).squeeze(1)


@torch.no_grad()
def generate(model: nn.Module, prompts, *, answer_len: int, vocab, config: SamplerConfig = SamplerConfig(),
             generator: torch.Generator | list[torch.Generator] | None = None, answer_modality: str = "text",
             uncond_prompts=None, answer_layout: torch.Tensor | None = None,
             answer_init: torch.Tensor | None = None, images: ImageInputs | None = None,
             audio: AudioInputs | None = None) -> SampleOutput:
    """Decode ``answer_len`` tokens after each prompt.

    Args:
        model: a `Transformer` or `OmniDiffModel` (``forward(tokens, attention=, positions=, kv_cache=,
            logits_columns=)``, ``new_cache()`` for the cached modes).
        prompts: list of 1-D LongTensors of global ids (or a [B, P] tensor).
        answer_len: answer columns A (answers end in <eos> padding when shorter).
        vocab: the model's `Vocab` (mask/pad/eos ids, the answer modality's id range).
        config: a `SamplerConfig`.
        generator: one generator, or one per prompt, for temperature and random strategies.
        answer_modality: modality (or range name) whose ids the answer may use.
        uncond_prompts: the unconditional prompts for classifier-free guidance (condition replaced
            by <uncond>), one per prompt; required when ``config.guidance_scale`` is set.
        answer_layout: optional [A, V] bool mask of the ids allowed at each answer column (see
            `fixed_layout`); replaces ``answer_modality``. Fixed-size answers (an image's codes, an
            action chunk) then always come out well-formed.
        answer_init: optional [B, A] global ids the answer starts from: ``<mask>`` where it is to be
            decoded, anything else is given and kept (fill-in-the-middle: the suffix after a masked
            span is given, in place, so the span is decoded seeing both sides). Early stopping is
            off then, since it would overwrite given columns with <eos>.
        images, audio: the prompts' pictures (`ImageInputs`) and clips (`AudioInputs`) for a model that
            reads them through its image or audio encoder; each encoder runs once per decode.
    """
    prompts = _as_prompts(prompts)
    B, A = len(prompts), check_int("answer_len", answer_len)
    block_len = config.block_len or A
    if A % block_len:
        raise ValueError(f"block_len {block_len} must divide answer_len {A}; pick a divisor of {A}")
    num_blocks = A // block_len
    steps = config.steps or A
    if steps > A:
        raise ValueError(f"steps ({steps}) larger than the answer length ({A}): a step commits at least one token")
    if steps % num_blocks:
        raise ValueError(f"steps ({steps}) must be a multiple of the number of blocks ({num_blocks})")
    steps_per_block = steps // num_blocks
    guided = config.guidance_scale is not None
    if guided and uncond_prompts is None:
        raise ValueError("guidance_scale is set but no unconditional path was given: pass uncond_prompts "
                         "(the prompts with their condition replaced by <uncond>) or set guidance_scale=None")

    device = next(model.parameters()).device
    multiple = block_len if config.attention == "block" else 1
    for name, inputs in (("image", images), ("audio", audio)):
        if inputs is not None and inputs.rows != B:
            raise ValueError(f"{name} inputs describe {inputs.rows} prompts but {B} were given")
    reader = model
    if images is not None or audio is not None:
        reader = WithPromptInputs(model, None if images is None else images.to(device),
                                  None if audio is None else audio.to(device))
    denoisers = [make_denoiser(reader, *left_pad(prompts, vocab.pad_id, multiple, device), A, config)]
    if guided:
        uncond = _as_prompts(uncond_prompts)
        if len(uncond) != B:
            raise ValueError(f"got {len(uncond)} unconditional prompts for {B} prompts")
        denoisers.append(make_denoiser(model, *left_pad(uncond, vocab.pad_id, multiple, device), A, config))
    if answer_layout is not None:
        if answer_layout.shape != (A, len(vocab)) or answer_layout.dtype != torch.bool:
            raise ValueError(f"answer_layout must be a bool tensor [answer_len, vocab] = [{A}, {len(vocab)}], "
                             f"got {answer_layout.dtype} {tuple(answer_layout.shape)}")
        if not answer_layout.any(1).all():
            raise ValueError("answer_layout allows no id at some answer column")
        allowed_AV = answer_layout.to(device)
    else:
        allowed_AV = vocab.modality_mask(answer_modality, specials=config.answer_specials).to(device).expand(A, -1)
    mask_id, eos_id = vocab.mask_id, vocab.eos_id
    if allowed_AV[:, mask_id].any():
        columns = allowed_AV[:, mask_id].nonzero().flatten().tolist()
        raise ValueError(f"the answer may be <mask> (id {mask_id}) at columns {columns}: <mask> marks a column still "
                         "to decode and can never be committed; clear it from answer_layout / answer_modality")
    gens = row_generators(generator, B)
    max_steps = 2 * block_len  # per block; what a threshold decode with remasking may take (see below)
    max_forwards = len(denoisers) * (1 + num_blocks * (max_steps + 1))  # + the prompt and the end of each block

    start = time.perf_counter()
    answer = torch.full((B, A), mask_id, dtype=torch.long, device=device)
    early_stop = config.early_stop
    if answer_init is not None:
        if answer_init.shape != (B, A) or answer_init.dtype != torch.long:
            raise ValueError(f"answer_init must be a long tensor [batch, answer_len] = [{B}, {A}], got "
                             f"{answer_init.dtype} {tuple(answer_init.shape)}")
        vocab.check_ids(answer_init)
        answer, early_stop = answer_init.to(device).clone(), False
    to_decode = float((answer == mask_id).sum(1).float().mean())  # answer columns per row to fill (A without init)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    row_steps = torch.zeros(B, dtype=torch.long, device=device)  # denoising steps each row took part in
    for d in denoisers:
        d.begin()
    for lo in range(0, A, block_len):
        hi = lo + block_len
        if done.all():
            break
        counts = commit_counts(block_len, steps_per_block, config.schedule, config.shift_a)
        ids_of, allowed_block = _block_vocabulary(allowed_AV[lo:hi])
        disallowed_block = ~allowed_block  # once per block, not per step
        to_local = None if ids_of is None else _local_index(ids_of, len(vocab))
        committed_before = torch.zeros(B, block_len, dtype=torch.bool, device=device)
        extra = torch.zeros(B, dtype=torch.long, device=device)
        step = 0
        while True:
            masked = (answer[:, lo:hi] == mask_id) & ~done.view(-1, 1)
            if not masked.any():
                break
            _check_budget(step, max_steps, sum(d.nfe for d in denoisers), max_forwards, lo, hi)
            logits = _block_logits(denoisers, answer, lo, hi, config.guidance_scale)
            if ids_of is not None:  # only the ids this block may use (an image's codes: ~1/5 of the vocabulary)
                logits = logits.index_select(-1, ids_of)
            logits = logits.masked_fill(disallowed_block, float("-inf"))
            active_B = masked.any(1)
            row_steps += active_B
            active = active_B.tolist()
            row_gens = None if gens is None else [g if a else None for g, a in zip(gens, active, strict=True)]
            ids, probs = propose(logits, config.temperature, row_gens)  # ids index the block's vocabulary
            _check_proposals(ids, probs, masked, allowed_block, lo)
            scores = score(config.strategy, ids, probs, row_gens)
            if ids_of is not None:
                ids = ids_of[ids]
            last = config.strategy != "threshold" and step >= steps_per_block - 1
            if last:
                commit = masked
            elif config.strategy == "threshold":
                commit = select_threshold(scores, masked, config.threshold)
            else:
                k = counts[step].to(device) + extra
                if config.strategy == "hybrid":
                    commit = select_threshold(scores, masked, config.threshold, min_k_B=k)
                else:
                    commit = select_top_k(scores, masked, k)
            block = answer[:, lo:hi]
            # Remasking stops after block_len steps, so a threshold decode (which has no last step)
            # cannot undo its commits forever: it then fills the block within block_len more steps.
            if config.remask_threshold is not None and not last and step < block_len:
                local = block if to_local is None else to_local[block]
                reset = remask_low_confidence(probs, local, committed_before, config.remask_threshold)
            else:
                reset = torch.zeros_like(commit)
            block = torch.where(commit, ids, block).masked_fill(reset, mask_id)
            answer[:, lo:hi] = block
            committed_before = (committed_before | commit) & ~reset
            extra = reset.sum(1)
            step += 1
        for d in denoisers:
            d.end_block(answer, lo, hi)
        if early_stop:
            ended = _finished_with_eos(answer[:, lo:hi], eos_id) & ~done
            answer[ended, hi:] = eos_id
            done |= ended
    wall = time.perf_counter() - start
    nfe = sum(d.nfe for d in denoisers)
    stats = {"nfe": nfe, "tokens_per_forward": to_decode / max(nfe, 1), "wall_time_s": wall,
             "tokens_per_step": to_decode / max(float(row_steps.float().mean()), 1.0),
             "tokens_per_s": B * to_decode / max(wall, 1e-9)}
    return SampleOutput(tokens=answer, stats=stats)


def _block_vocabulary(allowed_NV: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The ids a block may commit (``None``: the whole vocabulary) and its allowed mask over them.

    Proposals, probabilities and scores are computed over these ids only: the softmax is the same
    (every other id has logit -inf), and an image block's sampling touches ~1,000 ids instead of the
    whole vocabulary (the float64 softmax and Gumbel noise were most of a guided image decode's time).
    """
    used_V = allowed_NV.any(0)
    if bool(used_V.all()):
        return None, allowed_NV
    ids_of = used_V.nonzero().flatten()
    return ids_of, allowed_NV.index_select(1, ids_of)


def _local_index(ids_of: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[V] map from a global id to its index in ``ids_of`` (ids outside it, e.g. <mask>, map to 0)."""
    index_V = torch.zeros(vocab_size, dtype=torch.long, device=ids_of.device)
    index_V[ids_of] = torch.arange(len(ids_of), device=ids_of.device)
    return index_V


def _check_budget(step: int, max_steps: int, forwards: int, max_forwards: int, lo: int, hi: int) -> None:
    """Internal guard: no decode may take more steps per block or forwards than the strategies allow."""
    if step >= max_steps or forwards >= max_forwards:
        raise RuntimeError(f"decoding answer columns {lo}..{hi - 1} did not finish within {max_steps} steps per block / "
                           f"{max_forwards} forwards (now {step} steps, {forwards} forwards): a sampler bug; "
                           "please report it with the SamplerConfig used")


def _check_proposals(ids_BN, probs_BNV, masked_BN, allowed_NV, lo: int) -> None:
    """Every masked column must propose an allowed id from a real distribution (NaN probabilities
    come from NaN or +inf logits, or from a column where every allowed id has logit -inf)."""
    allowed = allowed_NV.gather(1, ids_BN.T).T
    # A NaN anywhere in a column's logits (or +inf, or every allowed id at -inf) makes its whole
    # softmax NaN, so the proposal's own probability tells: no pass over the vocabulary is needed.
    proposed = probs_BNV.gather(-1, ids_BN.unsqueeze(-1)).squeeze(-1)
    bad = masked_BN & (~allowed | proposed.isnan())
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise RuntimeError(f"row {row}, answer column {lo + col}: the logits are NaN or infinite, or give every allowed "
                           "id probability 0, so nothing valid can be committed; check the model's weights and "
                           "guidance_scale (a huge scale overflows float32)")


def _block_logits(denoisers: list[Denoiser], answer_BA, lo: int, hi: int, guidance_scale: float | None) -> torch.Tensor:
    cond = denoisers[0].logits(answer_BA, lo, hi).float()
    if guidance_scale is None:
        return cond
    uncond = denoisers[1].logits(answer_BA, lo, hi).float()
    return uncond + guidance_scale * (cond - uncond)


def _range_masks(vocab, ranges: str | list[str] | tuple[str, ...]) -> list[torch.Tensor]:
    names = [ranges] if isinstance(ranges, str) else list(ranges)
    if not names:
        raise ValueError("no modality or range names given for the layout")
    return [vocab.modality_mask(n, specials=()) for n in names]


def fixed_layout(vocab, ranges: str | list[str] | tuple[str, ...], num_codes: int, close: str | None,
                 answer_len: int) -> torch.Tensor:
    """[answer_len, V] mask for a fixed-size answer as the tasks lay it out: ``num_codes`` codes, then
    the closing special ``close`` (e.g. ``"</image>"``), then <eos> to the end.

    ``ranges`` is a modality or range name, or a list of range names used in turn (column i takes
    ``ranges[i % len(ranges)]``: the interleaved levels of an audio codec).
    """
    used = num_codes + (close is not None)
    if used > answer_len:
        raise ValueError(f"answer_len {answer_len} is too short for {num_codes} codes"
                         f"{' and ' + close if close else ''}; use at least {used}")
    masks = _range_masks(vocab, ranges)
    layout = torch.zeros(answer_len, len(vocab), dtype=torch.bool)
    for i in range(num_codes):
        layout[i] = masks[i % len(masks)]
    if close is not None:
        layout[num_codes, vocab.special(close)] = True
    layout[used:, vocab.eos_id] = True
    return layout


def cyclic_layout(vocab, ranges: str | list[str] | tuple[str, ...], answer_len: int,
                  specials: tuple[str, ...] = ("<eos>",)) -> torch.Tensor:
    """[answer_len, V] mask for a variable-length answer: column i allows ``ranges[i % len(ranges)]``
    or any of ``specials`` (e.g. ``("</audio>", "<eos>")`` for speech of unknown duration)."""
    masks = _range_masks(vocab, ranges)
    extra = torch.zeros(len(vocab), dtype=torch.bool)
    for name in specials:
        extra[vocab.special(name)] = True
    return torch.stack([masks[i % len(masks)] | extra for i in range(answer_len)])
