"""Synthetic English speech from the Debian synthesisers: espeak-ng, flite and festival.

`VOICES` is a fixed list of `Voice`s (engine + voice id + speed + pitch) chosen to vary accent,
sex, rate and pitch, because a speech tokenizer or ASR model trained on one voice learns that
voice rather than speech. `HELD_OUT_VOICE` is a flite voice that no training split uses, so
``data/build_speech.py`` and the audio tokenizer benchmark can measure generalisation to an
unseen speaker with a different synthesis method. It is *not* part of `VOICES`' training use,
but it is listed there so every voice can be looked up by name (builders filter it out).

`synthesize(text, voice)` runs the engine in a subprocess, writing a WAV to a temporary folder,
reads it with soundfile (torchaudio's loader needs FFmpeg), resamples to ``sample_rate`` with
torchaudio and scales the peak to `PEAK` so that every engine arrives at the same level (festival
writes about a third of espeak's amplitude). The same text and voice always give the same samples.
The binaries come from ``make data-deps``.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnidiff.data.builder import require_binary

ENGINES = ("espeak-ng", "flite", "festival")
PACKAGE_OF = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival"}
PEAK = 0.9  # target peak amplitude after synthesis
_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    Args:
        name: unique, stable name used in manifests (``"espeak-en-us+f3-s160-p60"``, ``"flite-rms"``).
        engine: one of `ENGINES`.
        voice: the engine's own voice id (espeak ``en-us+f3``, flite ``slt``; unused for festival).
        speed: espeak words per minute (ignored by flite and festival).
        pitch: espeak pitch 0-99 (ignored by flite and festival).
    """

    name: str
    engine: str
    voice: str = ""
    speed: int = 160
    pitch: int = 50

    def __str__(self) -> str:
        return self.name


def _espeak(voice: str, speed: int, pitch: int) -> Voice:
    return Voice(f"espeak-{voice}-s{speed}-p{pitch}", "espeak-ng", voice, speed, pitch)


# Accents x variants x rates x pitches; no whisper/croak variants (unintelligible to ASR scorers).
VOICES: list[Voice] = [
    _espeak("en-us", 160, 50),
    _espeak("en-us+f3", 165, 60),
    _espeak("en-us+m3", 150, 40),
    _espeak("en-us+f2", 175, 70),
    _espeak("en-us+m1", 140, 35),
    _espeak("en+f4", 155, 65),
    _espeak("en+m2", 170, 45),
    _espeak("en-gb+f1", 150, 55),
    _espeak("en-gb+m4", 165, 42),
    _espeak("en-gb-x-rp+f5", 160, 62),
    _espeak("en-gb-scotland+m3", 145, 48),
    _espeak("en-029+m5", 155, 52),
    _espeak("en-us-nyc+f3", 180, 58),
    Voice("flite-kal16", "flite", "kal16"),
    Voice("flite-slt", "flite", "slt"),
    Voice("flite-awb", "flite", "awb"),
    Voice("festival-slt-hts", "festival", "cmu_us_slt_arctic_hts"),
    Voice("flite-rms", "flite", "rms"),
]
HELD_OUT_VOICE: Voice = VOICES[-1]
TRAIN_VOICES: list[Voice] = [v for v in VOICES if v.name != HELD_OUT_VOICE.name]


def get_voice(voice: Voice | str) -> Voice:
    """A `Voice` from a `Voice` or its name; ValueError listing the known names otherwise."""
    if isinstance(voice, Voice):
        if voice.engine not in ENGINES:
            raise ValueError(f"voice {voice.name!r} has unknown engine {voice.engine!r}; engines: {list(ENGINES)}")
        return voice
    name = str(voice)
    for known in VOICES:
        if known.name == name:
            return known
    raise ValueError(f"unknown voice {name!r}; known voices: {[v.name for v in VOICES]}")


def _command(voice: Voice, text_file: Path, wav_file: Path) -> list[str]:
    binary = require_binary(voice.engine if voice.engine != "festival" else "text2wave", PACKAGE_OF[voice.engine])
    if voice.engine == "espeak-ng":
        return [binary, "-v", voice.voice, "-s", str(voice.speed), "-p", str(voice.pitch),
                "-f", str(text_file), "-w", str(wav_file)]
    if voice.engine == "flite":
        return [binary, "-voice", voice.voice, "-f", str(text_file), "-o", str(wav_file)]
    command = [binary, str(text_file), "-o", str(wav_file)]
    if voice.voice:
        command[2:2] = ["-eval", f"(voice_{voice.voice})"]
    return command


def synthesize(text: str, voice: Voice | str, sample_rate: int = 16000) -> np.ndarray:
    """Speak ``text`` with ``voice``: mono float32 samples in [-1, 1] at ``sample_rate`` Hz.

    Args:
        text: what to say (non-empty; written to a file, so leading dashes or quotes are safe).
        voice: a `Voice` from `VOICES` or its name.
        sample_rate: output rate; the engine's native rate (8-32 kHz) is resampled to it.

    Raises:
        ValueError: empty text, unknown voice, bad sample rate, or the engine produced no audio.
        MissingSystemPackage: the engine is not installed (run ``make data-deps``).
    """
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"synthesize needs non-empty text, got {text!r}")
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    voice = get_voice(voice)
    with tempfile.TemporaryDirectory(prefix="omnidiff-tts-") as tmp:
        text_file, wav_file = Path(tmp) / "text.txt", Path(tmp) / "speech.wav"
        text_file.write_text(" ".join(text.split()) + "\n", encoding="utf-8")
        result = subprocess.run(_command(voice, text_file, wav_file), capture_output=True, text=True,
                                timeout=_TIMEOUT_SECONDS)
        if result.returncode != 0 or not wav_file.exists():
            raise ValueError(f"{voice.engine} failed for voice {voice.name!r} (exit {result.returncode}): "
                             f"{result.stderr.strip()[:300]}")
        wave, native_rate = sf.read(str(wav_file), dtype="float32", always_2d=True)
    wave = wave.mean(axis=1)
    if wave.size == 0:
        raise ValueError(f"{voice.engine} produced no audio for voice {voice.name!r} and text {text!r}")
    if native_rate != sample_rate:
        wave = AF.resample(torch.from_numpy(wave), native_rate, sample_rate).numpy()
    peak = float(np.abs(wave).max())
    if peak > 0:
        wave = wave * (PEAK / peak)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)
