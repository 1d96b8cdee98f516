"""Image to text: ``CaptioningPipeline(images) -> captions`` and ``VQAPipeline(images, questions) -> answers``."""

from __future__ import annotations

from omnidiff.pipelines.base import DiffusionPipeline


def _images(images) -> list:
    if not isinstance(images, (list, tuple)):
        images = [images]
    if not images:
        raise ValueError("no images given")
    for im in images:
        if not hasattr(im, "convert"):
            raise ValueError(f"expected PIL images, got {type(im).__name__}; open files with PIL.Image.open")
    return [im.convert("RGB") for im in images]


class CaptioningPipeline(DiffusionPipeline):
    task = "caption"

    def __call__(self, images, *, answer_len: int | None = None, seed: int = 0, config=None) -> list[str]:
        images = _images(images)
        prompts = [self.task_impl.prompt(self.tokenizers, self.vocab, im) for im in images]
        answers, _ = self.decode(prompts, self.answer_len(answer_len, 32), seed=seed, config=config, images=images)
        return [self.text_of(a) for a in answers]


class VQAPipeline(DiffusionPipeline):
    task = "vqa"

    def __call__(self, images, questions, *, answer_len: int | None = None, seed: int = 0, config=None) -> list[str]:
        images = _images(images)
        questions = [questions] if isinstance(questions, str) else list(questions)
        if len(questions) != len(images):
            raise ValueError(f"got {len(images)} images but {len(questions)} questions; give one question per image")
        prompts = [self.task_impl.prompt(self.tokenizers, self.vocab, im, q) for im, q in zip(images, questions, strict=True)]
        answers, _ = self.decode(prompts, self.answer_len(answer_len, 8), seed=seed, config=config, images=images)
        return [self.text_of(a) for a in answers]
