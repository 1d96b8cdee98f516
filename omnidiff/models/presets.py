"""Named model sizes (a plain dict next to the model) and the parameter/FLOP counter.

``debug`` is for tests (< 1M parameters with a few-thousand-token vocabulary); ``tiny`` and
``small`` are the CPU demo sizes (MoE); the rest are GPU sizes. The vocabulary size comes from the
`Vocab` at build time, so a preset holds everything else. ``*-dense`` twins have the same active
parameters as their MoE preset (dense FFN width = top_k x expert width), for fair comparisons.
"""

from __future__ import annotations

from dataclasses import fields, replace

from omnidiff.models.moe import MoEConfig
from omnidiff.models.transformer import TransformerConfig

PRESETS: dict[str, dict] = {
    "debug": dict(dim=64, num_layers=2, num_heads=4, ffn_hidden=128, max_positions=1024,
                  moe=MoEConfig(num_experts=4, top_k=2, expert_hidden=64)),
    "tiny": dict(dim=256, num_layers=6, num_heads=4, ffn_hidden=768, max_positions=2048,
                 moe=MoEConfig(num_experts=8, top_k=2, expert_hidden=384)),
    "small": dict(dim=512, num_layers=8, num_heads=8, ffn_hidden=1536, max_positions=2048,
                  moe=MoEConfig(num_experts=8, top_k=2, expert_hidden=768)),
    # GPU sizes. ~1.0B total / ~0.25B active with a 64k vocabulary.
    "moe-1b": dict(dim=1024, num_layers=18, num_heads=16, num_kv_heads=4, ffn_hidden=2816, max_positions=8192,
                   moe=MoEConfig(num_experts=32, top_k=2, expert_hidden=512, shared_expert_hidden=512)),
    # ~7B total / ~1.3B active with a 64k vocabulary.
    "moe-7b": dict(dim=2048, num_layers=24, num_heads=16, num_kv_heads=4, ffn_hidden=5632, max_positions=8192,
                   moe=MoEConfig(num_experts=64, top_k=4, expert_hidden=704, shared_expert_hidden=1408)),
}
for _name in ("tiny", "small", "moe-1b"):
    _p = PRESETS[_name]
    _active_ffn = _p["moe"].top_k * _p["moe"].expert_hidden + _p["moe"].shared_expert_hidden
    PRESETS[f"{_name}-dense"] = {**{k: v for k, v in _p.items() if k != "moe"}, "moe": None, "ffn_hidden": _active_ffn}


def preset_config(name: str, vocab_size: int, **overrides) -> TransformerConfig:
    """The `TransformerConfig` of preset ``name`` for a vocabulary of ``vocab_size`` ids."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; allowed: {sorted(PRESETS)}")
    known = {f.name for f in fields(TransformerConfig)} - {"vocab_size"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown model override(s) {unknown}; model.overrides takes {sorted(known)}")
    moe_override = overrides.pop("moe", None)
    cfg = TransformerConfig(vocab_size=vocab_size, **{**PRESETS[name], **overrides})
    if isinstance(moe_override, dict) and cfg.moe is not None:
        unknown = sorted(set(moe_override) - {f.name for f in fields(cfg.moe)})
        if unknown:
            raise ValueError(f"unknown MoE override(s) {unknown}; model.overrides.moe takes "
                             f"{sorted(f.name for f in fields(cfg.moe))}")
        cfg = replace(cfg, moe=replace(cfg.moe, **moe_override))
    elif moe_override is not None:
        cfg = replace(cfg, moe=moe_override)
    return cfg


def count_parameters(cfg: TransformerConfig, seq_len: int = 512) -> dict[str, float]:
    """Total and active (per-token) parameters and training FLOPs per token, from the config alone.

    FLOPs count multiply-adds as 2 and training as 3x forward (forward + backward): matmul weights
    touched per token (active, embedding lookup excluded, LM head included) plus attention scores
    and weighted sums over ``seq_len`` keys.
    """
    d, hd = cfg.dim, cfg.dim // cfg.num_heads
    attn = d * cfg.num_heads * hd + 2 * d * cfg.num_kv_heads * hd + cfg.num_heads * hd * d + 2 * hd
    if cfg.attn_bias:
        attn += cfg.num_heads * hd + 2 * cfg.num_kv_heads * hd
    dense_ffn = 3 * d * cfg.ffn_hidden
    moe_at = set(cfg.moe_layer_indices())
    total = active = 0
    for i in range(cfg.num_layers):
        layer_common = attn + 2 * d  # two norms
        if i in moe_at:
            m = cfg.moe
            expert = 3 * d * m.expert_hidden
            shared = 3 * d * m.shared_expert_hidden
            total += layer_common + d * m.num_experts + m.num_experts * expert + shared
            active += layer_common + d * m.num_experts + m.top_k * expert + shared
        else:
            total += layer_common + dense_ffn
            active += layer_common + dense_ffn
    embed = cfg.vocab_size * d
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    total += embed + head + d
    active_matmul = active + cfg.vocab_size * d  # the head is a matmul even when tied
    attn_flops = 2 * 2 * cfg.num_layers * seq_len * cfg.num_heads * hd  # QK^T and AV per token
    forward = 2 * active_matmul + attn_flops
    return {
        "params_total": total,
        "params_active": active + embed + head + d,
        "params_active_non_embedding": active,
        "flops_per_token_forward": forward,
        "flops_per_token_train": 3 * forward,
    }
