"""Every recipe in configs/ starts: resolved against stand-in tokenizers and data, shrunk, on CPU.

The recipes keep their real sizes; this test swaps in what a CPU can run in seconds — the `debug`
model (with the recipe's own ``max_positions`` and model overrides), fp32, ZeRO-0, a batch of 4, one
step — and real tokenizer classes that are untrained and narrow but have the repo's token geometry,
read from ``configs/tokenizers/*.yaml`` and the data builders' defaults: 64 px images -> 8 x 8 codes,
8-level audio codes at 31.25 frames/s, action chunks of 8 steps x 4 dims. A recipe whose answers
cannot hold what these tokenizers make, whose sequences exceed its model's positions, or that fails
anywhere on the way to its first step fails here, without a GPU.

Stand-in datasets mimic the builders' members (data/build_*.py) and manifests; each recipe's task
paths are mapped to them by folder name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from omnidiff.config import load_config
from omnidiff.data.builder import write_split
from omnidiff.data.mixing import MixtureConfig, build_mixture_loader, check_task
from omnidiff.diffusion.objectives import diffusion_loss
from omnidiff.models.presets import PRESETS, preset_config
from omnidiff.models.transformer import Transformer
from omnidiff.tokenization.registry import TokenizerSet
from omnidiff.training.trainer import train
from tests.fixtures import text_docs
from tests.tasks.stubs import encode_for_shards

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))
SPEECH_MAX_SECONDS = 2.5  # the Makefile builds runs/data/speech{,_tts} with --max-seconds 2.5
SAMPLES_PER_SPLIT = 8


def builder_default(name: str, option: str):
    """The default of ``--option`` in data/build_<name>.py (what the Makefile gets when it passes none)."""
    parser = argparse.ArgumentParser()
    runpy.run_path(str(ROOT / "data" / f"build_{name}.py"))["add_args"](parser)
    return parser.get_default(option)


# ---------------------------------------------------------------------- stand-in tokenizers
def standin_tokenizers() -> TokenizerSet:
    """Real tokenizer classes, untrained and narrow, with the token counts of the repo's recipes."""
    from omnidiff.data.sources.metaworld import ACTION_DIM, PROPRIO_DIM
    from omnidiff.tokenization.action import ActionTokenizer
    from omnidiff.tokenization.audio import AudioCodecConfig, AudioTokenizer
    from omnidiff.tokenization.image import ImageTokenizer, ImageVQConfig
    from omnidiff.tokenization.text import TextTokenizer

    settings = {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "configs" / "tokenizers").glob("*.yaml")}
    image = settings["image_shapes"]["model"]
    codec = settings["audio"]["codec"]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    return TokenizerSet(
        text=TextTokenizer.train(text_docs(200), vocab_size=300, show_progress=False),
        image=ImageTokenizer(ImageVQConfig(image_size=image["image_size"], unshuffle=image["unshuffle"],
                                           block_out_channels=(16,) * len(image["block_out_channels"]),
                                           latent_channels=8, vq_embed_dim=8, codebook_size=16, norm_num_groups=8)),
        audio=AudioTokenizer(AudioCodecConfig(**{k: codec[k] for k in ("sample_rate", "n_fft", "hop_length", "n_mels",
                                                                         "downsample", "levels")},
                                              channels=16, latent_dim=16, codebook_size=16, blocks=1,
                                              griffin_lim_iters=2)),
        action=ActionTokenizer.fit(rng.uniform(-1, 1, (256, ACTION_DIM)), rng.normal(size=(256, PROPRIO_DIM)),
                                   horizon=builder_default("robot", "horizon"), bins=settings["action"]["bins"]),
    )


