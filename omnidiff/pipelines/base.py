"""What every task pipeline shares: a trained model, its tokenizers, and how it was trained to decode.

A model folder written by ``train.py`` (``<run>/model``) holds the weights and vocabulary
(`OmniDiffModel`), the tokenizers (``tokenizers/``) and ``omnidiff_generation.json``: the attention
mode, block size and shift the model was trained with, and each task's answer length. Pipelines
read these so that decoding matches training without the user repeating them; any of it can be
overridden by passing a `SamplerConfig` or an answer length.

    pipe = CaptioningPipeline.from_pretrained("runs/demo/model")
    pipe([image])  # -> ["a red circle above a blue square"]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from omnidiff.data.formatting import audio_wave, image_pixels
from omnidiff.files import read_json
from omnidiff.models.audio_encoder import AudioInputs, audio_inputs
from omnidiff.models.image_encoder import ImageInputs, image_inputs
from omnidiff.sampling import SamplerConfig, generate
from omnidiff.tasks import get_task
from omnidiff.tokenization.registry import TokenizerSet

GENERATION_FILE = "omnidiff_generation.json"


def generation_settings(objective, tasks) -> dict:
    """What `export_pretrained` stores next to the weights: how the model was trained to decode."""
    from omnidiff.data.mixing import configured_task

    per_task: dict[str, dict] = {}
    for t in tasks:  # a task trained on several datasets keeps its longest answer (nothing is cut)
        entry = per_task.setdefault(t.task, {"answer_len": int(t.answer_len)})
        entry["answer_len"] = max(entry["answer_len"], int(t.answer_len))
        entry.update(dict(t.options))
        from_data = getattr(configured_task(t), "settings_from_data", None)  # e.g. TTS's speaking rate
        if from_data is not None and t.path:
            entry.update(from_data(t.path))
    if getattr(objective, "kind", "diffusion") == "autoregressive":  # the AR twin decodes left to right
        attention = "causal"
    else:  # a causal diffusion model is annealed towards full attention (objectives.py)
        attention = objective.attention if objective.attention in ("prefix", "full", "block") else "full"
    return {"attention": attention,
            "block_size": objective.block_size, "shift": bool(objective.shift), "tasks": per_task}


def trained_task(name: str, settings: dict):
    """Task ``name`` with the options it was trained with (``settings["tasks"]``, beside its answer
    length), so prompts and answers are laid out as in training (e.g. ``audio_levels``)."""
    from omnidiff.data.mixing import task_with_options

    stored = settings.get("tasks", {}).get(get_task(name).name, {})
    return task_with_options(name, {k: v for k, v in stored.items() if k != "answer_len"})


class DiffusionPipeline:
    """Base class: holds ``model`` (a `Transformer`), ``tokenizers`` (a `TokenizerSet`) and ``vocab``.

    Subclasses set ``task`` (a key of `omnidiff.tasks.TASKS`) and implement ``__call__``.
    """

    task: str = ""

    def __init__(self, model, tokenizers: TokenizerSet, vocab, *, settings: dict | None = None,
                 sampler: SamplerConfig | None = None):
        self.model = model.eval()
        self.tokenizers = tokenizers
        self.vocab = vocab
        self.settings = settings or {"attention": "prefix", "block_size": None, "shift": False, "tasks": {}}
        self.task_impl = trained_task(self.task, self.settings)
        missing = [m for m in self.task_impl.modalities if getattr(tokenizers, m, None) is None]
        if missing:
            raise ValueError(f"the {self.task!r} pipeline needs tokenizers for {missing}; the model folder has "
                             f"{tokenizers.present()}")
        for m in self.task_impl.modalities:
            tok = getattr(tokenizers, m)
            for name, size in tok.vocab_ranges().items():
                if name not in vocab.range_names or vocab.range(name).size != size:
                    raise ValueError(f"the {m} tokenizer's range {name!r} ({size} ids) does not match the model's "
                                     f"vocabulary {vocab.range_names}: use the tokenizers the model was trained with")
        self.sampler = sampler or self.default_sampler()

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, model_dir: str | Path, tokenizers: str | Path | TokenizerSet | None = None, *,
                        device: str = "cpu",
                        dtype: torch.dtype | None = None, sampler: SamplerConfig | None = None, **kwargs):
        """Load a model folder written by ``train.py``; tokenizers (a folder or a loaded `TokenizerSet`)
        default to ``model_dir/tokenizers``, then ``model_dir/../tokenizers``."""
        from omnidiff.models.hf import OmniDiffModel

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise FileNotFoundError(f"{model_dir} is not a model folder (no config.json); train.py exports one "
                                    "to <run>/model")
        if isinstance(tokenizers, TokenizerSet):
            toks = tokenizers
        elif tokenizers is not None:
            toks = TokenizerSet.load_folder(tokenizers)
        else:
            found = [d for d in (model_dir / "tokenizers", model_dir.parent / "tokenizers")
                     if (d / "tokenizers.json").exists()]
            if not found:
                raise FileNotFoundError(f"no tokenizers for {model_dir}: neither {model_dir / 'tokenizers'} nor "
                                        f"{model_dir.parent / 'tokenizers'} holds a tokenizers.json; pass the "
                                        "tokenizer folder the model was trained with")
            toks = TokenizerSet.load_folder(found[0])
        wrapper = OmniDiffModel.from_pretrained(model_dir)
        if wrapper.vocab is None:
            raise ValueError(f"{model_dir} carries no vocabulary (omnidiff_vocab.json); re-export it with train.py")
        model = wrapper.model.to(device=device, dtype=dtype) if dtype else wrapper.model.to(device)
        settings_file = model_dir / GENERATION_FILE
        settings = read_json(settings_file, "generation settings") if settings_file.exists() else None
        if settings is not None and not isinstance(settings, dict):
            raise ValueError(f"{settings_file} must hold a JSON object; export the model again")
        return cls(model, toks, wrapper.vocab, settings=settings, sampler=sampler, **kwargs)

    # ----------------------------------------------------------------------------- decoding
    def default_sampler(self) -> SamplerConfig:
        """Fast, exact decoding for the attention the model was trained with.

        Under prefix/full attention answers are decoded in semi-autoregressive blocks of 8 (dropped
        when 8 does not divide the answer): with one block, an undertrained model commits the
        confident <eos> padding first and talks itself into an empty answer (measured on the demo
        model: every caption empty with one block, "a diamond" with blocks of 8).
        """
        attention = self.settings.get("attention", "prefix")
        if attention == "causal":  # the AR twin: one token per forward against its exact KV cache
            return SamplerConfig(attention="causal", cache="causal", block_len=1, shift=True)
        block = self.settings.get("block_size") if attention == "block" else 8
        cache = {"prefix": "prefix", "block": "block"}.get(attention, "none")
        return SamplerConfig(strategy="threshold", threshold=0.9, attention=attention, cache=cache,
                             block_len=block, shift=bool(self.settings.get("shift", False)))

    def answer_len(self, requested: int | None, fallback: int) -> int:
        if requested is not None:
            if requested <= 0:
                raise ValueError(f"answer_len must be positive, got {requested}")
            return requested
        return int(self.settings.get("tasks", {}).get(self.task, {}).get("answer_len", fallback))

    def check_length(self, prompt_len: int, answer_len: int, config: SamplerConfig) -> None:
        """Refuse a prompt and answer that together exceed the positions the model has."""
        limit = getattr(getattr(self.model, "cfg", None), "max_positions", None)
        if limit is None:  # not one of our Transformers: the model checks positions itself
            return
        multiple = config.block_len if config.attention == "block" and config.block_len else 1
        columns = -(-prompt_len // multiple) * multiple + answer_len  # the sampler pads prompts to whole blocks
        if columns > limit:
            raise ValueError(f"the input is {prompt_len} tokens and the answer {answer_len}, but the model reads at "
                             f"most {limit} positions; shorten the input (or ask for a shorter answer)")

    def fit_block(self, answer_len: int, config: SamplerConfig) -> SamplerConfig:
        """Drop a block length that does not divide this answer (prefix attention only needs none)."""
        if config.block_len and answer_len % config.block_len and config.attention != "block":
            return dataclasses.replace(config, block_len=None)
        return config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def decode(self, prompts: list[torch.Tensor], answer_len: int, *, seed: int = 0, config: SamplerConfig | None = None,
               answer_modality: str = "text", answer_layout: torch.Tensor | None = None,
               guidance_scale: float | None = None, temperature: float | None = None,
               uncond_prompt: torch.Tensor | None = None,
               answer_init: torch.Tensor | None = None, images: list | None = None,
               audio: list | None = None) -> tuple[torch.Tensor, dict]:
        """Run the sampler on prompts (global ids) -> ([B, answer_len] answers, stats).

        ``images``: the PIL picture in each prompt (None for a prompt without one); a model with an image
        encoder reads them as pixels too, others ignore them. ``audio``: the clip in each prompt
        (``{"array", "sample_rate"}``, None for a prompt without one), heard by a model with an audio encoder.
        ``guidance_scale``/``temperature`` override the config's; with guidance on, ``uncond_prompt``
        (the task's prefix with its condition replaced by <uncond>) is the unconditional branch of every row.
        ``answer_init`` ([B, answer_len], <mask> where to decode) gives answer columns in advance.
        """
        config = config or self.sampler
        changes = {k: v for k, v in (("guidance_scale", guidance_scale), ("temperature", temperature)) if v is not None}
        config = self.fit_block(answer_len, dataclasses.replace(config, **changes) if changes else config)
        self.check_length(max(p.numel() for p in prompts), answer_len, config)
        uncond_prompts = None
        if config.guidance_scale is not None and uncond_prompt is not None:
            uncond_prompts = [uncond_prompt] * len(prompts)
        gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
        out = generate(self.model, [p.to(self.device) for p in prompts], answer_len=answer_len, vocab=self.vocab,
                       config=config, generator=gens, answer_modality=answer_modality, answer_layout=answer_layout,
                       uncond_prompts=None if uncond_prompts is None else [p.to(self.device) for p in uncond_prompts],
                       answer_init=answer_init, images=self.image_inputs(prompts, images),
                       audio=self.audio_inputs(prompts, audio))
        self.last_stats = out.stats
        return out.tokens.cpu(), out.stats

    def image_inputs(self, prompts: list[torch.Tensor], images: list | None) -> ImageInputs | None:
        """The prompts' pictures as `ImageInputs` when the model reads pixels (else None)."""
        cfg = getattr(self.model, "cfg", None)
        if images is None or getattr(cfg, "image_encoder", None) is None:
            return None
        pixels = [None if im is None else image_pixels(self.tokenizers, im) for im in images]
        return image_inputs([p.cpu() for p in prompts], pixels, self.vocab)

    def audio_inputs(self, prompts: list[torch.Tensor], clips: list | None) -> AudioInputs | None:
        """The prompts' clips as `AudioInputs` when the model hears waveforms (else None)."""
        cfg = getattr(self.model, "cfg", None)
        if clips is None or getattr(cfg, "audio_encoder", None) is None:
            return None
        waves = [None if clip is None else audio_wave(self.tokenizers, clip) for clip in clips]
        return audio_inputs([p.cpu() for p in prompts], waves, self.vocab)

    def text_of(self, answer: torch.Tensor) -> str:
        return self.tokenizers.text.decode_global(self.vocab, answer).strip()
