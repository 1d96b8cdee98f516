"""Build emoji and icon image-caption pairs: ``python data/build_emoji.py --out runs/data/emoji --num 4000``.

Two offline sources of pictures with real-world names:

- Noto Color Emoji (Debian ``fonts-noto-color-emoji``), drawn by PIL at the font's only bitmap size
  (109 px, ``embedded_color=True``) and named by the ``emoji`` package (fully-qualified emoji, no
  skin-tone variants; glyphs the font lacks render blank and are dropped);
- the icon fonts bundled in the ``qtawesome`` wheel (TTF + JSON charmap read directly, no Qt):
  names such as ``arrow-right-fill`` become ``arrow right``; a name is kept once over all fonts.

Pictures are drawn large, centred on white and downscaled to ``--size``. ``--emoji-fraction`` of
the samples are emoji (at most all of them), the rest icons; the chosen items are shuffled by
the seed and dealt to disjoint train/val/test splits. Sample: ``png``, ``txt`` (name), ``json``
``{"name", "captions", "source"}``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omnidiff.data.builder import MissingSystemPackage, build_dataset, parse_args, run_builder  # noqa: E402

NOTO_EMOJI = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
NOTO_SIZE = 109  # the only size the bitmap (CBDT) font can be drawn at
SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}
# Newest version of each icon family first: a name appearing in several fonts keeps the first.
ICON_FONTS = ("fontawesome6-solid", "fontawesome6-regular", "fontawesome6-brands", "materialdesignicons6",
              "phosphor", "remixicon", "codicon", "elusiveicons")
STYLE_SUFFIXES = re.compile(r"(-(fill|line|bold|light|thin|duotone|outline|alt|o|sharp|variant))+$")


def add_args(parser):
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--emoji-fraction", type=float, default=0.5, help="share of emoji among the samples")


def emoji_items() -> list[dict]:
    """Fully-qualified emoji without skin tones: ``{"char", "name"}``."""
    if not NOTO_EMOJI.exists():
        raise MissingSystemPackage(f"{NOTO_EMOJI} is missing (Debian package 'fonts-noto-color-emoji'); "
                                   f"run `make data-deps`")
    import emoji

    items = []
    for char, info in emoji.EMOJI_DATA.items():
        if info.get("status") != emoji.STATUS["fully_qualified"] or SKIN_TONES & set(char):
            continue
        name = info["en"].strip(":").replace("_", " ")
        if len(char) == 2 and all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in char):  # regional-indicator pair
            name = f"flag of {name}"
        items.append({"char": char, "name": name, "source": "noto-emoji"})
    return items


def icon_items() -> list[dict]:
    """Named glyphs of qtawesome's icon fonts: ``{"font", "code", "name", "raw_name"}``."""
    spec = importlib.util.find_spec("qtawesome")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the qtawesome wheel is not installed; pip install -r requirements-data.txt")
    fonts_dir = Path(spec.submodule_search_locations[0]) / "fonts"
    items, seen = [], set()
    for family in ICON_FONTS:
        charmaps = sorted(fonts_dir.glob(f"{family}*-charmap-*.json"))
        ttfs = sorted(fonts_dir.glob(f"{family}*.ttf"))
        if not charmaps or not ttfs:
            continue
        for raw_name, code in json.loads(charmaps[0].read_text()).items():
            name = STYLE_SUFFIXES.sub("", raw_name).replace("-", " ").strip()
            if not name or name in seen or not re.search(r"[a-z]", name):
                continue
            seen.add(name)
            items.append({"font": str(ttfs[0]), "code": int(code, 16), "name": name, "raw_name": raw_name,
                          "source": f"qtawesome:{family}", "brand": "brands" in family})
    return items


def with_article(name: str) -> str:
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def captions(item: dict) -> list[str]:
    name = item["name"]
    if item["source"] == "noto-emoji":
        return [name, f"an emoji of {with_article(name)}", f"{with_article(name)} emoji"]
    if item.get("brand"):
        return [f"{name} logo", f"the {name} logo", f"a black {name} logo icon"]
    return [name, f"an icon of {with_article(name)}", f"a black {name} icon"]


