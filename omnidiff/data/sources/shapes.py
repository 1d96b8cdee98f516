"""Procedural shape scenes: a few coloured shapes on a plain background, with exact captions and Q&A.

A scene is a JSON-serialisable dict (``{"size", "background", "objects": [...]}``) drawn from a
numpy ``Generator``; `render_scene` turns it into a PIL image with hard (non-antialiased) edges,
so every object pixel has exactly its palette colour. Objects never touch (their bounding circles
keep a gap) and no two objects share both colour and shape, so "the red circle" always names one
object and every caption and answer is true by construction. `shape_mask` is the single drawing
routine used both for rendering and for scoring generated images against a scene
(`omnidiff.eval.image`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
# Saturated, well separated colours; the backgrounds are dark neutrals none of them resembles.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 50),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 30),
    "purple": (150, 50, 200),
    "orange": (250, 140, 10),
    "cyan": (30, 210, 220),
    "white": (245, 245, 245),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"black": (0, 0, 0), "gray": (70, 70, 70)}
# Bounding-circle radius of each size word, as a fraction of the image side.
SIZE_FRACTIONS: dict[str, float] = {"small": 0.12, "large": 0.19}
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass
class ShapesConfig:
    """Scene settings.

    Args:
        size: image side in pixels.
        min_objects, max_objects: inclusive range of the object count.
    """

    size: int = 64
    min_objects: int = 1
    max_objects: int = 3

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"ShapesConfig.size must be at least 16 pixels, got {self.size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects} and {self.max_objects}")
        if self.max_objects > 6:
            raise ValueError(f"at most 6 objects fit without overlapping, got max_objects={self.max_objects}")


# ---------------------------------------------------------------------------------------------- scenes
def _place(rng: np.random.Generator, radius: int, size: int, placed: list[dict]) -> tuple[int, int] | None:
    """A centre for a new object whose bounding circle keeps a 2-px gap to all placed ones, or None."""
    for _ in range(200):
        x = int(rng.integers(radius + 1, size - radius - 1))
        y = int(rng.integers(radius + 1, size - radius - 1))
        if all(math.hypot(x - o["x"], y - o["y"]) >= radius + o["radius"] + 2 for o in placed):
            return x, y
    return None


def random_scene(rng: np.random.Generator, cfg: ShapesConfig) -> dict:
    """A random scene: background name plus ``min_objects..max_objects`` non-overlapping objects.

    Each object is ``{"shape", "colour", "size", "x", "y", "radius"}`` with integer pixel
    centre and bounding-circle radius. A layout in which an object finds no free spot (a large
    object in the middle can block the rest) is redrawn; only if that keeps failing (crowded small
    images) does the scene keep fewer objects, never fewer than one.
    """
    background = str(rng.choice(list(BACKGROUNDS)))
    count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    best: list[dict] = []
    for _ in range(20):
        objects = _layout(rng, count, cfg.size)
        if len(objects) > len(best):
            best = objects
        if len(best) == count:
            break
    return {"size": cfg.size, "background": background, "objects": best}


def _layout(rng: np.random.Generator, count: int, size: int) -> list[dict]:
    objects: list[dict] = []
    for _ in range(count):
        used = {(o["shape"], o["colour"]) for o in objects}
        while True:
            shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
            if (shape, colour) not in used:
                break
        size_word = str(rng.choice(list(SIZE_FRACTIONS)))
        radius = max(3, round(SIZE_FRACTIONS[size_word] * size))
        centre = _place(rng, radius, size, objects)
        if centre is None:
            break
        objects.append({"shape": shape, "colour": colour, "size": size_word, "x": centre[0], "y": centre[1],
                        "radius": radius})
    return objects


def _polygon(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = r * 0.78  # the square's corners sit inside the bounding circle
        return [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]
    if shape == "triangle":  # equilateral, apex up, centred on the bounding circle
        return [(x + r * math.cos(a), y - r * math.sin(a)) for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
    if shape == "diamond":
        return [(x, y - r), (x + r * 0.8, y), (x, y + r), (x - r * 0.8, y)]
    raise ValueError(f"unknown shape {shape!r}; known shapes: {list(SHAPES)}")


def _draw(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    else:
        draw.polygon(_polygon(shape, x, y, r), fill=fill)


def shape_mask(shape: str, x: float, y: float, radius: float, size: int) -> np.ndarray:
    """Boolean ``[size, size]`` mask of one shape drawn exactly as `render_scene` draws it."""
    canvas = Image.new("L", (size, size), 0)
    _draw(ImageDraw.Draw(canvas), shape, x, y, radius, 255)
    return np.asarray(canvas) > 0


def render_scene(scene: dict, cfg: ShapesConfig | None = None) -> Image.Image:
    """The scene as an RGB image of side ``cfg.size`` (default: the scene's own size).

    Drawing is deterministic and antialias-free: object pixels carry the exact palette colour.
    A ``cfg`` of a different size rescales positions and radii.
    """
    size = cfg.size if cfg is not None else int(scene["size"])
    scale = size / float(scene.get("size", size))
    if scene["background"] not in BACKGROUNDS:
        raise ValueError(f"unknown background {scene['background']!r}; known: {list(BACKGROUNDS)}")
    image = Image.new("RGB", (size, size), BACKGROUNDS[scene["background"]])
    draw = ImageDraw.Draw(image)
    for obj in scene["objects"]:
        if obj["colour"] not in COLOURS:
            raise ValueError(f"unknown colour {obj['colour']!r}; known: {list(COLOURS)}")
        _draw(draw, obj["shape"], obj["x"] * scale, obj["y"] * scale, obj["radius"] * scale, COLOURS[obj["colour"]])
    return image


# ---------------------------------------------------------------------------------------------- language
def _name(obj: dict, with_size: bool = False) -> str:
    return f"{obj['size']} {obj['colour']} {obj['shape']}" if with_size else f"{obj['colour']} {obj['shape']}"


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _plural(shape: str, n: int) -> str:
    return shape if n == 1 else shape + "s"


def _relation(a: dict, b: dict) -> str:
    """Where ``a`` is relative to ``b`` along the axis that separates them most (image y grows downwards)."""
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def _left_to_right(scene: dict) -> list[dict]:
    return sorted(scene["objects"], key=lambda o: (o["x"], o["y"]))


def captions(scene: dict, rng: np.random.Generator) -> list[str]:
    """Several true descriptions of ``scene``; the first is the plain list of objects, left to right.

    Templates: object list, list with sizes, "N objects: ...", per-shape counts, background, and
    (with two or more objects) a relative position between a random pair.
    """
    objects = _left_to_right(scene)
    if not objects:
        raise ValueError("the scene has no objects; captions need at least one")
    n = len(objects)
    listing = _join([f"a {_name(o)}" for o in objects])
    out = [
        listing,
        _join([f"a {_name(o, with_size=True)}" for o in objects]),
        f"{NUMBER_WORDS[n]} {_plural('object', n)}: {listing}",
        f"{listing} on a {scene['background']} background",
    ]
    counts: dict[str, int] = {}
    for o in objects:
        counts[o["shape"]] = counts.get(o["shape"], 0) + 1
    out.append(_join([f"{'a' if c == 1 else NUMBER_WORDS[c]} {_plural(s, c)}" for s, c in counts.items()]))
    if n >= 2:
        i, j = (int(k) for k in rng.choice(n, size=2, replace=False))
        a, b = objects[i], objects[j]
        out.append(f"a {_name(a)} {_relation(a, b)} a {_name(b)}")
    return out


def questions(scene: dict, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Question/answer pairs that the scene answers exactly.

    Kinds: object count, per-shape count (possibly zero), colour of a shape that occurs once,
    shape of a colour that occurs once, size, presence (yes/no) and, with two or more objects,
    relative position (yes/no, asked truthfully or with the opposite relation).
    """
    objects = _left_to_right(scene)
    if not objects:
        raise ValueError("the scene has no objects; questions need at least one")
    n = len(objects)
    qa: list[tuple[str, str]] = [("how many objects are there?", NUMBER_WORDS[n])]
    shape = str(rng.choice(SHAPES))
    qa.append((f"how many {shape}s are there?", NUMBER_WORDS[sum(o["shape"] == shape for o in objects)]))
    shape_counts = {s: sum(o["shape"] == s for o in objects) for s in SHAPES}
    colour_counts = {c: sum(o["colour"] == c for o in objects) for c in COLOURS}
    target = objects[int(rng.integers(n))]
    if shape_counts[target["shape"]] == 1:
        qa.append((f"what colour is the {target['shape']}?", target["colour"]))
    if colour_counts[target["colour"]] == 1:
        qa.append((f"what shape is the {target['colour']} object?", target["shape"]))
    qa.append((f"is the {_name(target)} small or large?", target["size"]))
    present = {(o["colour"], o["shape"]) for o in objects}
    if rng.random() < 0.5:
        colour, shape = target["colour"], target["shape"]
    else:
        colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
    qa.append((f"is there a {colour} {shape}?", "yes" if (colour, shape) in present else "no"))
    if n >= 2:
        i, j = (int(k) for k in rng.choice(n, size=2, replace=False))
        a, b = objects[i], objects[j]
        relation = _relation(a, b)
        asked, answer = (relation, "yes") if rng.random() < 0.5 else (OPPOSITE[relation], "no")
        qa.append((f"is the {_name(a)} {asked} the {_name(b)}?", answer))
    return qa
