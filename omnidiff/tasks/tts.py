"""Text to speech: ``<bos><tts> transcript <audio> | audio codes </audio> <eos>...``.

Audio is never cut mid-utterance (that would teach the model to drop words): a recording longer
than ``answer_len`` tokens rejects the sample with a clear message. ``uncond_prob`` > 0 replaces the
transcript with ``<uncond>`` for classifier-free guidance, as in text_to_image. ``audio_levels``
keeps the first k residual codec levels of the answer (``None``: all): k/levels as many tokens to
generate, decoded from the coarse levels alone. ``speaking_rate`` ``[intercept_s, seconds_per_char]``
fixes how long the speech for a text lasts when decoding (`omnidiff.tasks.speech_duration`); left
unset, the export fits it on the training split.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from omnidiff.data.formatting import audio_ids, fit_answer, need, require, sample_rng, specials, text_ids
from omnidiff.tasks.asr import transcript
from omnidiff.tasks.base import MIN_TEXT_ANSWER_LEN
from omnidiff.tasks.speech_duration import check_speaking_rate, speaking_rate_of

log = logging.getLogger(__name__)


@dataclass
class TTSTask:
    name: ClassVar[str] = "tts"
    modalities: ClassVar[tuple[str, ...]] = ("audio", "text")
    uncond_prob: float = 0.0
    audio_levels: int | None = None
    speaking_rate: tuple[float, float] | None = None

    def __post_init__(self):
        if self.speaking_rate is not None:
            self.speaking_rate = check_speaking_rate(self.speaking_rate)

    def settings_from_data(self, path: str) -> dict:
        """What the exported model keeps from its training data: the speaking rate of ``path``'s
        train split, unless the recipe set one."""
        if self.speaking_rate is not None:
            return {}
        try:
            return {"speaking_rate": list(speaking_rate_of(path))}
        except (OSError, ValueError) as err:  # never lose an export over it: the model then ends the audio itself
            log.warning("no speaking rate for %s (%s); TTS decoding will let the model end the audio", path, err)
            return {}

    def prompt(self, toks, vocab, text: str | None) -> torch.Tensor:
        """The prefix for a transcript; ``None`` gives the unconditional prefix (``<uncond>``)."""
        if text is None:
            condition = specials(vocab, "<uncond>")
        elif not isinstance(text, str) or not text.strip():
            raise ValueError("the text to speak is empty")
        else:
            condition = text_ids(toks, vocab, text.strip())
        return torch.cat([specials(vocab, "<bos>", "<tts>"), condition, specials(vocab, "<audio>")])

    def format(self, sample: dict, toks, vocab, answer_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        text = transcript(sample)
        uncond = self.uncond_prob > 0 and sample_rng(sample, "uncond").random() < self.uncond_prob
        prefix = self.prompt(toks, vocab, None if uncond else text)
        answer = torch.cat([audio_ids(toks, vocab, require(sample, "wav"), self.audio_levels), specials(vocab, "</audio>")])
        return prefix, fit_answer(answer, answer_len, vocab.eos_id, f"the audio of sample {sample.get('__key__')}")

    def needed_answer_len(self, toks, manifest: dict) -> int:
        """The codes of the dataset's longest allowed clip and ``</audio>``.

        build_speech.py records that bound (``max_seconds``, ``sample_rate``); without it the length
        is unknown here and each sample is checked when it is formatted.
        """
        need(toks, "audio").check_levels(self.audio_levels)
        if "max_seconds" not in manifest:
            return MIN_TEXT_ANSWER_LEN
        rate = int(manifest.get("sample_rate", 16000))
        longest = math.floor(float(manifest["max_seconds"]) * rate)  # the builder keeps len(wave) <= this
        return need(toks, "audio").num_tokens(longest, rate, self.audio_levels) + 1
