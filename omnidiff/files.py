"""Reading the files OmniDiff saves, and writing a user's outputs so a failure leaves nothing behind.

Settings are JSON and weights are safetensors, so loading never unpickles anything: a folder that
only offers a pickled checkpoint (``pytorch_model.bin``, ``*.pt``) is refused, because unpickling a
file runs whatever code it carries. Every reader here turns a missing or damaged file into a
`FileNotFoundError` or `ValueError` that names the file and says what to do, which is what the
entry points report in one line.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def read_json(path: str | Path, what: str = "settings file"):
    """The parsed JSON at ``path``; a `ValueError` naming the file when it is not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err}); the folder is damaged: save or export it "
                         "again") from None


def pickled_files(folder: str | Path) -> list[str]:
    """Names of the pickled checkpoints in ``folder`` (never opened)."""
    folder = Path(folder)
    return sorted({p.name for pattern in PICKLE_PATTERNS for p in folder.glob(pattern)})


def refuse_pickles(folder: str | Path, what: str) -> None:
    """Raise when ``folder`` offers its weights only as pickles (call once no safetensors file was found)."""
    pickles = pickled_files(folder)
    if pickles:
        raise ValueError(f"{what} {folder} holds pickled weights ({', '.join(pickles)}), which OmniDiff never "
                         "loads (unpickling runs code from the file); convert them to safetensors first")


def _safetensors_error(path: Path, err: Exception) -> ValueError:
    return ValueError(f"{path} is not a readable safetensors file ({err}): it is truncated or corrupt; "
                      "save or export it again")


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` from a safetensors header; reading it checks that the file is whole."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
    except SafetensorError as err:
        raise _safetensors_error(path, err) from None


def read_safetensors(path: str | Path) -> dict:
    """The tensors of a safetensors file, with a damaged file reported as a `ValueError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} is missing")
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise _safetensors_error(path, err) from None


def mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]],
             optional: set[str] = frozenset()) -> str:
    """'' when ``found`` has exactly the names and shapes of ``expected`` (``optional`` names may be
    absent), else a short description of what differs."""
    missing = sorted(set(expected) - set(found) - set(optional))
    extra = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    parts = [f"{label} {names[:3]}" for label, names in (("missing", missing), ("unexpected", extra),
                                                          ("wrong shapes", wrong)) if names]
    return ", ".join(parts)


def load_weights(module, path: str | Path, config_path: str | Path) -> None:
    """Load the safetensors file ``path`` into ``module``, refusing one that does not fit its architecture."""
    state = read_safetensors(path)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problem = mismatch(expected, {k: tuple(v.shape) for k, v in state.items()})
    if problem:
        raise ValueError(f"{path} does not match the architecture in {config_path}: {problem}; the two files "
                         "must come from the same save()")
    module.load_state_dict(state)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` only when the block succeeds.

    The caller names the file format explicitly (the temporary name has no meaningful suffix).
    Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the whole new one, never a part."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
