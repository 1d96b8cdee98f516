"""Speech: ``ASRPipeline(waves) -> transcripts`` and ``TTSPipeline(texts) -> waves``.

Audio goes in and comes out as ``{"array": float32 [T], "sample_rate": int}`` (the shard format);
input at any rate or channel count is checked and mixed down by `inputs.as_wave`.
Speech synthesis decodes codec tokens level by level in the interleaved order the tokenizer uses
(`cyclic_layout`) over the levels the model was trained to generate (``audio_levels``), stops at
``</audio>`` or ``<eos>``, and drops an incomplete last frame (an answer that ends at once gives an
empty array).
"""

from __future__ import annotations

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
        prompts = [self.task_impl.prompt(self.tokenizers, self.vocab, as_wave(a)) for a in items]
        answers, _ = self.decode(prompts, self.answer_len(answer_len, 64), seed=seed, config=config)
        return [self.text_of(a) for a in answers]


class TTSPipeline(DiffusionPipeline):
    task = "tts"

    def __call__(self, texts, *, answer_len: int | None = None, guidance_scale: float | None = None, seed: int = 0,
                 config=None) -> list[dict]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no text given")
        tok, vocab = self.tokenizers.audio, self.vocab
        levels = tok.check_levels(self.task_impl.audio_levels)
        names = tok.range_names()[:levels]
        length = self.answer_len(answer_len, 512)
        layout = cyclic_layout(vocab, names, length, specials=("</audio>", "<eos>"))
        prompts = [self.task_impl.prompt(self.tokenizers, vocab, t) for t in texts]
        answers, _ = self.decode(prompts, length, seed=seed, config=config, answer_layout=layout,
                                 guidance_scale=guidance_scale, uncond_prompt=self.task_impl.prompt(self.tokenizers, vocab, None))
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