# ---------------------------------------------------------------------- stand-in datasets
def picture(seed: int, size: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def text_samples(split: str, n: int, long: bool = False):
    docs = text_docs(n + (1000 if split == "val" else 0))[-n:]
    for i, doc in enumerate(docs):
        yield {"__key__": f"{split}-{i:08d}", "txt": " ".join([doc] * 16)[:1400] if long else doc,
               "json": {"source": "stand-in"}}


def image_samples(split: str, n: int, size: int, questions: bool = True):
    for i in range(n):
        captions = [f"{i % 3 + 1} red circles", "some red circles"]
        meta = {"captions": captions, "qa": [["how many circles?", str(i % 3 + 1)]]} if questions else \
            {"name": "red circle", "captions": captions, "source": "stand-in"}
        yield {"__key__": f"{split}-{i:08d}", "png": picture(i + 7 * len(split), size), "txt": captions[0],
               "json": meta}


def speech_samples(split: str, n: int, rate: int):
    for i in range(n):
        seconds = SPEECH_MAX_SECONDS if i == 0 else 0.4 + 0.3 * i  # the longest clip the builder keeps, too
        t = np.arange(int(seconds * rate)) / rate
        wave = (0.3 * np.sin(2 * np.pi * (180 + 20 * i) * t)).astype(np.float32)
        yield {"__key__": f"{split}-{i:08d}", "wav": {"array": wave, "sample_rate": rate}, "txt": f"say {i}",
               "json": {"voice": "stand-in", "kind": "digits", "text": f"say {i}", "seconds": seconds}}


def robot_samples(split: str, n: int, size: int, horizon: int, action_dim: int, proprio_dim: int):
    rng = np.random.default_rng(len(split))
    for i in range(n):
        yield {"__key__": f"{split}-{i:08d}", "png": picture(100 + i, size),
               "actions.npy": rng.uniform(-1, 1, (horizon, action_dim)).astype(np.float32),
               "proprio.npy": rng.normal(size=proprio_dim).astype(np.float32),
               "json": {"instruction": "push the puck", "paraphrases": ["move the puck"], "task": "push-v3",
                        "episode": i, "step": 0, "success": True}}


def write_dataset(out: Path, make, manifest: dict) -> Path:
    splits = {split: write_split(out, split, (encode_for_shards(s) for s in make(split, SAMPLES_PER_SPLIT)), 4)
              for split in ("train", "val")}
    (out / "manifest.json").write_text(json.dumps({"dataset": out.name, "splits": splits, **manifest}))
    return out


def standin_datasets(root: Path) -> dict[str, Path]:
    """One stand-in per dataset folder the recipes name (runs/data/<name>)."""
    from omnidiff.data.sources.metaworld import ACTION_DIM, PROPRIO_DIM

    size = builder_default("shapes", "size")
    horizon, robot_size = builder_default("robot", "horizon"), builder_default("robot", "size")
    rate = 16000
    makers = {
        "text": (lambda split, n: text_samples(split, n), {}),
        "text_long": (lambda split, n: text_samples(split, n, long=True), {}),
        "shapes": (lambda split, n: image_samples(split, n, size), {}),
        "digits": (lambda split, n: image_samples(split, n, builder_default("digits", "size")), {}),
        "emoji": (lambda split, n: image_samples(split, n, builder_default("emoji", "size"), questions=False), {}),
        "speech": (lambda split, n: speech_samples(split, n, rate),
                   {"sample_rate": rate, "max_seconds": SPEECH_MAX_SECONDS}),
        "speech_tts": (lambda split, n: speech_samples(split, n, rate),  # the one-voice set text to speech reads
                       {"sample_rate": rate, "max_seconds": SPEECH_MAX_SECONDS}),
        "robot": (lambda split, n: robot_samples(split, n, robot_size, horizon, ACTION_DIM, PROPRIO_DIM),
                  {"horizon": horizon, "action_dim": ACTION_DIM, "proprio_dim": PROPRIO_DIM}),
    }
    return {name: write_dataset(root / name, make, manifest) for name, (make, manifest) in makers.items()}


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("standins")
    toks = standin_tokenizers()
    toks.save(root / "tokenizers")
    folders = {m: str(root / "tokenizers" / m) for m in toks.present()}
    return folders, standin_datasets(root / "data")


def standin_causal_lm(folder: Path, text_tokenizer: str) -> Path:
    """A tiny random Llama with the stand-in text vocabulary, for recipes that start from a pretrained LM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from omnidiff.tokenization.text import TextTokenizer

    torch.manual_seed(0)
    size = TextTokenizer.load(text_tokenizer).vocab_size
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=size, tie_word_embeddings=True)).save_pretrained(folder)
    return folder


def standin_run_model(folder: Path, tokenizers: dict, modalities) -> Path:
    """A `debug` model exported for the stand-in vocabulary, for recipes that start from a trained run."""
    from omnidiff.models.hf import OmniDiffConfig, OmniDiffModel

    toks = TokenizerSet.load({m: tokenizers[m] for m in modalities})
    vocab = toks.build_vocab()
    torch.manual_seed(0)
    OmniDiffModel(OmniDiffConfig.from_parts(preset_config("debug", len(vocab)), vocab)).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------- the recipes, shrunk
def shrunk(recipe: Path, standins, out: Path):
    """``recipe`` as train.py would resolve it, with the CPU sizes above and the stand-ins swapped in
    (a recipe's ``model.init_from`` checkpoint too)."""
    tokenizers, datasets = standins
    real = load_config(recipe)
    overrides = {**real.model.overrides, "max_positions": PRESETS[real.model.preset]["max_positions"]}
    init = [f"model.init_from={standin_causal_lm(out.parent / 'causal_lm', tokenizers['text'])}"] \
        if real.model.init_from else []
    if real.model.init_run:  # the architecture comes from the run's model: no overrides
        init = [f"model.init_run={standin_run_model(out.parent / 'init_run', tokenizers, real.tokenizers)}"]
    else:
        init += [f"model.overrides={json.dumps(overrides)}"]
    if real.model.image_encoder_init:  # a pretrained backbone (make encoder): a random one of the same shape
        init += [f"model.image_encoder_init={standin_backbone(out.parent / 'encoder', real.model.image_encoder)}"]
    if real.model.audio_encoder_init:  # a CTC-pretrained speech backbone (make audio-encoder): a random one
        init += [f"model.audio_encoder_init={standin_speech_backbone(out.parent / 'audio_encoder', tokenizers)}"]
    cfg = load_config(recipe, [
        *init, "model.preset=debug", "train.device=cpu", "distributed.dtype=fp32",
        "distributed.zero_stage=0", "distributed.grad_accum=1", "distributed.offload_optimizer=false",
        "data.batch_size=4", "data.num_workers=0", "train.steps=1", "train.eval_every=1", "train.eval_batches=1",
        "train.sample_every=0", "train.task_eval_every=0", "train.save_every=0", "train.log_every=1", "train.tensorboard=false",
        "train.export=false", f"train.out={out}",
        *(f"tokenizers.{m}={tokenizers[m]}" for m in real.tokenizers)])
    for spec in [*cfg.data.tasks, *cfg.val_data]:
        name = Path(spec.path).name
        assert name in datasets, f"{recipe.name} reads {spec.path}: add a stand-in for it to standin_datasets"
        spec.path = str(datasets[name])
    return cfg


def standin_backbone(folder: Path, options: dict) -> Path:
    """A ``backbone.safetensors`` as `make encoder` writes it, with random weights of the recipe's backbone."""
    import timm
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    net = timm.create_model(options["backbone"], pretrained=False, features_only=True,
                            out_indices=(options.get("out_index", 2),))
    path = folder / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata={"backbone": options["backbone"]})
    return path


def standin_speech_backbone(folder: Path, tokenizers: dict) -> Path:
    """A ``backbone.safetensors`` as `make audio-encoder` writes it, random, at the stand-in codec's rate and hop."""
    from omnidiff.models.speech_backbone import SpeechBackbone, SpeechBackboneConfig
    from omnidiff.training.ctc_pretrain import save_speech_backbone

    codec = TokenizerSet.load({"audio": tokenizers["audio"]}).audio.config
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    backbone = SpeechBackbone(SpeechBackboneConfig(sample_rate=codec.sample_rate, hop_length=codec.hop_length))
    save_speech_backbone(backbone, folder / "backbone.safetensors")
    return folder


def test_every_recipe_is_tested():
    assert {p.stem for p in RECIPES} >= {"debug", "demo", "results", "gpu_moe1b", "gpu_moe7b", "text", "text_block"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_starts_on_cpu(recipe, standins, tmp_path):
    cfg = shrunk(recipe, standins, tmp_path / "run")
    summary = train(cfg)  # start-time checks, first batch, one step on the DeepSpeed engine, validation
    assert summary["steps"] == 1 and math.isfinite(summary["loss_history"][0]) and math.isfinite(summary["val"]["elbo"])

    # The mixture's first batch holds a few of the tasks: give every task (and validation set) one
    # batch of its own and a forward at its real answer length.
    toks = TokenizerSet.load(cfg.tokenizers)
    vocab = toks.build_vocab()
    model = Transformer(preset_config(cfg.model.preset, len(vocab), **cfg.model.overrides)).eval()
    loss_cfg = dataclasses.replace(cfg.objective, mask_id=vocab.mask_id)
    prefix_multiple = cfg.objective.block_size if cfg.objective.attention == "block" else 1
    for spec in [*cfg.data.tasks, *cfg.val_data]:
        loader = build_mixture_loader(MixtureConfig(tasks=[spec], batch_size=2, prefix_multiple=prefix_multiple),
                                      toks, vocab)
        batch = next(loader)
        assert (batch["answer_mask"].sum(1) == spec.answer_len).all()
        with torch.no_grad():
            out = diffusion_loss(model, batch, loss_cfg, generator=torch.Generator().manual_seed(0))
        assert math.isfinite(float(out.loss)), f"{recipe.name}: task {spec.task} ({spec.path})"


@pytest.mark.parametrize("task, given, needed", [("t2i", 64, 65), ("vla", 32, 33)])
def test_a_recipe_whose_answers_do_not_fit_cannot_start(standins, tmp_path, task, given, needed):
    # gpu_moe1b.yaml as it was: an image is 64 codes + </image>, an action chunk 8 x 4 + </action>.
    tree = yaml.safe_load((ROOT / "configs" / "gpu_moe1b.yaml").read_text())
    for spec in tree["data"]["tasks"]:
        if spec["task"] == task:
            spec["answer_len"] = given
    recipe = tmp_path / "gpu_moe1b.yaml"
    recipe.write_text(yaml.safe_dump(tree))
    cfg = shrunk(recipe, standins, tmp_path / "run")
    message = f"task '{task}' .*answer_len {given} is too short.*need {needed} tokens"
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert not (tmp_path / "run").exists()  # refused before anything is written
    toks = TokenizerSet.load(cfg.tokenizers)
    with pytest.raises(ValueError, match=message):
        check_task(next(s for s in cfg.data.tasks if s.task == task), toks)
