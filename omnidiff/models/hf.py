"""Hugging Face faces of the model: `OmniDiffConfig` / `OmniDiffModel`.

They let ``save_pretrained(dir)`` / ``from_pretrained(dir)`` round-trip through safetensors and the
Auto classes (``AutoConfig``/``AutoModel``, registered here, no remote code). The unified
vocabulary travels with the weights twice: inside ``config.json`` (what the loader checks) and as
``omnidiff_vocab.json`` beside it (what tools and tokenizers read). Loading with an ``expected_vocab``
that differs raises instead of producing silently mis-mapped ids. A damaged folder is refused
before transformers reads it (`check_export`): it would otherwise re-initialise missing weights
with a warning, or unpickle a ``pytorch_model.bin``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from omnidiff.files import mismatch, read_json, refuse_pickles, safetensors_shapes
from omnidiff.models.layers import KVCache, RotaryEmbedding
from omnidiff.models.moe import MoEFeedForward
from omnidiff.models.transformer import Transformer, TransformerConfig
from omnidiff.tokenization.vocab import Vocab


class OmniDiffConfig(PretrainedConfig):
    model_type = "omnidiff"

    def __init__(self, transformer: dict | None = None, vocab: dict | None = None, **kwargs):
        self.transformer = transformer or {}
        self.vocab = vocab
        # transformers ties weights at load time only when the config says so: without this a tied
        # model's lm_head (not stored: it is the embedding) would come back uninitialised.
        kwargs["tie_word_embeddings"] = bool(self.transformer.get("tie_embeddings", False))
        super().__init__(**kwargs)

    @classmethod
    def from_parts(cls, cfg: TransformerConfig, vocab: Vocab | None = None) -> OmniDiffConfig:
        if vocab is not None and vocab.size != cfg.vocab_size:
            raise ValueError(
                f"model vocab_size {cfg.vocab_size} does not match the vocabulary's {vocab.size} ids; "
                "build the model config from the vocabulary (preset_config(name, vocab.size))"
            )
        return cls(transformer=cfg.to_dict(), vocab=None if vocab is None else vocab.to_dict())

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig.from_dict(dict(self.transformer))

    def get_vocab(self) -> Vocab | None:
        return None if self.vocab is None else Vocab.from_dict(self.vocab)


class OmniDiffModel(PreTrainedModel):
    """`Transformer` behind the PreTrainedModel interface; ``forward`` and ``new_cache`` pass straight through."""

    config_class = OmniDiffConfig
    base_model_prefix = "omnidiff"
    main_input_name = "tokens"
    supports_gradient_checkpointing = True

    def __init__(self, config: OmniDiffConfig):
        super().__init__(config)
        self.model = Transformer(config.transformer_config())
        if self.model.cfg.tie_embeddings:
            self._tied_weights_keys = {"model.lm_head.weight": "model.embed.weight"}
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        # Parameters are initialised by Transformer.__init__ or loaded; only the buffers that are
        # not saved (rotary tables, an unused expert bias) must be rebuilt after a meta-device init.
        if isinstance(module, RotaryEmbedding):
            module.reset_buffers()
        elif isinstance(module, MoEFeedForward) and not module.cfg.expert_bias:
            module.bias = torch.zeros_like(module.bias, device="cpu" if module.bias.is_meta else module.bias.device)

    @property
    def vocab(self) -> Vocab | None:
        return self.config.get_vocab()

    @property
    def cfg(self) -> TransformerConfig:
        """The wrapped `Transformer`'s config (what pipelines ask of a model, whichever they get)."""
        return self.model.cfg

    def forward(self, tokens: torch.Tensor, **kwargs):
        return self.model(tokens, **kwargs)

    def encode_images(self, images):
        return self.model.encode_images(images)

    def encode_audio(self, audio):
        return self.model.encode_audio(audio)

    def new_cache(self) -> KVCache:
        """An empty KV cache for this model, so that ``generate`` takes the wrapper for every cache mode."""
        return self.model.new_cache()

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)
        vocab = self.vocab
        if vocab is not None:
            vocab.save(save_directory)

    @classmethod
    def from_pretrained(cls, path: str | Path, *args, expected_vocab: Vocab | None = None, **kwargs) -> OmniDiffModel:
        """Load from a local folder; raises if ``expected_vocab`` is given and differs."""
        folder = Path(path)
        if not (folder / "config.json").exists():
            raise FileNotFoundError(
                f"no OmniDiff checkpoint at {folder} (config.json missing); pass the folder written by "
                "save_pretrained or by train.py's export"
            )
        check_export(folder)
        kwargs.setdefault("local_files_only", True)
        kwargs.setdefault("use_safetensors", True)
        loaded = super().from_pretrained(str(folder), *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, info) with output_loading_info
        broken = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
        if broken:
            raise ValueError(f"the weights in {folder} hold NaN or infinite values ({broken[:3]}): the file is "
                             "corrupt or the run diverged; export a good checkpoint")
        if expected_vocab is not None:
            stored = model.vocab
            if stored is None:
                raise ValueError(f"checkpoint {folder} carries no vocabulary; cannot check it against yours")
            expected_vocab.check_compatible(stored, what=f"checkpoint {folder}")
        return loaded


def check_export(folder: str | Path) -> None:
    """Refuse a model folder that would not load as saved: ``config.json`` must be an OmniDiff config
    and the safetensors weights must be whole and hold exactly the tensors it describes."""
    folder = Path(folder)
    raw = read_json(folder / "config.json", "model config")
    if not isinstance(raw, dict) or raw.get("model_type") != "omnidiff" or not isinstance(raw.get("transformer"), dict):
        kind = raw.get("model_type") if isinstance(raw, dict) else None
        raise ValueError(f"{folder / 'config.json'} is not an OmniDiff model config (model_type {kind!r}); pass a "
                         "folder exported by train.py (<run>/model)")
    try:
        cfg = TransformerConfig.from_dict(dict(raw["transformer"]))
    except TypeError as err:
        raise ValueError(f"{folder / 'config.json'} has an incomplete model description ({err}); export the "
                         "model again") from None
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif index.is_file():
        weight_map = read_json(index, "weights index").get("weight_map") or {}
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        refuse_pickles(folder, "model folder")
        raise FileNotFoundError(f"{folder} has a config.json but no model.safetensors: the export is incomplete; "
                                "export the model again (train.py writes <run>/model)")
    found = {name: shape for f in files for name, shape in safetensors_shapes(f).items()}
    with torch.device("meta"):
        expected = {f"model.{k}": tuple(v.shape) for k, v in Transformer(cfg).state_dict().items()}
    problem = mismatch(expected, found, optional={"model.lm_head.weight"} if cfg.tie_embeddings else set())
    if problem:
        raise ValueError(f"the weights in {folder} do not match its config.json ({problem}): the folder mixes two "
                         "exports or was altered; export the model again")


AutoConfig.register("omnidiff", OmniDiffConfig, exist_ok=True)
AutoModel.register(OmniDiffConfig, OmniDiffModel, exist_ok=True)
