"""Text to image: ``TextToImagePipeline(captions, guidance_scale=2.0) -> PIL images``.

The answer is laid out as in training (codes, ``</image>``, ``<eos>`` padding) and decoding is
constrained to that layout, so every output decodes to a full image. Classifier-free guidance
runs the ``<uncond>`` prompt the model learned with ``uncond_prob`` beside each caption.

Images are decoded by default in a random order with sampled tokens (`default_sampler`), not by
confidence: the most confident codes of a picture are its background, and a confidence-ordered,
argmax decoder fills the whole canvas with background before any object is drawn (docs/ablations.md,
row 37: blank canvases from the demo model; in random order they hold coloured shapes, though an
undertrained model's score is still at the scorer's chance level).
"""

from __future__ import annotations

import dataclasses

from omnidiff.pipelines.base import DiffusionPipeline
from omnidiff.sampling import SamplerConfig, fixed_layout

IMAGE_STEPS = 16  # denoising steps per image (64 codes: 4 per step on average, fewer first on a cosine schedule)


class TextToImagePipeline(DiffusionPipeline):
    task = "t2i"

    def default_sampler(self) -> SamplerConfig:
        """The exact cache of the trained attention, with the reverse process of masked diffusion itself:
        positions unmasked in random order on a cosine schedule, each token drawn from the model at
        temperature 1 (as MaskGIT and MDLM sample images), in one block (the trained blocks under block
        attention). The AR twin keeps its left-to-right decoding."""
        base = super().default_sampler()
        if base.attention == "causal":
            return base
        return dataclasses.replace(base, strategy="random", steps=IMAGE_STEPS, schedule="cosine", temperature=1.0,
                                   block_len=base.block_len if base.attention == "block" else None)

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
