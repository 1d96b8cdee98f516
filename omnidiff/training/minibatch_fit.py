"""The small supervised loop both image-backbone pretrainings share (dense scene labels, CLIP).

Epochs of shuffled minibatches over tensors held in memory, AdamW, and the project's one learning-rate
schedule (`omnidiff.training.distributed.lr_lambda`: warm-up, then cosine), with a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm import tqdm

from omnidiff.config import OptimConfig
from omnidiff.training.distributed import lr_lambda


def fit_minibatches(model: nn.Module, loss_of: Callable[[torch.Tensor], torch.Tensor], count: int, *, epochs: int,
                    batch: int, lr: float, weight_decay: float, warmup_steps: int, seed: int, desc: str) -> list[float]:
    """Train ``model`` on ``loss_of(indices)`` of ``count`` examples; returns the loss of every step."""
    steps = epochs * (count // batch)
    schedule = OptimConfig(lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, decay="cosine",
                           min_lr_ratio=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(schedule, steps))
    gen, history = torch.Generator().manual_seed(seed), []
    with tqdm(total=steps, desc=desc, unit="step") as bar:
        for _ in range(epochs):
            order = torch.randperm(count, generator=gen)
            for i in range(0, count - batch + 1, batch):
                loss = loss_of(order[i:i + batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                history.append(round(float(loss.detach()), 4))
                bar.update(1)
                bar.set_postfix(loss=history[-1])
    return history
