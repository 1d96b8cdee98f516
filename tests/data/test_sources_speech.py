"""Speech source: every voice speaks audibly for a plausible time, deterministically; bad input is rejected."""

import shutil

import numpy as np
import pytest

from omnidiff.data.builder import MissingSystemPackage
from omnidiff.data.sources import speech

needs_engines = pytest.mark.skipif(
    not all(shutil.which(b) for b in ("espeak-ng", "flite", "text2wave")),
    reason="speech synthesisers missing; run `make data-deps`",
)
TEXT = "Pick up the red block and put it on the table."


@needs_engines
@pytest.mark.parametrize("voice", speech.VOICES, ids=lambda v: v.name)
def test_every_voice_speaks(voice):
    wave = speech.synthesize(TEXT, voice)
    assert wave.dtype == np.float32 and wave.ndim == 1
    seconds = len(wave) / 16000
    assert 1.2 < seconds < 6.0, f"{voice.name}: {seconds:.2f} s for ten words"
    assert np.abs(wave).max() <= 1.0
    assert np.sqrt(np.mean(wave**2)) > 0.02, "audio is (nearly) silent"


@needs_engines
def test_same_text_and_voice_give_the_same_samples_and_voices_differ():
    a = speech.synthesize(TEXT, "espeak-en-us+f3-s165-p60")
    b = speech.synthesize(TEXT, speech.get_voice("espeak-en-us+f3-s165-p60"))
    assert np.array_equal(a, b)
    c = speech.synthesize(TEXT, "espeak-en-us+m3-s150-p40")
    assert len(a) != len(c) or not np.allclose(a, c)


@needs_engines
def test_sample_rate_is_honoured():
    at16 = speech.synthesize("hello there", "flite-slt", sample_rate=16000)
    at8 = speech.synthesize("hello there", "flite-slt", sample_rate=8000)
    assert abs(len(at8) * 2 - len(at16)) <= 2


def test_held_out_voice_is_not_a_training_voice():
    names = [v.name for v in speech.VOICES]
    assert len(set(names)) == len(names)
    assert speech.HELD_OUT_VOICE.name in names
    assert speech.HELD_OUT_VOICE.name not in [v.name for v in speech.TRAIN_VOICES]
    assert {v.engine for v in speech.TRAIN_VOICES} == set(speech.ENGINES)


@pytest.mark.parametrize("text, voice, rate, message", [
    ("hello", "no-such-voice", 16000, "unknown voice"),
    ("   ", "flite-slt", 16000, "non-empty text"),
    ("hello", "flite-slt", 0, "sample_rate"),
    ("hello", speech.Voice("x", "sapi"), 16000, "unknown engine"),
])
def test_bad_input_is_rejected(text, voice, rate, message):
    with pytest.raises(ValueError, match=message):
        speech.synthesize(text, voice, sample_rate=rate)


def test_missing_binary_names_make_data_deps(monkeypatch):
    monkeypatch.setattr("omnidiff.data.builder.shutil.which", lambda name: None)
    with pytest.raises(MissingSystemPackage, match="make data-deps"):
        speech.synthesize("hello", "flite-slt")
