"""Task scores on known answers: right answers score 1, wrong ones 0, partial ones in between."""

import numpy as np
import pytest

from omnidiff.eval import tasks as T

SCENE = {"size": 64, "background": "black", "objects": [
    {"shape": "circle", "colour": "red", "size": "small", "x": 20, "y": 20, "radius": 8},
    {"shape": "square", "colour": "blue", "size": "large", "x": 44, "y": 44, "radius": 12}]}
SAMPLE = {"__key__": "k1", "png": None, "txt": "a red circle and a blue square",
          "json": {"scene": SCENE, "captions": ["a red circle and a blue square", "a circle and a square"],
                   "qa": [["how many objects are there?", "two"]]}}


def test_caption_scores():
    right = T.caption_scores("A red circle and a blue square.", SAMPLE)
    assert right == {"exact": 1.0, "pair_precision": 1.0, "pair_recall": 1.0, "shape_recall": 1.0}
    wrong = T.caption_scores("a green circle", SAMPLE)
    assert wrong["exact"] == 0.0 and wrong["pair_precision"] == 0.0 and wrong["shape_recall"] == 0.5
    assert wrong["pair_recall"] == 0.0
    sized = T.caption_scores("a small red circle and a large blue triangle", SAMPLE)
    assert sized["pair_precision"] == 0.5 and sized["pair_recall"] == 0.5
    assert T.caption_scores("a red circle", SAMPLE)["pair_recall"] == 0.5  # precise, but names half the scene
    digit = T.caption_scores("a handwritten seven", {"txt": "a handwritten seven", "json": {"label": 7}})
    assert digit["digit_correct"] == 1.0 and digit["exact"] == 1.0


def test_evaluators_with_fixed_answers():
    metrics, records = T.evaluate_caption(lambda images: ["a red circle and a blue square"] * len(images), [SAMPLE] * 3)
    assert metrics["exact"] == 1.0 and metrics["n"] == 3 and records[0]["caption"].startswith("a red")
    metrics, _ = T.evaluate_vqa(lambda images, questions: ["Two"] * len(images), [SAMPLE, SAMPLE])
    assert metrics["accuracy"] == 1.0
    metrics, _ = T.evaluate_vqa(lambda images, questions: ["three"] * len(images), [SAMPLE])
    assert metrics["accuracy"] == 0.0
    with pytest.raises(ValueError, match="no samples with question"):
        T.evaluate_vqa(lambda i, q: [], [{"__key__": "x", "json": {}}])


def test_asr_word_error_rate():
    speech = [{"__key__": "a", "wav": {"array": np.zeros(10), "sample_rate": 16000}, "txt": "turn on the lights"}]
    metrics, records = T.evaluate_asr(lambda waves: ["turn off the lights"], speech)
    assert metrics["wer"] == pytest.approx(0.25) and records[0]["wer"] == pytest.approx(0.25)


def test_code_consistency_counts_synonyms_of_flat_patches():
    import torch
    from PIL import Image

    from omnidiff.eval.image import code_consistency, uniform_patch_codes

    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[:2, 2:] = (255, 0, 0)  # one red 2x2 patch; the rest black
    pixels[2:, :2] = (0, 0, 0)
    pixels[3, 3] = (9, 9, 9)  # the bottom-right patch is not flat: it does not count
    image = Image.fromarray(pixels)
    codes = torch.tensor([[[5, 7], [6, 1]]])  # black patches get codes 5 and 6: two synonyms
    found = uniform_patch_codes([image], codes)
    assert found == {(0, 0, 0): [5, 6], (255, 0, 0): [7]}
    stats = code_consistency(found)
    assert stats["colours"] == 2 and stats["patches"] == 3
    assert stats["distinct_codes_per_colour"] == (2 * 2 + 1 * 1) / 3
    assert abs(stats["worst_perplexity"] - 2.0) < 1e-9
    assert code_consistency({(0, 0, 0): [3, 3, 3]})["perplexity_per_colour"] == 1.0
    with pytest.raises(ValueError, match="no flat-colour patches"):
        code_consistency({})


def test_read_objects_finds_every_object_of_original_renders_wherever_it_is():
    from omnidiff.data.sources import shapes
    from omnidiff.eval.image import pair_match, read_objects

    cfg = shapes.ShapesConfig(size=64)
    matched = wanted = 0
    for i in range(60):
        scene = shapes.random_scene(np.random.default_rng([7, i]), cfg)
        truth = [(o["colour"], o["shape"]) for o in scene["objects"]]
        m, found, want = pair_match(read_objects(shapes.render_scene(scene, cfg)), truth)
        assert found == want
        matched, wanted = matched + m, wanted + want
    assert matched == wanted  # the reader is exact on the renders; any loss on generated images is the model's
    moved = dict(SCENE, objects=[dict(SCENE["objects"][0], x=44, y=20), dict(SCENE["objects"][1], x=20, y=44)])
    assert sorted(read_objects(shapes.render_scene(moved))) == [("blue", "square"), ("red", "circle")]
    assert pair_match([("red", "circle"), ("red", "circle")], [("red", "circle")]) == (1, 2, 1)


def test_the_codec_round_trip_keeps_the_clip_length_and_uses_only_the_levels_asked_for():
    from tests.fixtures import tiny_tokenizers

    tok = tiny_tokenizers().audio
    rng = np.random.default_rng(0)
    wav = {"array": (0.1 * rng.standard_normal(8000)).astype(np.float32), "sample_rate": 16000}
    both, rate = T.codec_round_trip(tok, wav, None)
    first, _ = T.codec_round_trip(tok, wav, 1)
    assert rate == 16000 and abs(len(both) - 8000) <= tok.config.hop_length * tok.config.downsample
    assert len(first) == len(both) and not np.allclose(first, both)  # the second level changes the sound
    again, _ = T.codec_round_trip(tok, wav, 1)
    assert np.array_equal(first, again)
