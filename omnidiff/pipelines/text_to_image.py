"""Text to image: ``TextToImagePipeline(captions, guidance_scale=2.0) -> PIL images``.

The answer is laid out as in training (codes, ``</image>``, ``<eos>`` padding) and decoding is
constrained to that layout, so every output decodes to a full image. Classifier-free guidance
runs the ``<uncond>`` prompt the model learned with ``uncond_prob`` beside each caption.
"""

from __future__ import annotations

from omnidiff.pipelines.base import DiffusionPipeline
from omnidiff.sampling import fixed_layout


class TextToImagePipeline(DiffusionPipeline):
    task = "t2i"

    def __call__(self, captions, *, guidance_scale: float | None = None, answer_len: int | None = None,
                 seed: int = 0, config=None, temperature: float | None = None) -> list:
        captions = [captions] if isinstance(captions, str) else list(captions)
        if not captions:
            raise ValueError("no captions given")
        tok, vocab = self.tokenizers.image, self.vocab
        codes = int(tok.tokens_per_image)
        length = self.answer_len(answer_len, codes + 1)
        layout = fixed_layout(vocab, "image", codes, "</image>", length)
        prompts = [self.task_impl.prompt(self.tokenizers, vocab, c) for c in captions]
        answers, _ = self.decode(prompts, length, seed=seed, config=config, answer_layout=layout,
                                 guidance_scale=guidance_scale, temperature=temperature,
                                 uncond_prompt=self.task_impl.prompt(self.tokenizers, vocab, None))
        return [tok.decode(tok.from_global(vocab, a[:codes]).view(tok.codes_shape)) for a in answers]
