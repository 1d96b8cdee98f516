"""CLIP pretraining of the image encoder's backbone: the contrastive loss falls on image-caption pairs,
the weights it writes are the ones a run starts from, and bad paths or mismatched backbones are refused."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from omnidiff.config import ModelConfig
from omnidiff.models.image_encoder import ImageEncoder, ImageEncoderConfig
from omnidiff.training.clip import load_backbone, main, pretrain
from tests.fixtures import tiny_tokenizers

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    subprocess.run([sys.executable, "data/build_shapes.py", "--out", str(root / "shapes"), "--num", "80", "--size", "32"],
                   cwd=ROOT, check=True, capture_output=True)
    tiny_tokenizers().text.save(root / "text")
    summary = pretrain(str(root / "shapes"), str(root / "text"), str(root / "clip"), image_size=32, epochs=15,
                       batch=16, lr=3e-3)
    return root, summary


def test_contrastive_loss_falls_and_the_summary_is_written(pretrained):
    root, summary = pretrained
    history = summary["loss_history"]
    assert len(history) == summary["steps"] > 0
    assert sum(history[-5:]) / 5 < 0.8 * sum(history[:5]) / 5
    written = json.loads((root / "clip" / "clip.json").read_text())
    assert written["backbone"] == "resnet10t" and set(written["val_after"]) == {"image_to_caption_top1",
                                                                               "caption_to_image_top1"}


def test_the_encoder_starts_from_the_pretrained_trunk(pretrained):
    root, _ = pretrained
    encoder = ImageEncoder(ImageEncoderConfig(backbone="resnet10t", out_index=2, grid=8, image_size=32), dim=32)
    saved = load_file(str(root / "clip" / "backbone.safetensors"))
    load_backbone(encoder, root / "clip")
    state = encoder.backbone.state_dict()
    assert state and all(torch.equal(v, saved[k]) for k, v in state.items())


def test_missing_or_foreign_backbones_are_refused(pretrained, tmp_path, capsys):
    root, _ = pretrained
    other = ImageEncoder(ImageEncoderConfig(backbone="resnet18", out_index=2, grid=8, image_size=32), dim=32)
    with pytest.raises(ValueError, match="holds a 'resnet10t' backbone"):
        load_backbone(other, root / "clip")
    encoder = ImageEncoder(ImageEncoderConfig(backbone="resnet10t", out_index=2, grid=8, image_size=32), dim=32)
    with pytest.raises(ValueError, match="python -m omnidiff.training.clip"):
        load_backbone(encoder, tmp_path / "nothing")
    with pytest.raises(ValueError, match="no model.image_encoder"):
        ModelConfig(image_encoder_init=str(root / "clip"))
    assert main(["--data", str(tmp_path / "no_data"), "--text-tokenizer", str(root / "text"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "does not exist; build it" in capsys.readouterr().err
