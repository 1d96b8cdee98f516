"""DeepSpeed: process group, engine and ZeRO config. The only module that imports ``deepspeed``.

The model stays a plain single-device `nn.Module`; this module wraps it from outside
(model code never sees ranks). On CPU the process group uses gloo and training runs in fp32; on GPU NCCL and
bf16. DeepSpeed's accelerator must match ``train.device``: ``train.py`` sets ``DS_ACCELERATOR``
from it before this module is imported (`omnidiff.training.accelerator`) and `init_distributed`
checks it. A single process started without a launcher gets a one-rank group on a free local
port, so ``python train.py`` and ``torchrun --nproc_per_node N train.py`` run the same code.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from contextlib import contextmanager

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from torch import nn

from omnidiff.config import DistributedConfig, OptimConfig
from omnidiff.training import optimizer
from omnidiff.training.accelerator import accelerator_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_accelerator(device: str) -> None:
    """A ValueError unless DeepSpeed's accelerator (fixed when it was imported) is the one ``device``
    needs and, for ``cuda``, a GPU is visible (before NCCL fails less clearly)."""
    wanted, running = accelerator_for(device), get_accelerator().device_name()
    if running != wanted:
        raise ValueError(f"DeepSpeed runs on its {running} accelerator but train.device={device!r} needs {wanted}: "
                         f"set DS_ACCELERATOR={wanted} before omnidiff.training is imported (train.py sets it "
                         f"from train.device)")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device is {device!r} but no GPU is visible; use train.device=cpu")


def init_distributed(cfg: DistributedConfig, device: str) -> tuple[int, int]:
    """(rank, world_size) after joining (or creating) the process group."""
    check_accelerator(device)
    if not dist.is_initialized():
        if "RANK" not in os.environ:  # plain `python train.py`: a one-process group
            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(_free_port()))
        backend = cfg.backend or ("nccl" if device.startswith("cuda") else "gloo")
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
    return dist.get_rank(), dist.get_world_size()


def local_device(device: str) -> str:
    """``"cuda"`` -> this process's GPU (``cuda:LOCAL_RANK``, made current); anything else unchanged.

    One process per GPU is the launchers' convention (torchrun, deepspeed); an explicit index
    (``cuda:3``) is kept as given.
    """
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("train.device is 'cuda' but no GPU is visible; use train.device=cpu")
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return device


@contextmanager
def gathered_for_update(params: list[torch.Tensor]):
    """Within: ``params`` whole on every rank for an in-place change, kept when it ends (ZeRO-3 partitions
    parameters as they are built; otherwise there is nothing to gather)."""
    if any(hasattr(p, "ds_id") for p in params):
        with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
            yield
    else:
        yield


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def deepspeed_config(cfg: DistributedConfig, optim: OptimConfig, micro_batch: int, world_size: int) -> dict:
    if cfg.zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"distributed.zero_stage must be 0, 1, 2 or 3, got {cfg.zero_stage}")
    if cfg.dtype not in ("fp32", "bf16"):
        raise ValueError(f"distributed.dtype must be 'fp32' or 'bf16', got {cfg.dtype!r}")
    if cfg.grad_accum <= 0:
        raise ValueError(f"distributed.grad_accum must be positive, got {cfg.grad_accum}")
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.offload_optimizer and cfg.zero_stage > 0:
        zero["offload_optimizer"] = {"device": "cpu"}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    zero.update(optimizer.zero_settings(optim, cfg.zero_stage))
    config = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": micro_batch * cfg.grad_accum * world_size,
        "gradient_clipping": optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.dtype == "bf16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    section = optimizer.deepspeed_section(optim)
    if section is not None:
        config["optimizer"] = section
    return config


def lr_lambda(optim: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """Warm-up, then cosine to ``min_lr_ratio`` or WSD (stable, then linear decay over the last fraction)."""
    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.decay == "cosine":
            progress = min(1.0, (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps))
            return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if optim.decay == "wsd":
            decay_start = total_steps * (1 - optim.decay_fraction)
            if step < decay_start:
                return 1.0
            progress = min(1.0, (step - decay_start) / max(1.0, total_steps - decay_start))
            return 1.0 - (1 - optim.min_lr_ratio) * progress
        raise ValueError(f"optim.decay must be 'cosine' or 'wsd', got {optim.decay!r}")
    return factor


def build_engine(make_model: Callable[[], nn.Module], dist_cfg: DistributedConfig, optim: OptimConfig,
                 micro_batch: int, total_steps: int, device: str):
    """A DeepSpeed engine around ``make_model()`` with the optimizer ``optim.name`` names and our LR schedule."""
    world = dist.get_world_size()
    ds_config = deepspeed_config(dist_cfg, optim, micro_batch, world)
    if dist_cfg.zero_stage == 3:
        with deepspeed.zero.Init(config_dict_or_path=ds_config):
            model = make_model()
    else:
        model = make_model()
    model.to(device)
    client = optimizer.client_optimizer(model, optim)
    # A callable: DeepSpeed builds the scheduler on its wrapped optimizer (ZeRO-3 regroups parameters).
    def scheduler(wrapped):
        return torch.optim.lr_scheduler.LambdaLR(wrapped, lr_lambda(optim, total_steps))

    if client is not None:
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=client, lr_scheduler=scheduler, config=ds_config)
    else:  # DeepSpeed builds it from ds_config["optimizer"] over our decay / no-decay groups
        groups = optimizer.param_groups(model, optim.weight_decay)
        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=groups, lr_scheduler=scheduler,
                                               config=ds_config)
    return engine


def full_state_dict(engine) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU (gathered from all ranks under ZeRO-3); call on every rank."""
    module = engine.module
    if engine.zero_optimization_stage() == 3:
        params = list(module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
