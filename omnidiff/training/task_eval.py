"""Task metrics while training, for learning curves: ``train.task_eval_every`` steps.

Every so many steps the model being trained runs each task's own pipeline on the first
``train.task_eval_num`` held-out samples of each stream (the ``val`` split), exactly as
``python -m omnidiff.eval`` scores an exported model (`omnidiff.eval.__main__.evaluate_task`: caption
exact and pairs, VQA accuracy, T2I objects read back, ASR/TTS WER, action error). The scores go into
``metrics.jsonl`` as rows with ``"split": "task_eval"`` next to ``train_minutes``, the minutes spent in
training steps so far (evaluation time excluded, carried across ``--resume``), which
`omnidiff.eval.curves` draws as metric-against-minutes curves. Pictures and sounds of the latest
evaluation are kept under ``RUN/task_eval/``.
"""

from __future__ import annotations

from pathlib import Path

import torch


class TaskEvaluator:
    """Scores a model on a fixed set of held-out samples per (task, dataset) stream of a recipe."""

    def __init__(self, cfg, toks, vocab, out_dir: Path, num: int):
        from omnidiff.eval.__main__ import read_samples, stream_name
        from omnidiff.pipelines.base import generation_settings

        self.toks, self.vocab, self.out_dir = toks, vocab, Path(out_dir)
        self.settings = generation_settings(cfg.objective, cfg.data.tasks)
        self.streams: dict[str, tuple] = {}
        for spec in cfg.data.tasks:
            name = stream_name(spec.task, spec.path)
            if name in self.streams:
                continue
            samples = read_samples(spec.path, "val", num)
            if not samples:
                raise ValueError(f"train.task_eval_every needs held-out samples, but {spec.path} has no val split "
                                 "samples; rebuild the dataset or set train.task_eval_every=0")
            self.streams[name] = (spec, samples)

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        """``{"<task>:<dataset>/<metric>": value}`` for every numeric metric of every stream."""
        from omnidiff.eval.__main__ import evaluate_task
        from omnidiff.pipelines import PIPELINES

        was_training = model.training
        scores: dict[str, float] = {}
        try:
            for name, (spec, samples) in self.streams.items():
                out = self.out_dir / name.replace(":", "_")
                out.mkdir(parents=True, exist_ok=True)
                pipe = PIPELINES[spec.task](model, self.toks, self.vocab, settings=self.settings)
                metrics, _ = evaluate_task(spec.task, pipe, samples, spec.answer_len, out, num=len(samples))
                for key, value in metrics.items():
                    if isinstance(value, int | float) and not isinstance(value, bool) and key != "n":
                        scores[f"{name}/{key}"] = float(value)
        finally:
            model.train(was_training)
        return scores


def task_evaluator(cfg, toks, vocab, run_dir: Path) -> TaskEvaluator | None:
    """The run's evaluator, or None when ``train.task_eval_every`` is 0."""
    if not cfg.train.task_eval_every:
        return None
    return TaskEvaluator(cfg, toks, vocab, run_dir / "task_eval", cfg.train.task_eval_num)
