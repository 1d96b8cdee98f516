"""Build procedural shape scenes with captions and questions: ``python data/build_shapes.py --out runs/data/shapes --num 20000``.

Scenes come from `omnidiff.data.sources.shapes` (1-3 objects with shape, colour, size and
position on a plain background). Sample i of a split is drawn from ``default_rng([split seed, i])``,
so a sample does not depend on how many came before it. The exact scene attributes are stored next
to the image, so generated images and captions can be scored against them.

Sample: ``png`` scene, ``txt`` first caption, ``json`` ``{"scene", "captions", "qa"}``.
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
    parser.add_argument("--min-objects", type=int, default=1)
    parser.add_argument("--max-objects", type=int, default=3)


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def main() -> dict:
    args = parse_args(__doc__.splitlines()[0], add_args, default_num=20000)
    from omnidiff.data.sources import shapes  # after the argument checks: they need no source

    size, lo, hi = args.extra["size"], args.extra["min_objects"], args.extra["max_objects"]
    if size < 16:
        raise ValueError(f"--size must be at least 16 pixels, got {size}")
    if not 1 <= lo <= hi:
        raise ValueError(f"need 1 <= --min-objects <= --max-objects, got {lo} and {hi}")
    cfg = shapes.ShapesConfig(size=size, min_objects=lo, max_objects=hi)

    def samples(split: str, n: int, seed: int):
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            scene = shapes.random_scene(rng, cfg)
            caps = list(shapes.captions(scene, rng))
            qa = [[q, a] for q, a in shapes.questions(scene, rng)]
            yield {"__key__": f"{split}-{i:08d}", "png": png_bytes(shapes.render_scene(scene, cfg)), "txt": caps[0],
                   "json": {"scene": scene, "captions": caps, "qa": qa}}

    return build_dataset(args, "shapes", samples, sources=["procedural:omnidiff.data.sources.shapes"],
                         extra_manifest={"size": size, "min_objects": lo, "max_objects": hi})


if __name__ == "__main__":
    run_builder(main)
