"""Checkpoints that describe themselves, written atomically; export to a `from_pretrained` folder.

Layout of ``<run>/checkpoints/step_<N>/``: ``engine/`` (DeepSpeed: model, optimizer, LR scheduler,
one shard per rank under ZeRO), ``train_state.json`` (step, metrics so far), ``data_rank<r>.json``
(each rank's data position), ``rng_rank<r>.safetensors`` (torch and loss-generator RNG states),
``config.yaml`` (the resolved run config) and ``omnidiff_vocab.json``. Everything is written into
``step_<N>.tmp`` and renamed when complete; ``latest`` names the newest complete checkpoint. A
failure mid-write leaves the previous checkpoint untouched and no partial one behind.

Pruning (``keep``, from ``train.keep_checkpoints``): once a new checkpoint is complete and ``latest``
names it, rank 0 deletes the older ``step_<N>`` folders beyond the ``keep`` newest. A folder is first
renamed to ``step_<N>.pruning`` and then removed, so an interrupted delete never leaves a partial
folder under a checkpoint's name. Only complete step folders are touched (the name pattern and a
``train_state.json``); folders with a higher step than the new one (an earlier run in the same
folder that went further) are left alone.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from omnidiff.training import distributed

STEP_FOLDER = re.compile(r"step_(\d{8,})")
PRUNING_FOLDER = re.compile(r"step_\d{8,}\.pruning")

log = logging.getLogger(__name__)


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    pointer = checkpoint_dir(run_dir) / "latest"
    if not pointer.exists():
        return None
    path = checkpoint_dir(run_dir) / pointer.read_text().strip()
    return path if path.exists() else None


def save_checkpoint(engine, run_dir: str | Path, step: int, *, rank: int, train_state: dict, data_state: dict,
                    rng_state: dict[str, torch.Tensor], config_text: str, vocab, keep: int = 0) -> Path:
    """Write ``step_<step>`` atomically (every rank calls this), then keep the ``keep`` newest (0: all)."""
    root = checkpoint_dir(run_dir)
    final, tmp = root / f"step_{step:08d}", root / f"step_{step:08d}.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    distributed.barrier()
    try:
        engine.save_checkpoint(str(tmp / "engine"), tag="state", save_latest=False)
        (tmp / f"data_rank{rank}.json").write_text(json.dumps(data_state))
        save_file({k: v.contiguous() for k, v in rng_state.items()}, str(tmp / f"rng_rank{rank}.safetensors"))
        if rank == 0:
            (tmp / "train_state.json").write_text(json.dumps(train_state, indent=2))
            (tmp / "config.yaml").write_text(config_text)
            vocab.save(tmp)
        distributed.barrier()
    except BaseException:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        pointer = root / "latest.tmp"
        pointer.write_text(final.name)
        pointer.replace(root / "latest")
        if keep:
            try:
                prune_checkpoints(run_dir, keep, final)
            except OSError as err:  # the new checkpoint is complete: a failed delete must not stop the run
                log.warning("could not delete old checkpoints in %s: %s", root, err)
    distributed.barrier()
    return final


def step_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The complete ``step_<N>`` folders of ``run_dir`` as (step, path), oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = STEP_FOLDER.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink() and (path / "train_state.json").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def prune_checkpoints(run_dir: str | Path, keep: int, newest: Path) -> list[Path]:
    """Delete the step checkpoints older than ``newest`` beyond the ``keep`` newest (``newest`` counts as one).

    Called by rank 0 after ``latest`` names ``newest``. Neither ``newest`` nor the folder ``latest``
    names is ever deleted. Returns the deleted folders.

    Args:
        run_dir: the run folder (checkpoints live in ``run_dir/checkpoints``).
        keep: how many checkpoints to keep, at least 1.
        newest: the checkpoint just written.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a positive number of checkpoints, got {keep!r}")
    root = checkpoint_dir(run_dir)
    for leftover in root.iterdir():  # a delete interrupted earlier
        if PRUNING_FOLDER.fullmatch(leftover.name) and leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
    newest_step = int(STEP_FOLDER.fullmatch(newest.name).group(1))
    latest = latest_checkpoint(run_dir)
    older = [path for step, path in step_checkpoints(run_dir) if step < newest_step and path != latest]
    doomed = older[:max(0, len(older) - (keep - 1))]
    for path in doomed:
        trash = path.with_name(path.name + ".pruning")
        path.rename(trash)
        shutil.rmtree(trash)
    return doomed


def check_resumable(path: Path, vocab, model_config: dict) -> dict:
    """The checkpoint's train state, after checking its vocabulary and model shape match this run."""
    from omnidiff.tokenization.vocab import Vocab

    for name in ("train_state.json", "omnidiff_vocab.json"):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (missing {name})")
    Vocab.load(path).check_compatible(vocab, what=f"checkpoint {path}")
    state = json.loads((path / "train_state.json").read_text())
    saved = state.get("model_config", {})
    diff = {k: (saved.get(k), v) for k, v in model_config.items() if saved.get(k) != v}
    if diff:
        raise ValueError(f"checkpoint {path} was trained with a different model shape "
                         f"(field: (checkpoint, this run)) {diff}; resume with the same model config")
    return state


def load_checkpoint(engine, path: Path, *, rank: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore the engine; returns (this rank's data state, RNG states)."""
    load_path, _ = engine.load_checkpoint(str(path / "engine"), tag="state")
    if load_path is None:
        raise FileNotFoundError(f"DeepSpeed found no engine state in {path / 'engine'}")
    data_file = path / f"data_rank{rank}.json"
    if not data_file.exists():
        raise ValueError(f"{path} has no data position for rank {rank}: it was saved with fewer ranks")
    return json.loads(data_file.read_text()), load_file(str(path / f"rng_rank{rank}.safetensors"))


def export_pretrained(engine, model_config, vocab, out_dir: str | Path, *, rank: int, tokenizers=None,
                      generation: dict | None = None) -> Path | None:
    """Consolidate the weights (ZeRO-3 included) into an `OmniDiffModel` folder (rank 0 writes).

    With ``tokenizers`` (a `TokenizerSet`) and ``generation`` (`omnidiff.pipelines.generation_settings`)
    the folder is self-contained: pipelines load it with ``from_pretrained(out_dir)`` alone.
    """
    from omnidiff.models.hf import OmniDiffConfig, OmniDiffModel

    state = distributed.full_state_dict(engine)  # collective under ZeRO-3: every rank calls it
    if rank != 0:
        return None
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = OmniDiffModel(OmniDiffConfig.from_parts(model_config, vocab))
    model.model.load_state_dict(state)
    model.save_pretrained(tmp)
    if tokenizers is not None:
        tokenizers.save(tmp / "tokenizers")
    if generation is not None:
        (tmp / "omnidiff_generation.json").write_text(json.dumps(generation, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
