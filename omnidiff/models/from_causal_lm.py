"""AR-to-diffusion initialisation: load a local Hugging Face causal LM into our `Transformer`.

Supported architectures (config ``model_type``):
- ``llama`` and ``qwen2`` map one to one: RMSNorm, half-split RoPE, SwiGLU, grouped-query
  attention, q/k/v biases for Qwen2; our config gets ``qk_norm=False`` and no MoE.
- ``gpt2`` needs LayerNorm, learned absolute positions, a GELU MLP, an output-projection bias and
  no RoPE, which `TransformerConfig` cannot express yet. `GPT2StyleTransformer` is a `Transformer`
  whose modules are swapped for those (its forward is the parent's; the learned position table
  sits in front of the first block). It cannot be saved through `OmniDiffModel` until the config
  grows these options.

Vocabulary: without a `Vocab` our vocabulary is theirs, row for row (parity tests). With one, the
HF rows go to the range ``text_range`` (its size must not exceed theirs) and every other row (our
specials, other modalities) starts at the mean HF embedding plus small noise (the mean keeps new
tokens' initial logits at the average, so the pretrained distribution is not disturbed); ``<eos>``,
``<bos>`` and ``<pad>`` copy the HF rows of the checkpoint's own eos/bos/pad ids when it has them.
Weights are read from safetensors (sharded or not) only: a ``pytorch_model.bin`` is a pickle, and
unpickling runs code from the file, so it is refused (convert it to safetensors first). A folder
that is not a Llama/Qwen2/GPT-2 checkpoint is refused with a message that says what to pass (for
SmolLM2-135M: ``make smollm2``, `omnidiff.models.convert_gguf`).

Training: a recipe's ``model.init_from`` names such a folder and the trainer starts from
`init_model` (the architecture is the checkpoint's; only `INIT_OVERRIDES` may be changed). The
rest of DiffuLLaMA's adaptation is in the objective: ``objective.shift`` and ``anneal_steps``.

Shape legend: V vocabulary, C model width.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.files import read_json, read_safetensors, refuse_pickles
from omnidiff.models.transformer import Transformer, TransformerConfig

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "gpt2")
HOW_TO_GET = ("pass a folder written by save_pretrained (config.json + model.safetensors); for SmolLM2-135M run "
              "`make smollm2`, which writes runs/pretrained/smollm2-135m")
# TransformerConfig fields a training run may set on top of a pretrained architecture (none changes a weight).
INIT_OVERRIDES = ("max_positions", "gradient_checkpointing", "check_inputs")
_GELU_APPROX = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}


# --------------------------------------------------------------------------------------- GPT-2 modules
class NoRotary(nn.Module):
    """Stands in for `RotaryEmbedding` in models with absolute positions."""

    def forward(self, x_BHLD: torch.Tensor, positions_BL: torch.Tensor) -> torch.Tensor:
        return x_BHLD


class GeluMLP(nn.Module):
    """GPT-2 feed-forward: proj(gelu(fc(x))), with biases."""

    def __init__(self, dim: int, hidden: int, approximate: str = "tanh"):
        super().__init__()
        self.fc = nn.Linear(dim, hidden)
        self.proj = nn.Linear(hidden, dim)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate=self.approximate))


class AbsolutePositionInput(nn.Module):
    """Adds a learned position embedding to the input of the block it wraps (the first one)."""

    def __init__(self, block: nn.Module, max_positions: int, dim: int):
        super().__init__()
        self.block = block
        self.wpe = nn.Embedding(max_positions, dim)

    def forward(self, x, rope, positions, mask, kv_cache, layer, query_columns=None):
        return self.block(x + self.wpe(positions).to(x.dtype), rope, positions, mask, kv_cache, layer, query_columns)


class GPT2StyleTransformer(Transformer):
    """`Transformer` with LayerNorm, learned positions, GELU MLP and biased projections (GPT-2)."""

    def __init__(self, cfg: TransformerConfig, gelu_approximate: str = "tanh"):
        super().__init__(cfg)
        for block in self.layers:
            block.attn_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
            block.ffn_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
            block.ffn = GeluMLP(cfg.dim, cfg.ffn_hidden, gelu_approximate)
            block.attn.o_proj = nn.Linear(cfg.dim, cfg.dim, bias=True)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.rope = NoRotary()
        self.layers[0] = AbsolutePositionInput(self.layers[0], cfg.max_positions, cfg.dim)
        self.reset_parameters()


# --------------------------------------------------------------------------------------- reading
def checkpoint_type(path: str | Path) -> str:
    """The ``model_type`` of the causal LM folder ``path``; a folder that is not one is refused."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"causal LM folder {path} does not exist; {HOW_TO_GET}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {path}: it is not a Hugging Face checkpoint folder; {HOW_TO_GET}")
    raw = read_json(path / "config.json", "model config")
    kind = raw.get("model_type") if isinstance(raw, dict) else None
    if kind not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{path} holds a {kind!r} checkpoint, not a causal LM of {list(SUPPORTED_MODEL_TYPES)} "
                         f"architecture; {HOW_TO_GET}")
    return kind


