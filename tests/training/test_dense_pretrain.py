"""Dense scene-label pretraining of the image encoder's backbone: cell labels follow the scene's layout,
training learns them (held-out accuracy rises), the written trunk is what a run starts from, bad input is refused."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omnidiff.data.sources import shapes
from omnidiff.models.image_encoder import ImageEncoder, ImageEncoderConfig
from omnidiff.training.clip import load_backbone
from omnidiff.training.dense_pretrain import ATTRIBUTES, cell_labels, main, pretrain

ROOT = Path(__file__).resolve().parents[2]


def _label(attribute: str, value: str) -> int:
    return 1 + ATTRIBUTES[attribute].index(value)


def test_cells_are_labelled_with_the_object_that_covers_them():
    red_circle = {"shape": "circle", "colour": "red", "size": "large", "x": 16, "y": 16, "radius": 12}
    blue_square = {"shape": "square", "colour": "blue", "size": "small", "x": 52, "y": 52, "radius": 8}
    labels = cell_labels({"size": 64, "background": "black", "objects": [red_circle, blue_square]}, grid=8, image_size=64)
    assert labels.shape == (len(ATTRIBUTES), 8, 8)
    colour, shape, size, digit = labels
    assert digit.sum() == 0  # a shape scene leaves the digit head at "none"
    # the circle's centre (16, 16) falls in cell (row 2, column 2) in y, x order; the square's in (6, 6)
    assert (colour[2, 2], shape[2, 2], size[2, 2]) == (_label("colour", "red"), _label("shape", "circle"),
                                                       _label("size", "large"))
    assert (colour[6, 6], shape[6, 6], size[6, 6]) == (_label("colour", "blue"), _label("shape", "square"),
                                                       _label("size", "small"))
    assert colour[0, 7] == shape[0, 7] == size[0, 7] == 0  # an empty corner is background
    assert colour[6, 0] == 0 and colour[0, 6] == 0
    # labels follow the scene's own coordinates when the image is drawn at another size
    half = cell_labels({"size": 64, "background": "black", "objects": [red_circle]}, grid=4, image_size=32)
    assert half[0, 1, 1] == _label("colour", "red") and half[0, 3, 3] == 0


def test_a_grid_that_does_not_divide_the_image_is_refused():
    scene = shapes.random_scene(__import__("numpy").random.default_rng(0), shapes.ShapesConfig())
    with pytest.raises(ValueError, match="multiple of the grid side"):
        cell_labels(scene, grid=7, image_size=64)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("dense")
    subprocess.run([sys.executable, "data/build_shapes.py", "--out", str(root / "shapes"), "--num", "120", "--size", "32"],
                   cwd=ROOT, check=True, capture_output=True)
    summary = pretrain(str(root / "shapes"), str(root / "enc"), image_size=32, grid=4, epochs=10, batch=16, lr=3e-3)
    return root, summary


def test_training_learns_the_cell_labels(pretrained):
    root, summary = pretrained
    history = summary["loss_history"]
    assert len(history) == summary["steps"] > 0
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5
    before, after = summary["val_object_cell_accuracy_before"], summary["val_object_cell_accuracy_after"]
    assert after["colour"] > before["colour"] + 0.3 and after["colour"] > 0.6
    written = json.loads((root / "enc" / "dense.json").read_text())
    assert written["backbone"] == "resnet10t" and written["grid"] == 4


def test_the_encoder_starts_from_the_pretrained_trunk(pretrained):
    from safetensors.torch import load_file

    root, _ = pretrained
    encoder = ImageEncoder(ImageEncoderConfig(backbone="resnet10t", out_index=2, grid=4, image_size=32), dim=32)
    load_backbone(encoder, root / "enc")
    saved = load_file(str(root / "enc" / "backbone.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in encoder.backbone.state_dict().items())


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist; build it" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--epochs", "0"]) == 2
    assert "epochs >= 1" in capsys.readouterr().err


def test_digit_cells_are_labelled_where_the_ink_is():
    from omnidiff.training.dense_pretrain import digit_cell_labels

    image = __import__("numpy").zeros((32, 32, 3), dtype="uint8")
    image[0:16, 0:8] = 255  # ink over the top-left column of 8-px cells
    labels = digit_cell_labels(image, 7, grid=4)
    digit = labels[list(ATTRIBUTES).index("digit")]
    assert digit[0, 0] == digit[1, 0] == 8 and digit[2, 0] == 0 and digit[0, 1] == 0
    assert labels[list(ATTRIBUTES).index("colour")].sum() == 0  # a digit leaves the shape heads at "none"
    with pytest.raises(ValueError, match="0-9"):
        digit_cell_labels(image, 12, grid=4)
