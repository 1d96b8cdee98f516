"""The shapes, digits and speech builders' own logic (splits, held-out voice, members), run on stand-in sources.

The real sources (`omnidiff.data.sources.shapes`, ``mnist``, ``speech``) are tested with their own
code; here tiny stand-ins with the same interface are swapped in, so these tests check only what
the builders add and stay fast.
"""

import json
import types
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

import omnidiff.data.sources as sources_pkg
from omnidiff.data.shards import ShardStream, split_shards
from tests.data.test_builders import run_builder


def install(monkeypatch, name: str, **attrs):
    module = types.ModuleType(f"omnidiff.data.sources.{name}")
    module.__dict__.update(attrs)
    monkeypatch.setitem(__import__("sys").modules, module.__name__, module)
    monkeypatch.setattr(sources_pkg, name, module, raising=False)


def read_all(folder, split):
    count = json.loads((folder / "manifest.json").read_text())["splits"][split]["count"]
    stream = iter(ShardStream(split_shards(folder, split), shuffle=False))
    return [next(stream) for _ in range(count)]


@dataclass
class FakeShapesConfig:
    size: int = 64
    min_objects: int = 1
    max_objects: int = 3


def fake_scene(rng, cfg):
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    return {"objects": [{"shape": "circle", "colour": "red", "x": float(rng.random())} for _ in range(n)]}


def test_shapes_builder(tmp_path, monkeypatch):
    install(monkeypatch, "shapes", ShapesConfig=FakeShapesConfig, random_scene=fake_scene,
            render_scene=lambda scene, cfg: Image.new("RGB", (cfg.size, cfg.size), (len(scene["objects"]) * 60, 0, 0)),
            captions=lambda scene, rng: [f"{len(scene['objects'])} red circles", "red circles"],
            questions=lambda scene, rng: [("how many circles?", str(len(scene["objects"])))])
    out = tmp_path / "shapes"
    assert run_builder("shapes", "--out", str(out), "--num", "30", "--size", "32", "--max-objects", "2") == 0
    samples = read_all(out, "train")
    assert len(samples) == 26 and samples[0]["png"].size == (32, 32)
    s = samples[0]
    n = len(s["json"]["scene"]["objects"])
    assert 1 <= n <= 2 and s["txt"] == f"{n} red circles" and s["json"]["qa"] == [["how many circles?", str(n)]]
    assert run_builder("shapes", "--out", str(tmp_path / "bad"), "--num", "5", "--min-objects", "3",
                       "--max-objects", "2") == 1


def test_digits_builder_keeps_mnist_test_images_for_test(tmp_path, monkeypatch):
    def load_mnist(split):
        n, base = (50, 0) if split == "train" else (20, 1000)
        return np.zeros((n, 28, 28), np.uint8), (np.arange(n) + base) % 10

    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    install(monkeypatch, "mnist", load_mnist=load_mnist, DIGIT_WORDS=words,
            digit_image=lambda img, size: Image.fromarray(img).convert("RGB").resize((size, size)))
    out = tmp_path / "digits"
    assert run_builder("digits", "--out", str(out), "--num", "40", "--size", "16") == 0
    train, val = read_all(out, "train"), read_all(out, "val")
    assert not {s["json"]["source_index"] for s in train} & {s["json"]["source_index"] for s in val}
    s = train[0]
    assert s["cls"] == s["json"]["label"] and s["txt"] == f"a handwritten {words[s['cls']]}"
    assert ["what digit is this?", words[s["cls"]]] in s["json"]["qa"]
    assert run_builder("digits", "--out", str(tmp_path / "big"), "--num", "100") == 1  # more than the 50+20 images


def test_speech_builder_holds_the_test_voice_out(tmp_path, monkeypatch):
    def synthesize(text, voice, sample_rate=16000):
        return (0.1 * np.sin(np.arange(len(text) * 400) / 5)).astype(np.float32)

    install(monkeypatch, "speech", VOICES=["espeak-a", "espeak-b", "flite-c"], HELD_OUT_VOICE="flite-c",
            synthesize=synthesize)
    out = tmp_path / "speech"
    assert run_builder("speech", "--out", str(out), "--num", "24", "--mix", "digits:1,command:1") == 0
    train, test = read_all(out, "train"), read_all(out, "test")
    assert {s["json"]["voice"] for s in train} <= {"espeak-a", "espeak-b"}
    assert {s["json"]["voice"] for s in test} == {"flite-c"}
    s = train[0]
    assert s["wav"]["sample_rate"] == 16000 and len(s["wav"]["array"]) == len(s["json"]["text"]) * 400
    assert s["txt"] == s["json"]["text"].lower() and s["json"]["kind"] in ("digits", "command")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["held_out_voice"] == "flite-c" and "flite-c" not in manifest["voices"]


def test_speech_builder_speaks_train_and_val_with_the_chosen_voice(tmp_path, monkeypatch):
    install(monkeypatch, "speech", VOICES=["espeak-a", "espeak-b", "flite-c"], HELD_OUT_VOICE="flite-c",
            synthesize=lambda text, voice, sample_rate=16000: np.full(len(text) * 400, 0.1, np.float32))
    out = tmp_path / "one_voice"
    assert run_builder("speech", "--out", str(out), "--num", "24", "--mix", "digits:1", "--voices", "espeak-b") == 0
    assert {s["json"]["voice"] for split in ("train", "val") for s in read_all(out, split)} == {"espeak-b"}
    assert {s["json"]["voice"] for s in read_all(out, "test")} == {"flite-c"}
    assert json.loads((out / "manifest.json").read_text())["voices"] == ["espeak-b"]


@pytest.mark.parametrize("argv, message", [(["--mix", "poems:1"], "unknown speech kind"),
                                           (["--max-seconds", "0.01"], "raise it"),
                                           (["--voices", "c"], "training voices: ['a']"),
                                           (["--voices", ","], "in --voices")])
def test_speech_builder_bad_settings(tmp_path, monkeypatch, capsys, argv, message):
    install(monkeypatch, "speech", VOICES=["a", "b"], HELD_OUT_VOICE="b",
            synthesize=lambda text, voice, sample_rate=16000: np.zeros(16000, np.float32))
    assert run_builder("speech", "--out", str(tmp_path / "s"), "--num", "5", "--mix", "digits:1", *argv) == 1
    assert message in capsys.readouterr().err
