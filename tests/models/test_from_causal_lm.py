"""AR-to-diffusion init: our Transformer loaded from tiny random HF causal LMs matches them exactly."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from omnidiff.diffusion.masking import annealed_attention_mask
from omnidiff.models.from_causal_lm import GPT2StyleTransformer, load_causal_lm
from omnidiff.models.layers import AttentionSpec
from omnidiff.tokenization.vocab import Vocab

HF_VOCAB = 96


def _tiny(kind: str, **kw):
    torch.manual_seed(0)
    if kind == "llama":
        cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=HF_VOCAB, rope_theta=500.0, bos_token_id=1, eos_token_id=2, **kw)
        return LlamaForCausalLM(cfg)
    if kind == "qwen2":
        cfg = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=HF_VOCAB, tie_word_embeddings=True, eos_token_id=5, **kw)
        return Qwen2ForCausalLM(cfg)
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=HF_VOCAB, bos_token_id=0,
                     eos_token_id=0, **kw)
    return GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def saved(request, tmp_path_factory):
    hf = _tiny(request.param).eval()
    with torch.no_grad():  # random biases/norm gains so every mapped tensor matters
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_" in name:
                p.normal_(std=0.1).add_(1.0 if name.endswith("weight") else 0.0)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    return request.param, hf, path


def test_causal_logits_match_hf(saved):
    kind, hf, path = saved
    ours = load_causal_lm(path).eval()
    assert isinstance(ours, GPT2StyleTransformer) == (kind == "gpt2")
    assert ours.cfg.qk_norm is False and ours.cfg.moe is None
    tokens = torch.randint(0, HF_VOCAB, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(tokens).logits
        got = ours(tokens, attention="causal")
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_left_padding_matches_unpadded_hf(saved):
    _, hf, path = saved
    ours = load_causal_lm(path).eval()
    tokens = torch.randint(0, HF_VOCAB, (1, 9), generator=torch.Generator().manual_seed(2))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), tokens], 1)
    pad = torch.arange(13).view(1, -1) >= 4
    with torch.no_grad():
        ref = hf(tokens).logits
        got = ours(padded, attention=AttentionSpec("causal", padding_mask=pad))[:, 4:]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_extended_vocab_keeps_text_logits(saved):
    kind, hf, path = saved
    vocab = Vocab()
    vocab.add_range("text", HF_VOCAB)
    vocab.add_range("image", 16)
    ours = load_causal_lm(path, vocab).eval()
    assert ours.cfg.vocab_size == vocab.size and ours.cfg.extra["init_from"]["model_type"] == kind
    hf_tokens = torch.randint(0, HF_VOCAB, (2, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf(hf_tokens).logits
        got = ours(vocab.to_global("text", hf_tokens), attention="causal")
    text = vocab.range("text")
    torch.testing.assert_close(got[..., text.offset:text.end], ref, atol=1e-5, rtol=1e-5)
    # <eos> starts from the checkpoint's own eos row; other new rows near the mean embedding.
    hf_embed = hf.get_input_embeddings().weight
    torch.testing.assert_close(ours.embed.weight[vocab.eos_id], hf_embed[hf.config.eos_token_id])
    mask_row = ours.embed.weight[vocab.mask_id]
    assert (mask_row - hf_embed.mean(0)).norm() < 0.1 * hf_embed.norm(dim=1).mean()


def test_annealed_mask_interpolates_causal_to_full(saved):
    _, _, path = saved
    ours = load_causal_lm(path).eval()
    tokens = torch.randint(0, HF_VOCAB, (2, 12), generator=torch.Generator().manual_seed(4))
    pad = torch.ones(2, 12, dtype=torch.bool)
    with torch.no_grad():
        causal = ours(tokens, attention="causal")
        full = ours(tokens, attention="full")
        at0 = ours(tokens, attention=AttentionSpec("full", padding_mask=pad, allowed=annealed_attention_mask(pad, 0.0)))
        at1 = ours(tokens, attention=AttentionSpec("full", padding_mask=pad, allowed=annealed_attention_mask(pad, 1.0)))
    torch.testing.assert_close(at0, causal, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(at1, full, atol=1e-5, rtol=1e-5)


def test_rejects_missing_folder_and_unsupported(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_causal_lm(tmp_path)
    hf = _tiny("llama", mlp_bias=True)
    hf.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="mlp_bias"):
        load_causal_lm(tmp_path / "m")


def test_diffusion_loss_on_ar_init_with_shift_and_annealing(saved):
    from omnidiff.diffusion.objectives import DiffusionLossConfig, diffusion_loss

    _, _, path = saved
    ours = load_causal_lm(path)
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(3, HF_VOCAB, (4, 16), generator=g)
    ans = torch.zeros(4, 16, dtype=torch.bool)
    ans[:, 6:] = True
    batch = {"tokens": tokens, "padding_mask": torch.ones_like(ans), "answer_mask": ans}
    cfg = DiffusionLossConfig(attention="causal", shift=True, anneal_steps=4, mask_id=4)
    for step in (0, 2, 4):
        out = diffusion_loss(ours, batch, cfg, generator=g, step=step)
        out.loss.backward()
        assert torch.isfinite(out.loss) and ours.embed.weight.grad is not None


def test_smollm2_geometry_maps_exactly(tmp_path):
    # SmolLM2-135M's shape in miniature: 9 query / 3 key-value heads, tied embeddings, RoPE theta 1e5,
    # RMSNorm eps 1e-5 as float32 stores it; read far past the short sequences above.
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=72, intermediate_size=96, num_hidden_layers=2, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=HF_VOCAB, rope_theta=100000.0, rms_norm_eps=9.999999747378752e-06,
                      tie_word_embeddings=True, max_position_embeddings=8192)
    hf = LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    ours = load_causal_lm(tmp_path).eval()
    assert (ours.cfg.num_heads, ours.cfg.num_kv_heads, ours.cfg.rope_theta) == (9, 3, 100000.0)
    assert ours.cfg.tie_embeddings and ours.lm_head.weight is ours.embed.weight and ours.cfg.norm_eps == cfg.rms_norm_eps
    positions = torch.arange(8192).view(1, -1)
    cos, sin = LlamaRotaryEmbedding(cfg)(torch.zeros(1, dtype=torch.float32), positions)
    half = cos.shape[-1] // 2  # HF repeats the table for the two halves of a head
    assert torch.equal(ours.rope.cos, cos[0, :, :half]) and torch.equal(ours.rope.sin, sin[0, :, :half])
    tokens = torch.randint(0, HF_VOCAB, (1, 700), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens, attention="causal"), hf(tokens).logits, atol=1e-5, rtol=1e-5)