class Renderer:
    """Draws emoji and icon glyphs at ``size`` px; keeps the opened fonts."""

    def __init__(self, size: int):
        from PIL import ImageFont

        self.size, self._fonts = size, {}
        self._emoji_font = ImageFont.truetype(str(NOTO_EMOJI), NOTO_SIZE) if NOTO_EMOJI.exists() else None

    def _font(self, path: str, px: int):
        from PIL import ImageFont

        if (path, px) not in self._fonts:
            self._fonts[(path, px)] = ImageFont.truetype(path, px)
        return self._fonts[(path, px)]

    def render(self, item: dict):
        """The item's picture, or None when the font has no visible glyph for it."""
        import numpy as np
        from PIL import Image, ImageDraw

        if item["source"] == "noto-emoji":
            canvas, font, text, colour = 136, self._emoji_font, item["char"], None
        else:
            canvas, text, colour = 4 * self.size, chr(item["code"]), "black"
            font = self._font(item["font"], int(canvas * 0.8))
        image = Image.new("RGB", (canvas, canvas), "white")
        draw = ImageDraw.Draw(image)
        draw.text((canvas / 2, canvas / 2), text, font=font, fill=colour, anchor="mm",
                  embedded_color=item["source"] == "noto-emoji")
        ink = (np.asarray(image).min(axis=2) < 235).mean()
        if ink < 0.01:  # glyph missing from the font (drawn blank)
            return None
        return image.resize((self.size, self.size), Image.LANCZOS)


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def select(args, emoji_pool: list[dict], icon_pool: list[dict]) -> list[dict]:
    """``--num`` items, ``--emoji-fraction`` of them emoji, in a seed-fixed order."""
    import numpy as np

    fraction = args.extra["emoji_fraction"]
    if not 0 <= fraction <= 1:
        raise ValueError(f"--emoji-fraction must be in [0, 1], got {fraction}")
    rng = np.random.default_rng(args.seed)
    n_emoji = min(len(emoji_pool), round(args.num * fraction))
    n_icons = args.num - n_emoji
    if n_icons > len(icon_pool):
        raise ValueError(f"--num {args.num} exceeds the {len(emoji_pool) + len(icon_pool)} emoji and icons available")
    chosen = [emoji_pool[i] for i in rng.permutation(len(emoji_pool))[:n_emoji]]
    chosen += [icon_pool[i] for i in rng.permutation(len(icon_pool))[:n_icons]]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def main() -> dict:
    args = parse_args(__doc__.splitlines()[0], add_args, default_num=4000)
    if args.extra["size"] < 8:
        raise ValueError(f"--size must be at least 8 pixels, got {args.extra['size']}")
    renderer = Renderer(args.extra["size"])
    emoji_pool = emoji_items()
    icon_pool = icon_items()
    # Items whose glyph is missing are replaced by spares further down the seeded order.
    order = select(args, emoji_pool, icon_pool) + [i for i in icon_pool + emoji_pool]
    starts, begin = {}, 0
    for split, n in args.split_counts().items():
        starts[split] = begin
        begin += n
    used: set[str] = set()
    cursor = {"next": 0}

    def next_rendered():
        while cursor["next"] < len(order):
            item = order[cursor["next"]]
            cursor["next"] += 1
            key = f"{item['source']}/{item['name']}"
            if key in used:
                continue
            image = renderer.render(item)
            if image is not None:
                used.add(key)
                return item, image
        raise ValueError(f"ran out of renderable emoji and icons before --num {args.num}")

    def samples(split: str, n: int, seed: int):
        for i in range(n):
            item, image = next_rendered()
            meta = {"name": item["name"], "captions": captions(item), "source": item["source"]}
            if "raw_name" in item:
                meta["icon"] = item["raw_name"]
            yield {"__key__": f"{split}-{i:08d}", "png": png_bytes(image), "txt": item["name"], "json": meta}

    return build_dataset(args, "emoji", samples,
                         sources=["debian:fonts-noto-color-emoji", "pypi:emoji", "pypi:qtawesome"],
                         extra_manifest={"size": args.extra["size"], "emoji_fraction": args.extra["emoji_fraction"],
                                         "available": {"emoji": len(emoji_pool), "icons": len(icon_pool)}})


if __name__ == "__main__":
    run_builder(main)
