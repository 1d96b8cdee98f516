"""Image scoring: read shape scenes back from pixels, classify digits, PSNR, code synonyms.

`score_scene` decides for each object of a known scene (`omnidiff.data.sources.shapes`) whether
an image still shows it with the right colour and shape:

- colour: the median pixel inside the object's known area (its mask shrunk by one pixel, so
  blurred edges do not count) goes to the nearest palette colour; the scene's background colour
  is a candidate too, so an object that vanished reads as "background", never as a colour.
- shape: pixels near the object that differ from the background by more than half the object's
  observed contrast form its foreground mask; the shape whose mask (drawn at the same centre and
  radius by `shapes.shape_mask`) has the best IoU with it is the reading.

On the original renders every object reads correctly (tested), so any loss measured on
reconstructions or generated images is the model's. `DigitClassifier` is a tiny CNN trained for
about a minute on MNIST, to compare digit accuracy on originals and reconstructions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from omnidiff.data.sources import shapes


@dataclass
class ObjectReading:
    """What an image shows at one object of the scene."""

    colour: str  # read colour name ("background" if the object is gone)
    shape: str  # best-IoU shape name
    shape_iou: float
    colour_ok: bool
    shape_ok: bool

    @property
    def kept(self) -> bool:
        return self.colour_ok and self.shape_ok


def _as_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3] or a PIL image, got shape {array.shape}")
    return array


def _shrink(mask: np.ndarray) -> np.ndarray:
    """The mask minus its border pixels (4-neighbourhood erosion)."""
    core = mask.copy()
    core[1:, :] &= mask[:-1, :]
    core[:-1, :] &= mask[1:, :]
    core[:, 1:] &= mask[:, :-1]
    core[:, :-1] &= mask[:, 1:]
    return core


def nearest_colour(rgb: np.ndarray, background: str) -> str:
    """Nearest palette colour name to ``rgb``, or ``"background"`` if the background colour is nearer."""
    candidates = {**shapes.COLOURS, "background": shapes.BACKGROUNDS[background]}
    names = list(candidates)
    distances = [float(np.linalg.norm(np.asarray(candidates[n], np.float32) - rgb)) for n in names]
    return names[int(np.argmin(distances))]


def score_scene(image, scene: dict) -> list[ObjectReading]:
    """Read every object of ``scene`` from ``image`` (PIL or ``[H, W, 3]`` array, resized to the scene size).

    Args:
        image: the picture to read, e.g. a tokenizer reconstruction or a generated image.
        scene: the scene JSON it should show (from `shapes.random_scene`).
    """
    size = int(scene["size"])
    if isinstance(image, Image.Image) and image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    pixels = _as_array(image)
    if pixels.shape[:2] != (size, size):
        raise ValueError(f"the image is {pixels.shape[1]}x{pixels.shape[0]} but the scene is {size}x{size}; resize it")
    background = np.asarray(shapes.BACKGROUNDS[scene["background"]], np.float32)
    objects = scene["objects"]
    masks = [shapes.shape_mask(o["shape"], o["x"], o["y"], o["radius"], size) for o in objects]
    yy, xx = np.mgrid[0:size, 0:size]
    readings = []
    for k, obj in enumerate(objects):
        core = _shrink(masks[k])
        core = core if core.sum() >= 5 else masks[k]
        median = np.median(pixels[core], axis=0)
        colour = nearest_colour(median, scene["background"])

        # Pixels within the object's bounding circle (+2 px), nearer to it than to any other object.
        dist = np.hypot(xx - obj["x"], yy - obj["y"])
        window = dist <= obj["radius"] + 2
        for j, other in enumerate(objects):
            if j != k:
                window &= dist - obj["radius"] < np.hypot(xx - other["x"], yy - other["y"]) - other["radius"]
        contrast = float(np.linalg.norm(median - background))
        foreground = (np.linalg.norm(pixels - background, axis=2) > 0.5 * contrast) & window
        best, best_iou = "none", 0.0
        if contrast > 1.0 and foreground.any():
            for candidate in shapes.SHAPES:
                cand = shapes.shape_mask(candidate, obj["x"], obj["y"], obj["radius"], size) & window
                iou = float((cand & foreground).sum() / max(1, (cand | foreground).sum()))
                if iou > best_iou:
                    best, best_iou = candidate, iou
        readings.append(ObjectReading(colour, best, best_iou, colour == obj["colour"], best == obj["shape"]))
    return readings


def _fit(shape: str, left: float, top: float, width: float, height: float) -> tuple[float, float, float]:
    """Centre and bounding-circle radius of ``shape`` whose drawn box is the given one (`shapes._polygon`)."""
    cx = left + width / 2
    if shape == "circle":
        return cx, top + height / 2, max(width, height) / 2
    if shape == "square":
        return cx, top + height / 2, max(width, height) / 2 / 0.78
    if shape == "diamond":
        return cx, top + height / 2, height / 2
    r = height / 1.5  # triangle: apex at y - r, base at y + r / 2
    return cx, top + r, r


def read_objects(image, min_area: int = 20) -> list[tuple[str, str]]:
    """The (colour, shape) of every object in ``image``, wherever it is drawn: for text-to-image, where
    the caption fixes what is drawn but not where.

    Every pixel goes to its nearest palette colour (the backgrounds included); each connected region
    of one object colour with at least ``min_area`` pixels is an object, and its shape is the one whose
    mask, drawn to fill the region's bounding box (or at the scenes' two radii, shifted by up to a pixel),
    has the best IoU with the region.
    """
    from scipy import ndimage

    pixels = _as_array(image)
    size = pixels.shape[0]
    names = list(shapes.COLOURS)
    centres = np.asarray([*shapes.COLOURS.values(), *shapes.BACKGROUNDS.values()], np.float32)
    nearest = ((pixels[:, :, None, :] - centres[None, None]) ** 2).sum(-1).argmin(-1)
    found = []
    for index, colour in enumerate(names):
        regions, count = ndimage.label(nearest == index)
        for label in range(1, count + 1):
            region = regions == label
            if region.sum() < min_area:
                continue
            ys, xs = np.nonzero(region)
            box = (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))
            best, best_iou = shapes.SHAPES[0], -1.0
            for candidate in shapes.SHAPES:
                x0, y0, r0 = _fit(candidate, *box)
                for r in (0.9 * r0, r0, 1.1 * r0, *(f * size for f in shapes.SIZE_FRACTIONS.values())):
                    for dx, dy in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
                        mask = shapes.shape_mask(candidate, x0 + dx, y0 + dy, r, size)
                        iou = float((mask & region).sum() / max(1, (mask | region).sum()))
                        if iou > best_iou:
                            best, best_iou = candidate, iou
            found.append((colour, best))
    return found


def pair_match(found: list[tuple[str, str]], wanted: list[tuple[str, str]]) -> tuple[int, int, int]:
    """(matched, found, wanted) counts of (colour, shape) pairs, each pair matched at most once."""
    left = list(wanted)
    matched = 0
    for pair in found:
        if pair in left:
            left.remove(pair)
            matched += 1
    return matched, len(found), len(wanted)


def psnr(a, b) -> float:
    """PSNR in dB between two RGB images (PIL or uint8-range arrays) of the same size."""
    x, y = _as_array(a), _as_array(b)
    if x.shape != y.shape:
        raise ValueError(f"PSNR needs images of one size, got {x.shape} and {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def uniform_patch_codes(images, codes_BHW: torch.Tensor) -> dict[tuple[int, int, int], list[int]]:
    """The codes given to patches of one flat colour: ``{rgb: [code of each such patch]}``.

    ``codes_BHW`` are the tokenizer's codes of ``images``; each code covers a ``side/W`` pixel patch.
    A patch counts only when every pixel in it has the same colour, so the ideal tokenizer gives each
    colour one code wherever it is: how many different codes it uses instead measures synonyms.
    """
    out: dict[tuple[int, int, int], list[int]] = {}
    for image, codes in zip(images, codes_BHW, strict=True):
        pixels = _as_array(image).astype(np.int64)
        h, w = codes.shape
        ph, pw = pixels.shape[0] // h, pixels.shape[1] // w
        patches = pixels[: h * ph, : w * pw].reshape(h, ph, w, pw, 3).transpose(0, 2, 1, 3, 4).reshape(h, w, -1, 3)
        flat = (patches == patches[:, :, :1]).all(axis=(2, 3))
        for i, j in zip(*np.nonzero(flat), strict=True):
            out.setdefault(tuple(int(c) for c in patches[i, j, 0]), []).append(int(codes[i, j]))
    return out


def code_consistency(patch_codes: dict[tuple[int, int, int], list[int]]) -> dict[str, float]:
    """Synonym measures over `uniform_patch_codes`: per flat colour, distinct codes and code perplexity
    (1.0 = one code per colour), averaged over colours weighted by patches, and the worst colour."""
    rows = []
    for colour_codes in patch_codes.values():
        counts = np.bincount(np.asarray(colour_codes))
        probs = counts[counts > 0] / counts.sum()
        rows.append((len(colour_codes), int((counts > 0).sum()), float(np.exp(-(probs * np.log(probs)).sum()))))
    if not rows:
        raise ValueError("no flat-colour patches in these images; code consistency needs some")
    n = np.array([r[0] for r in rows], dtype=np.float64)
    return {"colours": len(rows), "patches": int(n.sum()),
            "distinct_codes_per_colour": float((n * [r[1] for r in rows]).sum() / n.sum()),
            "perplexity_per_colour": float((n * [r[2] for r in rows]).sum() / n.sum()),
            "worst_perplexity": max(r[2] for r in rows)}


# ---------------------------------------------------------------------------------------------- digits
class DigitClassifier(torch.nn.Module):
    """A small CNN on 28x28 greyscale digits (~99% on MNIST test after a minute on CPU)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = torch.nn.Linear(32 * 7 * 7, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x_B128: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x_B128)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))

    @staticmethod
    def prepare(images) -> torch.Tensor:
        """PIL images (any size/mode) or uint8 ``[N, 28, 28]`` -> float ``[N, 1, 28, 28]`` in [0, 1]."""
        if isinstance(images, np.ndarray):
            if images.ndim != 3 or images.shape[1:] != (28, 28):
                raise ValueError(f"digit arrays must be [N, 28, 28], got {images.shape}")
            return torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
        arrays = [np.asarray(im.convert("L").resize((28, 28), Image.BICUBIC), np.float32) / 255.0 for im in images]
        return torch.from_numpy(np.stack(arrays))[:, None]

    @torch.no_grad()
    def predict(self, images) -> np.ndarray:
        self.eval()
        x = self.prepare(images)
        return torch.cat([self(chunk).argmax(1) for chunk in x.split(512)]).numpy()


def train_digit_classifier(images: np.ndarray, labels: np.ndarray, seconds: float = 60.0, batch_size: int = 128,
                           seed: int = 0) -> DigitClassifier:
    """Train `DigitClassifier` on uint8 ``[N, 28, 28]`` digits for about ``seconds`` (at most 3 epochs)."""
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many labels as images (and at least one), got {len(images)} and {len(labels)}")
    torch.manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = DigitClassifier.prepare(images), torch.as_tensor(labels, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    model.train()
    for _ in range(3):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if time.time() - start > seconds:
                return model.eval()
    return model.eval()
