"""Small on-disk datasets and tokenizers built in a temporary folder, shared by several test files."""

from __future__ import annotations

from pathlib import Path

from omnidiff.data.builder import write_split
from omnidiff.tokenization.text import TextTokenizer

SENTENCES = [
    "the red circle is left of the blue square",
    "a small green triangle sits above a large yellow circle",
    "in the beginning god created the heaven and the earth",
    "fold: the act of folding; he gave the napkins a double fold",
    "the only thing cheaper than hardware is talk",
    "seven handwritten digits on a white page",
]


def text_docs(n: int) -> list[str]:
    return [f"{SENTENCES[i % len(SENTENCES)]} number {i} and {SENTENCES[(i * 7 + 3) % len(SENTENCES)]}"
            for i in range(n)]


def build_text_dataset(root: Path, n_train: int = 60, n_val: int = 12, shard_size: int = 16) -> Path:
    out = root / "text"
    for split, n in (("train", n_train), ("val", n_val)):
        docs = text_docs(n) if split == "train" else text_docs(n + 1000)[-n:]
        write_split(out, split, ({"__key__": f"{split}-{i:05d}", "txt": d, "json": {"i": i}}
                                 for i, d in enumerate(docs)), shard_size)
    return out


def build_text_tokenizer(root: Path) -> Path:
    out = root / "bpe"
    TextTokenizer.train(text_docs(200), vocab_size=300, show_progress=False).save(out)
    return out


def tiny_tokenizers(proprio_dim: int = 3):
    """Real tokenizers of all four modalities, tiny and untrained (seeded): text BPE (300 ids), image VQ
    (32 px -> 8x8 codes, K=16), audio mel RVQ (2 levels x 16), action bins (32, H=4, D=4, proprio 3 by default)."""
    import numpy as np
    import torch

    from omnidiff.tokenization.action import ActionTokenizer
    from omnidiff.tokenization.audio import AudioCodecConfig, AudioTokenizer
    from omnidiff.tokenization.image import ImageTokenizer, ImageVQConfig
    from omnidiff.tokenization.registry import TokenizerSet

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    return TokenizerSet(
        text=TextTokenizer.train(text_docs(200), vocab_size=300, show_progress=False),
        image=ImageTokenizer(ImageVQConfig(image_size=32, unshuffle=2, block_out_channels=(16, 32), latent_channels=16,
                                           vq_embed_dim=8, codebook_size=16, norm_num_groups=8)),
        audio=AudioTokenizer(AudioCodecConfig(channels=16, latent_dim=16, levels=2, codebook_size=16,
                                              griffin_lim_iters=2, blocks=1)),
        action=ActionTokenizer.fit(rng.uniform(-1, 1, (200, 4)), rng.normal(size=(200, proprio_dim)), horizon=4, bins=32),
    )


def build_multimodal_model(root: Path, proprio_dim: int = 3, attention: str = "prefix") -> Path:
    """An untrained `debug` model with real, tiny, untrained tokenizers of all four modalities, exported
    like train.py does (weights + vocabulary, tokenizers/, omnidiff_generation.json); ``attention="causal"``
    exports it as an AR twin (decoded left to right)."""
    import json

    from omnidiff.models.hf import OmniDiffConfig, OmniDiffModel
    from omnidiff.models.presets import preset_config

    toks = tiny_tokenizers(proprio_dim)
    vocab = toks.build_vocab()
    model = OmniDiffModel(OmniDiffConfig.from_parts(preset_config("debug", len(vocab)), vocab))
    out = root / "model"
    model.save_pretrained(out)
    toks.save(out / "tokenizers")
    settings = {"attention": attention, "block_size": None, "shift": attention == "causal",
                "tasks": {"caption": {"answer_len": 12}, "vqa": {"answer_len": 4}, "t2i": {"answer_len": 66},
                          "asr": {"answer_len": 8}, "tts": {"answer_len": 16}, "text": {"answer_len": 8},
                          "vla": {"answer_len": 20, "use_proprio": True}}}
    (out / "omnidiff_generation.json").write_text(json.dumps(settings))
    return out

