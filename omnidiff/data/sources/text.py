"""Offline English text: the King James Bible, WordNet glosses, fortunes and the GCIDE dictionary.

All four come from Debian packages (``make data-deps``). `load_corpus(name)` yields cleaned
documents (a verse, a definition, a fortune, a dictionary entry), in a fixed order.
"""

from __future__ import annotations

import gzip
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from omnidiff.data.builder import MissingSystemPackage, require_binary

CORPORA = ("kjv", "wordnet", "fortunes", "gcide")
WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
GCIDE_DICT = Path("/usr/share/dictd/gcide.dict.dz")
GCIDE_INDEX = Path("/usr/share/dictd/gcide.index")

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def clean(text: str) -> str:
    """One line of plain text: control characters dropped, whitespace collapsed."""
    text = "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def _require_file(path: Path, package: str) -> None:
    if not path.exists():
        raise MissingSystemPackage(f"{path} is missing (Debian package '{package}'); run `make data-deps`")


def kjv() -> Iterator[str]:
    bible = require_binary("bible", "bible-kjv")
    out = subprocess.run([bible, "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        verse = line.split(" ", 1)[1] if " " in line else ""
        if verse.strip():
            yield clean(verse)


def wordnet() -> Iterator[str]:
    """'word, synonym: gloss' for every synset of every part of speech."""
    for pos in ("noun", "verb", "adj", "adv"):
        path = WORDNET_DIR / f"data.{pos}"
        _require_file(path, "wordnet-base")
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue  # licence header
            fields, gloss = line.split("|", 1)
            parts = fields.split()
            count = int(parts[3], 16)
            words = [parts[4 + 2 * i].replace("_", " ") for i in range(count)]
            words = [re.sub(r"\(.*?\)$", "", w) for w in words]
            yield clean(f"{', '.join(words)}: {gloss}")


def fortunes() -> Iterator[str]:
    if not FORTUNES_DIR.exists():
        raise MissingSystemPackage(f"{FORTUNES_DIR} is missing (Debian package 'fortunes'); run `make data-deps`")
    for path in sorted(FORTUNES_DIR.iterdir()):
        if path.is_dir() or path.suffix in (".dat", ".u8") or path.is_symlink():
            continue
        for chunk in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            text = clean(chunk.strip("%\n"))
            if text:
                yield text


def _b64(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def gcide() -> Iterator[str]:
    """One dictionary entry per headword (markup, pronunciations and source tags removed)."""
    _require_file(GCIDE_DICT, "dict-gcide")
    data = gzip.decompress(GCIDE_DICT.read_bytes())
    for line in GCIDE_INDEX.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00-database"):
            continue
        entry = data[_b64(parts[1]): _b64(parts[1]) + _b64(parts[2])].decode("utf-8", errors="replace")
        entry = re.sub(r"\[[^\]]*\]", "", entry)  # [1913 Webster], [deg] ...
        entry = re.sub(r"\\[^\\]*\\", "", entry)  # \Pro*nun"ci*a`tion\
        entry = entry.replace("{", "").replace("}", "")
        text = clean(entry)
        if len(text) > 20:
            yield text


_LOADERS = {"kjv": kjv, "wordnet": wordnet, "fortunes": fortunes, "gcide": gcide}


def load_corpus(name: str) -> Iterator[str]:
    """Documents of corpus ``name`` (one of CORPORA)."""
    if name not in _LOADERS:
        raise ValueError(f"unknown text corpus {name!r}; available: {list(CORPORA)}")
    return _LOADERS[name]()