def read_checkpoint(path: str | Path) -> tuple[object, dict[str, torch.Tensor]]:
    """(transformers config, state dict) of a causal LM saved with ``save_pretrained`` in ``path``."""
    from transformers import AutoConfig

    path = Path(path)
    checkpoint_type(path)
    hf_cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    if (path / "model.safetensors").is_file():
        state = read_safetensors(path / "model.safetensors")
    elif (path / "model.safetensors.index.json").is_file():
        index = read_json(path / "model.safetensors.index.json", "weights index")
        shards = sorted(set((index.get("weight_map") or {}).values())) if isinstance(index, dict) else []
        if not shards:
            raise ValueError(f"{path / 'model.safetensors.index.json'} names no weight files; save the checkpoint again")
        state = {k: v for shard in shards for k, v in read_safetensors(path / shard).items()}
    else:
        refuse_pickles(path, "checkpoint folder")
        raise FileNotFoundError(f"no model.safetensors(.index.json) in {path}; {HOW_TO_GET}")
    return hf_cfg, state


def _rope_theta(hf_cfg) -> float:
    params = getattr(hf_cfg, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    scaling = getattr(hf_cfg, "rope_scaling", None) or {}
    if rope_type != "default" or scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise ValueError(f"RoPE type {rope_type or scaling!r} is not supported; only the default (unscaled) RoPE maps exactly")
    return float(params.get("rope_theta", getattr(hf_cfg, "rope_theta", 10000.0)))


def causal_lm_config(hf_cfg, vocab_size: int | None = None, max_positions: int | None = None) -> TransformerConfig:
    """The dense `TransformerConfig` equivalent to a Llama/Qwen2/GPT-2 transformers config."""
    kind = hf_cfg.model_type
    if kind not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"unsupported causal LM architecture {kind!r}; supported: {list(SUPPORTED_MODEL_TYPES)}")
    vocab_size = vocab_size or hf_cfg.vocab_size
    common = dict(vocab_size=vocab_size, qk_norm=False, moe=None, moe_layers="none",
                  init_std=getattr(hf_cfg, "initializer_range", 0.02))
    if kind == "gpt2":
        if hf_cfg.activation_function not in _GELU_APPROX:
            raise ValueError(f"GPT-2 activation {hf_cfg.activation_function!r} unsupported; allowed: {list(_GELU_APPROX)}")
        if getattr(hf_cfg, "scale_attn_by_inverse_layer_idx", False) or not getattr(hf_cfg, "scale_attn_weights", True):
            raise ValueError("GPT-2 attention scaling other than 1/sqrt(head_dim) is not supported")
        return TransformerConfig(
            dim=hf_cfg.n_embd, num_layers=hf_cfg.n_layer, num_heads=hf_cfg.n_head, num_kv_heads=hf_cfg.n_head,
            ffn_hidden=hf_cfg.n_inner or 4 * hf_cfg.n_embd, max_positions=max_positions or hf_cfg.n_positions,
            attn_bias=True, norm_eps=hf_cfg.layer_norm_epsilon, tie_embeddings=True, **common,
        )
    if getattr(hf_cfg, "hidden_act", "silu") != "silu":
        raise ValueError(f"{kind} with hidden_act={hf_cfg.hidden_act!r} is not supported (SwiGLU needs silu)")
    if getattr(hf_cfg, "mlp_bias", False) or (kind == "llama" and getattr(hf_cfg, "attention_bias", False)):
        raise ValueError("Llama checkpoints with mlp_bias or attention_bias (output-projection bias) are not supported")
    if kind == "qwen2" and getattr(hf_cfg, "use_sliding_window", False):
        raise ValueError("Qwen2 sliding-window attention is not supported; use a checkpoint with use_sliding_window=false")
    head_dim = getattr(hf_cfg, "head_dim", None) or hf_cfg.hidden_size // hf_cfg.num_attention_heads
    if head_dim * hf_cfg.num_attention_heads != hf_cfg.hidden_size:
        raise ValueError(f"head_dim {head_dim} x heads {hf_cfg.num_attention_heads} != hidden size {hf_cfg.hidden_size}; "
                         "our attention needs head_dim = dim / heads")
    return TransformerConfig(
        dim=hf_cfg.hidden_size, num_layers=hf_cfg.num_hidden_layers, num_heads=hf_cfg.num_attention_heads,
        num_kv_heads=hf_cfg.num_key_value_heads or hf_cfg.num_attention_heads, ffn_hidden=hf_cfg.intermediate_size,
        max_positions=max_positions or hf_cfg.max_position_embeddings, rope_theta=_rope_theta(hf_cfg),
        attn_bias=kind == "qwen2", norm_eps=hf_cfg.rms_norm_eps, tie_embeddings=bool(hf_cfg.tie_word_embeddings),
        **common,
    )


