"""Which DeepSpeed accelerator a run needs, derived from ``train.device``.

DeepSpeed picks its accelerator (``DS_ACCELERATOR``) once, when it is first imported, and builds
engines, communication and memory management on it. A run whose batches live on ``cuda:N`` must
therefore have ``DS_ACCELERATOR=cuda`` before ``omnidiff.training.distributed`` (the one module
that imports ``deepspeed``) is loaded; a CPU run needs ``cpu``. This module imports no DeepSpeed,
so ``train.py`` can call it between reading the config and importing the trainer.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

ACCELERATORS = {"cpu": "cpu", "cuda": "cuda"}  # device type -> DeepSpeed accelerator name


def accelerator_for(device: str) -> str:
    """The DeepSpeed accelerator of a ``train.device`` value (``cpu``, ``cuda`` or ``cuda:N``)."""
    kind, _, index = str(device).partition(":")
    if kind not in ACCELERATORS or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"train.device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return ACCELERATORS[kind]


def select_accelerator(device: str, environ: MutableMapping[str, str] | None = None) -> str:
    """Set ``DS_ACCELERATOR`` for ``device`` before DeepSpeed is imported; returns its name.

    A ``DS_ACCELERATOR`` already in the environment is kept when it names the same accelerator and
    is an error otherwise. (A DeepSpeed imported before this call keeps what it picked then;
    `distributed.init_distributed` checks that it agrees with the device.)

    Args:
        device: ``train.device`` of the resolved config.
        environ: the environment to read and update (``os.environ`` when None).
    """
    environ = os.environ if environ is None else environ
    wanted = accelerator_for(device)
    given = environ.get("DS_ACCELERATOR")
    if given is not None and given != wanted:
        raise ValueError(f"DS_ACCELERATOR={given} is set in the environment but train.device={device!r} needs "
                         f"DS_ACCELERATOR={wanted}; unset it (train.py derives it from train.device) or change "
                         f"train.device")
    environ["DS_ACCELERATOR"] = wanted
    return wanted
