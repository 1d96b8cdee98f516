"""How long speech for a text should last: the total-duration rule of non-autoregressive TTS.

A masked-diffusion speaker fills a fixed number of answer columns. Left to end the audio itself, an
undertrained model finds ``</audio>`` and ``<eos>`` the most certain tokens everywhere and a
confidence-ordered sampler commits them first: no frames at all. E2-TTS and F5-TTS avoid this by
fixing the total duration before decoding, from the text's length. Here the rule is a line,
``seconds = intercept + per_char * characters``, fitted by least squares on the training split's
(transcript, recording) pairs; the exported model keeps it with its task settings
(``tasks.tts.speaking_rate``) and `TTSPipeline` lays out that many audio columns, then ``</audio>``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_FIT_SAMPLES = 512  # the line has two parameters; a few hundred utterances fix it


def characters(text: str) -> int:
    """The length the rule counts: characters of the stripped text, runs of spaces as one."""
    return len(" ".join(text.split()))


def fit_speaking_rate(texts: list[str], seconds: list[float]) -> tuple[float, float]:
    """``(intercept_s, seconds_per_char)`` of the least-squares line through the pairs.

    Raises:
        ValueError: fewer than two pairs, lengths that differ, or texts all of one length (no slope).
    """
    if len(texts) != len(seconds):
        raise ValueError(f"need one duration per text, got {len(seconds)} for {len(texts)}")
    if len(texts) < 2:
        raise ValueError(f"fitting a speaking rate needs at least 2 utterances, got {len(texts)}")
    x = np.array([characters(t) for t in texts], dtype=np.float64)
    y = np.asarray(seconds, dtype=np.float64)
    if np.ptp(x) == 0:
        raise ValueError("every transcript has the same length; a speaking rate cannot be fitted")
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def speaking_rate_of(path: str | Path, split: str = "train", limit: int = MAX_FIT_SAMPLES) -> tuple[float, float]:
    """The speaking rate fitted on the first ``limit`` utterances of a speech dataset's ``split``."""
    from omnidiff.data.shards import read_split

    texts, seconds = [], []
    for sample in read_split(path, split, limit):
        wav, text = sample.get("wav"), sample.get("txt")
        if isinstance(text, str) and text.strip() and isinstance(wav, dict):
            texts.append(text)
            seconds.append(len(wav["array"]) / float(wav["sample_rate"]))
    return fit_speaking_rate(texts, seconds)


def check_speaking_rate(rate) -> tuple[float, float]:
    """``rate`` as ``(intercept_s, seconds_per_char)``, or a ValueError saying what is wrong."""
    try:
        intercept, per_char = (float(v) for v in rate)
    except (TypeError, ValueError):
        raise ValueError(f"speaking_rate must be [intercept_seconds, seconds_per_character], got {rate!r}") from None
    if not np.isfinite([intercept, per_char]).all() or per_char <= 0:
        raise ValueError(f"speaking_rate needs a finite intercept and a positive seconds per character, got {rate!r}")
    return intercept, per_char


def estimated_seconds(rate, text: str, minimum: float = 0.1) -> float:
    """Seconds of speech ``rate`` gives ``text`` (at least ``minimum``)."""
    intercept, per_char = check_speaking_rate(rate)
    return max(minimum, intercept + per_char * characters(text))