# --------------------------------------------------------------------------------------- mapping
def _strip(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out


def _map_llama(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    state = _strip(state, ("model.",))
    names = {"self_attn.q_proj": "attn.q_proj", "self_attn.k_proj": "attn.k_proj", "self_attn.v_proj": "attn.v_proj",
             "self_attn.o_proj": "attn.o_proj", "mlp.gate_proj": "ffn.gate", "mlp.up_proj": "ffn.up",
             "mlp.down_proj": "ffn.down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    out = {"embed.weight": state.pop("embed_tokens.weight"), "norm.weight": state.pop("norm.weight")}
    if "lm_head.weight" in state:
        out["lm_head.weight"] = state.pop("lm_head.weight")
    for i in range(num_layers):
        for theirs, ours in names.items():
            for suffix in ("weight", "bias"):
                key = f"layers.{i}.{theirs}.{suffix}"
                if key in state:
                    out[f"layers.{i}.{ours}.{suffix}"] = state.pop(key)
    _reject_leftovers(state)
    return out


def _map_gpt2(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    state = _strip(state, ("transformer.",))
    # Old checkpoints also store the causal-mask buffers "h.N.attn.bias" / "h.N.attn.masked_bias".
    state = {k: v for k, v in state.items() if k.split(".")[-2:] not in (["attn", "bias"], ["attn", "masked_bias"])}
    state.pop("lm_head.weight", None)  # GPT-2 always ties the head to wte
    out = {"embed.weight": state.pop("wte.weight"), "layers.0.wpe.weight": state.pop("wpe.weight"),
           "norm.weight": state.pop("ln_f.weight"), "norm.bias": state.pop("ln_f.bias")}
    for i in range(num_layers):
        ours = f"layers.{i}.block." if i == 0 else f"layers.{i}."
        h = f"h.{i}."
        for suffix in ("weight", "bias"):
            out[ours + f"attn_norm.{suffix}"] = state.pop(h + f"ln_1.{suffix}")
            out[ours + f"ffn_norm.{suffix}"] = state.pop(h + f"ln_2.{suffix}")
        # Conv1D stores [in, out]; nn.Linear wants [out, in]. c_attn packs q, k, v along out.
        q, k, v = state.pop(h + "attn.c_attn.weight").t().chunk(3, dim=0)
        qb, kb, vb = state.pop(h + "attn.c_attn.bias").chunk(3)
        for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
            out[ours + f"attn.{name}.weight"], out[ours + f"attn.{name}.bias"] = w.contiguous(), b
        out[ours + "attn.o_proj.weight"] = state.pop(h + "attn.c_proj.weight").t().contiguous()
        out[ours + "attn.o_proj.bias"] = state.pop(h + "attn.c_proj.bias")
        out[ours + "ffn.fc.weight"] = state.pop(h + "mlp.c_fc.weight").t().contiguous()
        out[ours + "ffn.fc.bias"] = state.pop(h + "mlp.c_fc.bias")
        out[ours + "ffn.proj.weight"] = state.pop(h + "mlp.c_proj.weight").t().contiguous()
        out[ours + "ffn.proj.bias"] = state.pop(h + "mlp.c_proj.bias")
    _reject_leftovers(state)
    return out


def _reject_leftovers(state: dict[str, torch.Tensor]) -> None:
    left = sorted(k for k in state if "rotary_emb" not in k)
    if left:
        raise ValueError(f"checkpoint has weights this mapping does not know ({left[:6]}...); "
                         "the architecture variant is not supported")


def extend_rows(hf_rows_VC: torch.Tensor, vocab, text_range: str, specials: dict[str, int]) -> torch.Tensor:
    """Our [vocab.size, C] table: HF rows at ``text_range``, mean + noise elsewhere, specials copied."""
    rng = vocab.range(text_range)
    if rng.size > hf_rows_VC.shape[0]:
        raise ValueError(f"range {text_range!r} has {rng.size} ids but the checkpoint only {hf_rows_VC.shape[0]} rows; "
                         "register the HF tokenizer's vocabulary (at most the checkpoint's size) as that range")
    gen = torch.Generator().manual_seed(0)
    noise_std = 0.02 * float(hf_rows_VC.float().std())
    out = hf_rows_VC.float().mean(0, keepdim=True).repeat(vocab.size, 1)
    out += noise_std * torch.randn(out.shape, generator=gen)
    out[rng.offset:rng.end] = hf_rows_VC[: rng.size].float()
    for name, hf_id in specials.items():
        out[vocab.special(name)] = hf_rows_VC[hf_id].float()
    return out.to(hf_rows_VC.dtype)


def _special_sources(hf_cfg, num_rows: int) -> dict[str, int]:
    found = {}
    for ours, attr in (("<eos>", "eos_token_id"), ("<bos>", "bos_token_id"), ("<pad>", "pad_token_id")):
        value = getattr(hf_cfg, attr, None)
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, int) and 0 <= value < num_rows:
            found[ours] = value
    return found


def load_causal_lm(path: str | Path, vocab=None, *, text_range: str = "text", max_positions: int | None = None,
                   special_sources: dict[str, int] | None = None) -> Transformer:
    """Our `Transformer` initialised from the causal LM saved in the local folder ``path``.

    Args:
        path: folder with ``config.json`` and the weights (as written by ``save_pretrained``).
        vocab: our `Vocab`; None keeps the checkpoint's vocabulary unchanged.
        text_range: the range of ``vocab`` that holds the checkpoint's token ids.
        max_positions: override of the position limit (RoPE table size; GPT-2 cannot grow it).
        special_sources: our special name -> HF id whose rows seed it; default from the HF config's
            eos/bos/pad ids.
    """
    hf_cfg, state = read_checkpoint(path)
    cfg = causal_lm_config(hf_cfg, vocab.size if vocab is not None else None, max_positions)
    kind = hf_cfg.model_type
    if kind == "gpt2" and cfg.max_positions > hf_cfg.n_positions:
        raise ValueError(f"GPT-2 has {hf_cfg.n_positions} learned positions; max_positions cannot exceed that")
    cfg = replace(cfg, extra={"init_from": {"path": str(path), "model_type": kind, "hf_vocab_size": hf_cfg.vocab_size,
                                            "text_range": text_range if vocab is not None else None}})
    mapped = (_map_gpt2 if kind == "gpt2" else _map_llama)(state, cfg.num_layers)
    if kind == "gpt2":
        model = GPT2StyleTransformer(cfg, _GELU_APPROX[hf_cfg.activation_function])
        if cfg.max_positions < hf_cfg.n_positions:
            mapped["layers.0.wpe.weight"] = mapped["layers.0.wpe.weight"][: cfg.max_positions]
    else:
        model = Transformer(cfg)
    if vocab is not None:
        specials = special_sources if special_sources is not None else _special_sources(hf_cfg, hf_cfg.vocab_size)
        for key in ("embed.weight", "lm_head.weight"):
            if key in mapped:
                mapped[key] = extend_rows(mapped[key], vocab, text_range, specials)
    if cfg.tie_embeddings:
        mapped["lm_head.weight"] = mapped["embed.weight"]
    elif "lm_head.weight" not in mapped:
        raise ValueError("checkpoint has untied embeddings but no lm_head.weight")
    model.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=True)
    return model


def init_model(path: str | Path, vocab, overrides: dict | None = None, *, text_range: str = "text") -> Transformer:
    """The `Transformer` a training run with ``model.init_from`` starts from (DiffuLLaMA's initialisation).

    The architecture and weights come from the Llama/Qwen2 folder ``path``; ``vocab`` places its rows
    (`load_causal_lm`). ``overrides`` may set only `INIT_OVERRIDES`: anything else would change
    the pretrained architecture. GPT-2 is refused, because `GPT2StyleTransformer` cannot be exported
    through `OmniDiffModel` yet.
    """
    overrides = dict(overrides or {})
    refused = sorted(set(overrides) - set(INIT_OVERRIDES))
    if refused:
        raise ValueError(f"model.overrides {refused} would change the pretrained architecture of {path}; with "
                         f"model.init_from only {list(INIT_OVERRIDES)} may be set")
    if checkpoint_type(path) == "gpt2":
        raise ValueError(f"{path} is a GPT-2 checkpoint: it maps for parity tests, but train.py cannot export it yet; "
                         "start from a Llama or Qwen2 folder")
    model = load_causal_lm(path, vocab, text_range=text_range, max_positions=overrides.pop("max_positions", None))
    model.cfg = replace(model.cfg, **overrides)
    return model
