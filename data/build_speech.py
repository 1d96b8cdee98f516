"""Build synthetic speech with transcripts: ``python data/build_speech.py --out runs/data/speech --num 2000``.

Texts are of three kinds, mixed by ``--mix``: short sentences cut from the offline corpora (KJV,
fortunes), digit strings read as words ("four seven two") and short spoken commands. Each text is
synthesised at 16 kHz mono by `omnidiff.data.sources.speech` with one of its voices (espeak-ng
variants, speeds and pitches, flite, festival). The held-out voice (``HELD_OUT_VOICE``) never
appears in train or val: the test split is spoken by it alone, to measure generalisation to an
unseen voice. ``--voices`` narrows train and val to the named voices: one voice gives a
single-speaker set, what text to speech learns from (a text then has one right recording, not one
per voice). Utterances longer than ``--max-seconds`` are replaced by another text.

Sample: ``wav`` (16-bit PCM), ``txt`` normalised transcript (lower case, no punctuation: what
ASR learns to write), ``json`` ``{"voice", "kind", "text" (as synthesised), "seconds"}``.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from omnidiff.data.builder import build_dataset, parse_args, run_builder  # noqa: E402

SAMPLE_RATE = 16000
KINDS = ("sentence", "digits", "command")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VERBS = ("turn on", "turn off", "open", "close", "pick up", "put down", "move", "find", "show me", "clean")
OBJECTS = ("the lights", "the door", "the window", "the red block", "the blue cup", "the music", "the radio",
           "the green ball", "the drawer", "the kitchen fan", "the small box", "the heater")


def add_args(parser):
    parser.add_argument("--mix", default="sentence:0.6,digits:0.2,command:0.2", help="kind:weight,... over " + ",".join(KINDS))
    parser.add_argument("--max-seconds", type=float, default=5.0, help="longest utterance kept")
    parser.add_argument("--voices", default=None,
                        help="comma-separated voice names for the train and val splits (default: every voice but "
                             "the held-out one); one voice makes a single-speaker set, e.g. for text to speech")


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        kind, _, weight = part.partition(":")
        if kind.strip() not in KINDS:
            raise ValueError(f"unknown speech kind {kind.strip()!r} in --mix; available: {list(KINDS)}")
        mix[kind.strip()] = float(weight or 1)
    if sum(mix.values()) <= 0 or min(mix.values()) < 0:
        raise ValueError(f"--mix weights must be >= 0 with a positive sum, got {mix}")
    return mix


def normalise(text: str) -> str:
    """What ASR is trained to write: lower case words, apostrophes kept, other punctuation dropped."""
    return re.sub(r"\s+", " ", re.sub(r"[^a-z' ]", " ", text.lower())).strip()


def corpus_sentences() -> list[str]:
    """Short plain sentences (3-12 words, letters and simple punctuation) from the KJV and fortunes."""
    from omnidiff.data.sources.text import load_corpus

    out = []
    for name in ("kjv", "fortunes"):
        for doc in load_corpus(name):
            for sentence in re.split(r"(?<=[.!?;:])\s+", doc):
                sentence = sentence.strip(" ;:")
                if re.fullmatch(r"[A-Za-z ,'.!?-]+", sentence) and 3 <= len(sentence.split()) <= 12:
                    out.append(sentence)
    return sorted(set(out))


def make_text(kind: str, rng: np.random.Generator, sentences: list[str]) -> str:
    if kind == "sentence":
        return sentences[int(rng.integers(len(sentences)))]
    if kind == "digits":
        return " ".join(DIGITS[int(d)] for d in rng.integers(0, 10, int(rng.integers(3, 8))))
    return f"{VERBS[int(rng.integers(len(VERBS)))]} {OBJECTS[int(rng.integers(len(OBJECTS)))]}"


def voice_name(voice) -> str:
    return str(getattr(voice, "name", voice))


def chosen_voices(text: str, seen_voices: list) -> list:
    """The training voices named in ``text`` (comma-separated); ValueError naming the valid ones."""
    by_name = {voice_name(v): v for v in seen_voices}
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        raise ValueError(f"unknown or held-out voice(s) {unknown or text!r} in --voices; training voices: {sorted(by_name)}")
    return [by_name[n] for n in dict.fromkeys(names)]


def wav_bytes(wave: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1, 1), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def main() -> dict:
    args = parse_args(__doc__.splitlines()[0], add_args, default_num=2000)
    from omnidiff.data.sources import speech  # after the argument checks: they need no source

    mix = parse_mix(args.extra["mix"])
    max_seconds = args.extra["max_seconds"]
    if max_seconds <= 0:
        raise ValueError(f"--max-seconds must be positive, got {max_seconds}")
    kinds, weights = list(mix), np.array(list(mix.values())) / sum(mix.values())
    sentences = corpus_sentences() if mix.get("sentence", 0) > 0 else []
    held_out = speech.HELD_OUT_VOICE
    seen_voices = [v for v in speech.VOICES if voice_name(v) != voice_name(held_out)]
    if not seen_voices:
        raise ValueError("the speech source offers no voice besides the held-out one")
    if args.extra["voices"]:
        seen_voices = chosen_voices(args.extra["voices"], seen_voices)

    def samples(split: str, n: int, seed: int):
        voices = [held_out] if split == "test" else seen_voices
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            voice = voices[int(rng.integers(len(voices)))]
            for _ in range(20):
                kind = kinds[int(rng.choice(len(kinds), p=weights))]
                text = make_text(kind, rng, sentences)
                wave = np.asarray(speech.synthesize(text, voice, sample_rate=SAMPLE_RATE), dtype=np.float32)
                if 0 < len(wave) <= max_seconds * SAMPLE_RATE:
                    break
            else:
                raise ValueError(f"no utterance under --max-seconds {max_seconds} after 20 texts; raise it")
            seconds = round(len(wave) / SAMPLE_RATE, 3)
            yield {"__key__": f"{split}-{i:08d}", "wav": wav_bytes(wave), "txt": normalise(text),
                   "json": {"voice": voice_name(voice), "kind": kind, "text": text, "seconds": seconds}}

    return build_dataset(args, "speech", samples, sources=["debian:espeak-ng,flite,festival", "debian:bible-kjv,fortunes"],
                         extra_manifest={"sample_rate": SAMPLE_RATE, "mix": mix, "max_seconds": max_seconds,
                                         "held_out_voice": voice_name(held_out),
                                         "voices": [voice_name(v) for v in seen_voices]})


if __name__ == "__main__":
    run_builder(main)
