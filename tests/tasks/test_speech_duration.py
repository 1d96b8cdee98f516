"""The speaking-rate line that fixes how long TTS speaks (`omnidiff.tasks.speech_duration`)."""

import pytest

from omnidiff.data.builder import write_split
from omnidiff.tasks import get_task
from omnidiff.tasks.speech_duration import (
    characters,
    check_speaking_rate,
    estimated_seconds,
    fit_speaking_rate,
    speaking_rate_of,
)
from tests.tasks.stubs import encode_for_shards, speech_sample


def write_speech_shards(path):
    """Utterances whose length grows with their text: 0.2 s + 0.05 s per character."""
    samples = []
    for i in range(8):
        text = "go " * (i + 1)
        sample = speech_sample(i, seconds=0.2 + 0.05 * characters(text))
        samples.append(encode_for_shards({**sample, "txt": text}))
    write_split(path, "train", iter(samples), shard_size=8)
    return path


def test_fit_recovers_a_line():
    texts = ["ab", "abcd", "abcdefgh", "a b c d e f g h i j"]
    seconds = [0.3 + 0.05 * characters(t) for t in texts]
    intercept, per_char = fit_speaking_rate(texts, seconds)
    assert intercept == pytest.approx(0.3) and per_char == pytest.approx(0.05)
    assert estimated_seconds((intercept, per_char), "abcdefghij") == pytest.approx(0.8)
    assert characters("  two   words ") == 9  # runs of spaces count once, ends are stripped


def test_estimate_has_a_floor():
    assert estimated_seconds((-1.0, 0.01), "hi") == 0.1


@pytest.mark.parametrize("texts,seconds,message", [
    (["a"], [0.5], "at least 2"),
    (["a", "bb"], [0.5], "one duration per text"),
    (["ab", "cd"], [0.5, 0.7], "same length"),
])
def test_fit_refuses_what_has_no_line(texts, seconds, message):
    with pytest.raises(ValueError, match=message):
        fit_speaking_rate(texts, seconds)


@pytest.mark.parametrize("rate", [None, [1.0], ["a", "b"], [0.2, 0.0], [float("nan"), 0.1]])
def test_bad_rates_are_refused(rate):
    with pytest.raises(ValueError, match="speaking_rate"):
        check_speaking_rate(rate)


def test_tts_task_fits_its_rate_from_the_train_split(tmp_path):
    path = write_speech_shards(tmp_path / "speech")
    intercept, per_char = speaking_rate_of(path)
    assert intercept == pytest.approx(0.2, abs=1e-3) and per_char == pytest.approx(0.05, abs=1e-4)
    task = get_task("tts")
    assert task.settings_from_data(str(path)) == {"speaking_rate": [intercept, per_char]}
    given = type(task)(speaking_rate=[0.1, 0.06])
    assert given.speaking_rate == (0.1, 0.06) and given.settings_from_data(str(path)) == {}
    assert task.settings_from_data(str(tmp_path / "missing")) == {}  # an export never fails over it


def test_the_export_settings_carry_the_fitted_rate(tmp_path):
    from omnidiff.data.mixing import TaskDataConfig
    from omnidiff.diffusion.objectives import DiffusionLossConfig
    from omnidiff.pipelines.base import generation_settings, trained_task

    path = write_speech_shards(tmp_path / "speech")
    settings = generation_settings(DiffusionLossConfig(), [TaskDataConfig("tts", str(path), answer_len=64,
                                                                          options={"audio_levels": 1})])
    entry = settings["tasks"]["tts"]
    assert entry["audio_levels"] == 1 and entry["speaking_rate"][1] == pytest.approx(0.05, abs=1e-4)
    task = trained_task("tts", settings)  # what a pipeline rebuilds from the exported settings
    assert task.speaking_rate == pytest.approx((0.2, 0.05), abs=1e-3)
