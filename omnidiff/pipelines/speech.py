"""Speech: ``ASRPipeline(waves) -> transcripts`` and ``TTSPipeline(texts) -> waves``.

Audio goes in and comes out as ``{"array": float32 [T], "sample_rate": int}`` (the shard format);
input at any rate or channel count is checked and mixed down by `inputs.as_wave`.
Speech synthesis decodes codec tokens level by level in the interleaved order the tokenizer uses
(`cyclic_layout`) over the levels the model was trained to generate (``audio_levels``). How long
it speaks is fixed before decoding (``seconds``, else the model's speaking rate applied to the
text: `omnidiff.tasks.speech_duration`); a model without a speaking rate stops at ``</audio>`` or
``<eos>``, and an incomplete last frame is dropped (an answer that ends at once gives an empty array).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from omnidiff.pipelines.base import DiffusionPipeline
from omnidiff.pipelines.inputs import as_wave
from omnidiff.sampling import cyclic_layout


class ASRPipeline(DiffusionPipeline):
    task = "asr"

    def __call__(self, audio, *, answer_len: int | None = None, seed: int = 0, config=None) -> list[str]:
        items = audio if isinstance(audio, list) else [audio]
        if not items:
            raise ValueError("no audio given")
        waves = [as_wave(a) for a in items]
        prompts = [self.task_impl.prompt(self.tokenizers, self.vocab, w) for w in waves]
        answers, _ = self.decode(prompts, self.answer_len(answer_len, 64), seed=seed, config=config, audio=waves)
        return [self.text_of(a) for a in answers]


class TTSPipeline(DiffusionPipeline):
    task = "tts"

    def __call__(self, texts, *, answer_len: int | None = None, guidance_scale: float | None = None, seed: int = 0,
                 config=None, seconds=None) -> list[dict]:
        """Speech for each text. ``seconds`` (one number, or one per text) fixes how long each lasts;
        by default the model's speaking rate (`speech_duration`) sets it from the text's length, and a
        model exported without one ends the audio itself."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no text given")
        tok, vocab = self.tokenizers.audio, self.vocab
        levels = tok.check_levels(self.task_impl.audio_levels)
        names = tok.range_names()[:levels]
        length = self.answer_len(answer_len, 512)
        prompts = [self.task_impl.prompt(self.tokenizers, vocab, t) for t in texts]
        durations = self.durations(texts, seconds, levels, length)
        ends = ("</audio>", "<eos>") if durations is None else ()  # a fixed duration leaves only codes to decode
        layout = cyclic_layout(vocab, names, length, specials=ends)
        answers, _ = self.decode(prompts, length, seed=seed, config=config, answer_layout=layout,
                                 guidance_scale=guidance_scale, uncond_prompt=self.task_impl.prompt(self.tokenizers, vocab, None),
                                 answer_init=None if durations is None else self.duration_layout(durations, length))
        out = []
        stops = torch.tensor([vocab.special("</audio>"), vocab.eos_id])
        for a in answers:
            end = int(torch.isin(a, stops).int().argmax()) if torch.isin(a, stops).any() else len(a)
            end -= end % len(names)
            if end == 0:  # the model ended the audio at once: an empty recording, not an error
                out.append({"array": np.zeros(0, np.float32), "sample_rate": int(tok.config.sample_rate)})
                continue
            wave, rate = tok.decode(tok.from_global(vocab, a[:end], levels))
            out.append({"array": np.asarray(wave, dtype=np.float32), "sample_rate": int(rate)})
        return out

    def durations(self, texts: list[str], seconds, levels: int, length: int) -> list[int] | None:
        """Audio columns for each text (whole frames of ``levels`` codes, at most ``length - 1``), or None
        when neither ``seconds`` nor the model's speaking rate says how long to speak."""
        from omnidiff.tasks.speech_duration import estimated_seconds

        if seconds is not None:
            given = [seconds] * len(texts) if isinstance(seconds, (int, float)) else list(seconds)
            if len(given) != len(texts) or not all(isinstance(s, (int, float)) and not isinstance(s, bool)
                                                   and math.isfinite(s) and s > 0 for s in given):
                raise ValueError(f"seconds must be a positive number or one per text ({len(texts)}), got {seconds!r}")
        elif self.task_impl.speaking_rate is not None:
            given = [estimated_seconds(self.task_impl.speaking_rate, t) for t in texts]
        else:
            return None
        tok = self.tokenizers.audio
        rate = int(tok.config.sample_rate)
        columns = [tok.num_tokens(round(s * rate), rate, levels) for s in given]
        longest = (length - 1) // levels * levels
        if seconds is not None and max(columns) > longest:
            raise ValueError(f"{max(given)} s of speech is {max(columns)} audio tokens; the answer holds "
                             f"{length - 1}: pass a larger answer_len or fewer seconds")
        return [min(longest, c) for c in columns]  # an estimate for a long text is cut to what the answer holds

    def duration_layout(self, durations: list[int], length: int) -> torch.Tensor:
        """``answer_init`` rows: ``<mask>`` for each text's audio columns, then ``</audio>``, then ``<eos>``."""
        vocab = self.vocab
        rows = torch.full((len(durations), length), vocab.eos_id, dtype=torch.long)
        for row, n in zip(rows, durations, strict=True):
            row[:n] = vocab.mask_id
            row[n] = vocab.special("</audio>")
        return rows
