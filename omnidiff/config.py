"""Run configuration: dataclass defaults < YAML file < dotted command-line overrides.

``load_config("configs/text.yaml", ["optim.lr=3e-4", "data.batch_size=16"])`` returns a `RunConfig`.
Every key is checked against the dataclasses: an unknown key is an error that names it and
suggests the nearest valid one. Values given on the command line are parsed as YAML scalars
(``3e-4`` -> float, ``true`` -> bool, ``[a, b]`` -> list). The resolved config is written into the
run folder (``config.yaml``) so a run describes itself. Each component reads only its own section.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from omnidiff.data.mixing import MixtureConfig, TaskDataConfig
from omnidiff.diffusion.objectives import DiffusionLossConfig


@dataclass
class ModelConfig:
    preset: str = "debug"  # a name in omnidiff.models.presets.PRESETS
    overrides: dict = field(default_factory=dict)  # TransformerConfig fields to change, e.g. {num_layers: 4}
    # A local Llama/Qwen2 folder (save_pretrained) to start from, e.g. runs/pretrained/smollm2-135m:
    # its architecture and weights replace the preset's (omnidiff.models.from_causal_lm.init_model).
    init_from: str = ""
    # "codebook": image/audio code and action bin embeddings start from the tokenizers' own vectors
    # (omnidiff.models.code_embeddings); "random": all rows random.
    init_embeddings: str = "random"
    # With init_from: "pretrained" starts from its weights; "random" keeps only its architecture (and the
    # vocabulary placement) with fresh weights: the from-scratch twin of an adaptation run.
    init_weights: str = "pretrained"
    # Prompt images also read as pixels by a timm backbone trained with the model, e.g.
    # {backbone: resnet10t, out_index: 2} (omnidiff.models.image_encoder); {}: codes only.
    image_encoder: dict = field(default_factory=dict)
    # The backbone's starting weights: a folder or backbone.safetensors written by dense scene-label
    # pretraining (python -m omnidiff.training.dense_pretrain) or by CLIP pretraining on image-caption
    # pairs (python -m omnidiff.training.clip); "": random.
    image_encoder_init: str = ""
    # Prompt audio (speech recognition) also heard as a waveform by a speech encoder, e.g.
    # {freeze_backbone: true} (omnidiff.models.audio_encoder); {}: codes only.
    audio_encoder: dict = field(default_factory=dict)
    # The speech encoder's starting weights: a folder or backbone.safetensors written by CTC pretraining on the
    # speech transcripts (python -m omnidiff.training.ctc_pretrain); "": random.
    audio_encoder_init: str = ""
    # A model folder train.py exported (e.g. runs/results/model): its architecture and weights start the
    # run (fine-tuning, few-step distillation); the tokenizers must give the same vocabulary.
    init_run: str = ""
    # N > 0: the LM head gets a bias that starts at the log unigram prior of the answer tokens of N
    # training batches (omnidiff.training.output_prior), so the thousands of ids a run's answers never use
    # start unlikely instead of taking the first steps to push down; 0: no head bias.
    output_prior: int = 0

    def __post_init__(self):
        if self.init_embeddings not in ("random", "codebook"):
            raise ValueError(f"model.init_embeddings must be 'random' or 'codebook', got {self.init_embeddings!r}")
        if self.init_weights not in ("pretrained", "random"):
            raise ValueError(f"model.init_weights must be 'pretrained' or 'random', got {self.init_weights!r}")
        if self.init_run and (self.init_from or self.image_encoder or self.audio_encoder or self.overrides):
            raise ValueError("model.init_run takes the architecture of the model it loads; drop model.init_from, "
                             "model.image_encoder, model.audio_encoder and model.overrides")
        if not isinstance(self.output_prior, int) or self.output_prior < 0:
            raise ValueError(f"model.output_prior is a number of batches (0: off), got {self.output_prior!r}")
        if self.output_prior and (self.init_from or self.init_run):
            raise ValueError("model.output_prior gives a fresh model's LM head a bias; a model loaded with "
                             "model.init_from or model.init_run keeps its own head: drop model.output_prior")
        if self.image_encoder_init and not self.image_encoder:
            raise ValueError("model.image_encoder_init gives the image encoder's backbone weights, but there is no "
                             "model.image_encoder; set one (e.g. {backbone: resnet10t, out_index: 2})")
        if self.image_encoder.get("freeze_backbone") and not self.image_encoder_init:
            raise ValueError("model.image_encoder.freeze_backbone keeps a pretrained backbone fixed, but "
                             "model.image_encoder_init names none (a frozen random backbone reads nothing); make one "
                             "with `python -m omnidiff.training.dense_pretrain` and set model.image_encoder_init")
        if self.audio_encoder_init and not self.audio_encoder:
            raise ValueError("model.audio_encoder_init gives the audio encoder's backbone weights, but there is no "
                             "model.audio_encoder; set one (e.g. {freeze_backbone: true})")
        if self.audio_encoder.get("freeze_backbone") and not self.audio_encoder_init:
            raise ValueError("model.audio_encoder.freeze_backbone keeps a pretrained backbone fixed, but "
                             "model.audio_encoder_init names none (a frozen random backbone hears nothing); make one "
                             "with `python -m omnidiff.training.ctc_pretrain` and set model.audio_encoder_init")
        if (self.image_encoder or self.audio_encoder) and self.init_from:
            raise ValueError("model.image_encoder and model.audio_encoder cannot be combined with model.init_from yet "
                             "(a pretrained causal LM has no encoder to load); drop one of them")


@dataclass
class OptimConfig:
    name: str = "adamw"  # "adamw" | "muon" (Muon for matrices, AdamW for the rest; omnidiff/training/optimizer.py)
    lr: float = 1e-3  # AdamW's (with muon: the embeddings', output head's, norms' and biases')
    muon_lr: float = 0.02  # Muon's, in spectral norm per step (optim.name=muon only)
    muon_momentum: float = 0.95
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 50
    decay: str = "cosine"  # "cosine" | "wsd" (warm-up, stable, then linear decay over decay_fraction)
    decay_fraction: float = 0.2
    grad_clip: float = 1.0  # 0: no clipping
    fused: bool = True  # AdamW's fused kernel (CPU and CUDA): one pass per parameter instead of ~8 ops each

    def __post_init__(self):
        if not isinstance(self.fused, bool):
            raise ValueError(f"optim.fused must be true or false, got {self.fused!r}")
        if self.name not in ("adamw", "muon"):
            raise ValueError(f"optim.name must be 'adamw' or 'muon', got {self.name!r}")
        check_numbers("optim", self, lr=(0, None, "open"), muon_lr=(0, None, "open"), muon_momentum=(0, 1),
                      min_lr_ratio=(0, 1), weight_decay=(0, None), warmup_steps=(0, None),
                      decay_fraction=(0, 1, "open"), grad_clip=(0, None))
        if self.decay not in ("cosine", "wsd"):
            raise ValueError(f"optim.decay must be 'cosine' or 'wsd', got {self.decay!r}")
        betas = tuple(self.betas) if isinstance(self.betas, list | tuple) else ()
        if len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.95]; got {self.betas!r}")


@dataclass
class DistributedConfig:
    zero_stage: int = 0
    dtype: str = "fp32"  # "fp32" | "bf16"
    grad_accum: int = 1
    offload_optimizer: bool = False
    backend: str | None = None  # None: gloo on CPU, nccl on GPU

    def __post_init__(self):
        check_numbers("distributed", self, zero_stage=(0, 3), grad_accum=(1, None))
        if self.dtype not in ("fp32", "bf16"):
            raise ValueError(f"distributed.dtype must be 'fp32' or 'bf16', got {self.dtype!r}")


@dataclass
class TrainConfig:
    steps: int = 100
    seed: int = 0
    device: str = "cpu"
    out: str = "runs/debug"
    log_every: int = 10
    eval_every: int = 50
    eval_batches: int = 4
    save_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2  # step checkpoints kept on disk; each save deletes older ones beyond this (0: keep all)
    stop_at: int = 0  # > 0: checkpoint and stop at this step (time-boxed jobs); --resume continues the schedule
    max_minutes: float = 0.0  # > 0: after this many minutes of steps, checkpoint, export and stop; --resume continues
    sample_every: int = 0  # 0: no sample generation during training
    sample_prompts: int = 2
    task_eval_every: int = 0  # > 0: every N steps, score each task on held-out samples (learning curves)
    task_eval_num: int = 16  # held-out samples per stream for those scores
    tensorboard: bool = True
    export: bool = True  # write an OmniDiffModel folder (from_pretrained) at the end

    def __post_init__(self):
        check_numbers("train", self, steps=(1, None), seed=(0, None), log_every=(1, None), eval_every=(0, None),
                      eval_batches=(1, None), save_every=(0, None), stop_at=(0, None), sample_every=(0, None),
                      sample_prompts=(0, None), max_minutes=(0, None), keep_checkpoints=(0, None),
                      task_eval_every=(0, None), task_eval_num=(1, None))
        if not isinstance(self.out, str) or not self.out.strip():
            raise ValueError(f"train.out must name the run folder, e.g. runs/my_run; got {self.out!r}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: DiffusionLossConfig = field(default_factory=DiffusionLossConfig)  # mask_id set from the vocabulary
    optim: OptimConfig = field(default_factory=OptimConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: MixtureConfig = field(default_factory=MixtureConfig)
    val_data: list[TaskDataConfig] = field(default_factory=list)
    tokenizers: dict = field(default_factory=dict)  # {"text": "runs/text_recipe/tokenizer", ...}


def check_numbers(section: str, obj, **bounds: tuple) -> None:
    """Refuse fields of ``obj`` that are not finite numbers in their bounds.

    ``bounds`` maps a field to ``(low, high)`` or ``(low, high, "open")`` (low excluded); None is
    unbounded. Whole-number fields (annotated ``int``) must hold integers.
    """
    for name, (low, high, *low_open) in bounds.items():
        value = getattr(obj, name)
        whole = any(f.name == name and f.type in (int, "int") for f in dataclasses.fields(obj))
        if isinstance(value, bool) or not isinstance(value, int if whole else int | float) or not math.isfinite(value):
            raise ValueError(f"{section}.{name} must be {'an integer' if whole else 'a finite number'}, got {value!r}")
        if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
            where = (f"in {'(' if low_open else '['}{low}, {high}]" if high is not None
                     else f"{'>' if low_open else '>='} {low}")
            raise ValueError(f"{section}.{name} must be {where}, got {value!r}")


def _nearest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {valid}"


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _list_item_type(tp):
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return item if _is_dataclass_type(item) else None
    return None


def _build(cls, data: dict | None, where: str):
    """Instantiate dataclass ``cls`` from a (possibly partial) dict, checking every key."""
    data = data or {}
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in valid:
            raise ValueError(f"unknown config key {path!r}" + _nearest(key, valid))
        tp = hints[key]
        if _is_dataclass_type(tp):
            kwargs[key] = _build(tp, value, path)
        elif (item := _list_item_type(tp)) is not None:
            if not isinstance(value, list):
                raise ValueError(f"{path} must be a list, got {value!r}")
            kwargs[key] = [v if isinstance(v, item) else _build(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        else:
            kwargs[key] = _coerce(value, tp, path)
    return cls(**kwargs)


def _coerce(value, tp, path: str):
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        tp = args[0]
        origin = typing.get_origin(tp)
    if tp is float and not isinstance(value, bool):
        try:
            number = float(value)  # YAML reads "3e-4" as a string
        except (TypeError, ValueError):
            raise ValueError(f"{path} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{path} must be a finite number, got {value!r}")
        return number
    if tp in (int, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ValueError(f"{path} must be {tp.__name__}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{path} must be a list, e.g. [0.9, 0.95]; got {value!r}")
        items = typing.get_args(tp)
        if items and items[-1] is not Ellipsis:
            if len(value) != len(items):
                raise ValueError(f"{path} must be a list of {len(items)} values, got {value!r}")
            return tuple(_coerce(v, t, f"{path}[{i}]") for i, (v, t) in enumerate(zip(value, items, strict=True)))
        return tuple(value)
    if (tp is dict or origin is dict) and not isinstance(value, dict):
        raise ValueError(f"{path} must be a mapping (key: value), got {value!r}")
    return value


def _set_dotted(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {dotted}: {k} is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not all(key.split(".")):
            raise ValueError(f"override {item!r} needs a dotted key before '=', e.g. optim.lr=3e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: {raw!r} is not a YAML value ({getattr(err, 'problem', None) or err}); "
                             "quote strings and close brackets") from None
        _set_dotted(tree, key, value)
    return tree


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist (recipes live in configs/)")
        if not path.is_file():
            raise ValueError(f"config path {path} is not a file; pass a YAML recipe such as configs/text.yaml")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise ValueError(f"config file {path} is not UTF-8 text; pass a YAML recipe") from None
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ValueError(f"config file {path} must map sections to settings (model:, optim:, train:, data:, ...), "
                         f"not hold a {type(tree).__name__}")
    tree = _merge(tree, parse_overrides(list(overrides)))
    return _resolve_data_root(_build(RunConfig, tree, ""))


def _resolve_data_root(cfg: RunConfig) -> RunConfig:
    """Join ``data.root`` onto every relative task path (training and validation), then clear it.

    One recipe then serves datasets built anywhere: ``data.root=/scratch/data`` on the command line.
    """
    root = cfg.data.root
    if root:
        for spec in [*cfg.data.tasks, *cfg.val_data]:
            if not Path(spec.path).is_absolute():
                spec.path = str(Path(root) / spec.path)
        cfg.data.root = ""
    return cfg


def to_dict(cfg) -> dict:
    def plain(v):
        if isinstance(v, tuple):
            return list(v)
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)
