"""The unified vocabulary: the one registry that owns every token id.

Layout (docs/design.md, "The vocabulary"): special tokens first, then one contiguous range per modality
part, in the order they were added. A range has a `name` (unique, e.g. ``"text"``,
``"image"``, ``"audio.0"``) and a `modality` (``"text"``, ``"image"``, ``"audio"``,
``"action"``); several ranges may share a modality (one range per RVQ level of the audio
codec). Nothing outside this file hard-codes an id: ask the `Vocab`.

The JSON form travels inside every checkpoint; loading weights under a different vocabulary is
an error (`Vocab.check_compatible`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

VOCAB_FILE = "omnidiff_vocab.json"

# Order matters: ids are assigned in this order starting at 0.
DEFAULT_SPECIALS: tuple[str, ...] = (
    "<pad>", "<mask>", "<bos>", "<eos>", "<unk>",
    "<image>", "</image>", "<audio>", "</audio>", "<action>", "</action>", "<row>",
    "<caption>", "<vqa>", "<t2i>", "<asr>", "<tts>", "<vla>", "<text>",
    "<uncond>", "<system>", "<user>", "<assistant>", "<proprio>", "</proprio>",
)  # fmt: skip

MODALITIES: tuple[str, ...] = ("text", "image", "audio", "action", "special")


@dataclass(frozen=True)
class Range:
    """A contiguous block of global ids ``[offset, offset + size)`` owned by one tokenizer part."""

    name: str
    modality: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size

    def __contains__(self, global_id: int) -> bool:
        return self.offset <= global_id < self.end


class Vocab:
    """Registry of special tokens and modality ranges.

    Example:
        >>> v = Vocab()
        >>> v.add_range("text", 4096)
        >>> v.add_range("image", 1024)
        >>> ids = v.to_global("image", torch.tensor([0, 5]))
        >>> v.modality_of(int(ids[0]))
        'image'
    """

    def __init__(self, specials: tuple[str, ...] | list[str] = DEFAULT_SPECIALS):
        if len(set(specials)) != len(specials):
            dupes = sorted({s for s in specials if list(specials).count(s) > 1})
            raise ValueError(f"duplicate special tokens {dupes}; each special must appear once")
        self.specials: tuple[str, ...] = tuple(specials)
        self._special_ids = {s: i for i, s in enumerate(self.specials)}
        self._ranges: list[Range] = []

    # ----------------------------------------------------------------------------- building
    def add_range(self, name: str, size: int, *, modality: str | None = None, offset: int | None = None) -> Range:
        """Append a range of ``size`` ids after everything registered so far.

        Args:
            name: unique range name; ``"audio.3"`` style names default to modality ``"audio"``.
            size: number of local ids (the tokenizer's vocabulary size), > 0.
            modality: one of MODALITIES; defaults to the part of ``name`` before the first dot.
            offset: explicit first global id (only for loading); must not overlap anything.
        """
        modality = modality or name.split(".")[0]
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r} for range {name!r}; allowed: {list(MODALITIES)}")
        if name in self._special_ids or any(r.name == name for r in self._ranges):
            raise ValueError(f"range {name!r} is already registered; registered ranges: {self.range_names}")
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"range {name!r} needs a positive integer size, got {size!r}")
        offset = self.size if offset is None else offset
        new = Range(name, modality, offset, size)
        occupied = [Range("specials", "special", 0, len(self.specials)), *self._ranges]
        for other in occupied:
            if new.offset < other.end and other.offset < new.end:
                raise ValueError(
                    f"range {name!r} [{new.offset}, {new.end}) overlaps {other.name!r} [{other.offset}, {other.end})"
                )
        self._ranges.append(new)
        self._ranges.sort(key=lambda r: r.offset)
        return new

    @classmethod
    def build(cls, ranges: dict[str, int], specials: tuple[str, ...] | list[str] = DEFAULT_SPECIALS) -> Vocab:
        """A vocabulary with the given ``{name: size}`` ranges, in insertion order."""
        vocab = cls(specials)
        for name, size in ranges.items():
            vocab.add_range(name, size)
        return vocab

    # ----------------------------------------------------------------------------- queries
    @property
    def size(self) -> int:
        return max([len(self.specials), *(r.end for r in self._ranges)])

    def __len__(self) -> int:
        return self.size

    @property
    def ranges(self) -> tuple[Range, ...]:
        return tuple(self._ranges)

    @property
    def range_names(self) -> list[str]:
        return [r.name for r in self._ranges]

    def range(self, name: str) -> Range:
        for r in self._ranges:
            if r.name == name:
                return r
        raise ValueError(f"no range named {name!r}; registered ranges: {self.range_names}")

    def ranges_of(self, modality: str) -> list[Range]:
        found = [r for r in self._ranges if r.modality == modality]
        if not found:
            raise ValueError(f"no range of modality {modality!r}; registered: {sorted({r.modality for r in self._ranges})}")
        return found

    def special(self, token: str) -> int:
        """Global id of a special token such as ``"<mask>"``."""
        try:
            return self._special_ids[token]
        except KeyError:
            raise ValueError(f"unknown special token {token!r}; known: {list(self.specials)}") from None

    def special_name(self, global_id: int) -> str:
        self._check_ids(torch.tensor([global_id]))
        if global_id >= len(self.specials):
            raise ValueError(f"id {global_id} is not a special token (specials are 0..{len(self.specials) - 1})")
        return self.specials[global_id]

    pad_id = property(lambda self: self.special("<pad>"))
    mask_id = property(lambda self: self.special("<mask>"))
    bos_id = property(lambda self: self.special("<bos>"))
    eos_id = property(lambda self: self.special("<eos>"))
    unk_id = property(lambda self: self.special("<unk>"))

    def modality_of(self, global_id: int) -> str:
        """``"special"`` for special tokens, else the modality of the range holding the id."""
        return self.range_of(global_id).modality

    def range_of(self, global_id: int) -> Range:
        self._check_ids(torch.tensor([global_id]))
        if global_id < len(self.specials):
            return Range("specials", "special", 0, len(self.specials))
        for r in self._ranges:
            if global_id in r:
                return r
        raise ValueError(f"id {global_id} falls in a gap between ranges; ranges: {self.describe()}")

    # ----------------------------------------------------------------------------- id maps
    def to_global(self, name: str, local_ids: torch.Tensor) -> torch.Tensor:
        """Map a tokenizer's local ids (0..size-1) of range ``name`` to global ids."""
        r = self.range(name)
        local_ids = torch.as_tensor(local_ids)
        if local_ids.numel() and (int(local_ids.min()) < 0 or int(local_ids.max()) >= r.size):
            raise ValueError(
                f"local ids for range {name!r} must be in [0, {r.size}); got min {int(local_ids.min())}, "
                f"max {int(local_ids.max())}"
            )
        return local_ids.long() + r.offset

    def to_local(self, name: str, global_ids: torch.Tensor) -> torch.Tensor:
        """Inverse of `to_global`; every id must lie inside range ``name``."""
        r = self.range(name)
        global_ids = torch.as_tensor(global_ids)
        if global_ids.numel() and (int(global_ids.min()) < r.offset or int(global_ids.max()) >= r.end):
            raise ValueError(
                f"global ids for range {name!r} must be in [{r.offset}, {r.end}); got min "
                f"{int(global_ids.min())}, max {int(global_ids.max())}"
            )
        return global_ids.long() - r.offset

    def modality_mask(self, *modalities_or_names: str, specials: tuple[str, ...] = ()) -> torch.Tensor:
        """Boolean mask ``[size]``: True on every id of the given modalities / range names.

        Used to restrict sampling to the answer's modality; ``specials`` adds single special
        tokens (for instance ``("<eos>",)`` for text answers).
        """
        mask = torch.zeros(self.size, dtype=torch.bool)
        for key in modalities_or_names:
            hits = [r for r in self._ranges if r.modality == key or r.name == key]
            if not hits:
                raise ValueError(
                    f"{key!r} is neither a modality nor a range name; modalities: "
                    f"{sorted({r.modality for r in self._ranges})}, ranges: {self.range_names}"
                )
            for r in hits:
                mask[r.offset : r.end] = True
        for token in specials:
            mask[self.special(token)] = True
        return mask

    def check_ids(self, ids: torch.Tensor) -> None:
        """Raise ValueError if any id is outside ``[0, size)``."""
        self._check_ids(torch.as_tensor(ids))

    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.size):
            raise ValueError(
                f"token ids must be in [0, {self.size}) for this vocabulary; got min {int(ids.min())}, max {int(ids.max())}"
            )

    # ----------------------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        return {
            "format": "omnidiff-vocab/1",
            "specials": list(self.specials),
            "ranges": [{"name": r.name, "modality": r.modality, "offset": r.offset, "size": r.size} for r in self._ranges],
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        if d.get("format") != "omnidiff-vocab/1":
            raise ValueError(f"not an OmniDiff vocabulary (format {d.get('format')!r}, expected 'omnidiff-vocab/1')")
        vocab = cls(tuple(d["specials"]))
        for r in d["ranges"]:
            vocab.add_range(r["name"], r["size"], modality=r["modality"], offset=r["offset"])
        if vocab.size != d.get("size", vocab.size):
            raise ValueError(f"vocabulary JSON says size {d['size']} but its ranges give {vocab.size}")
        return vocab

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        return cls.from_dict(json.loads(text))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / VOCAB_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """Load from a JSON file or from a folder holding ``omnidiff_vocab.json``."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        if not path.exists():
            raise FileNotFoundError(f"no vocabulary at {path}; save one with Vocab.save(folder)")
        return cls.from_json(path.read_text())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def check_compatible(self, other: Vocab, what: str = "checkpoint") -> None:
        """Raise ValueError describing the first difference if ``other`` is not identical."""
        if self == other:
            return
        a, b = self.to_dict(), other.to_dict()
        if a["specials"] != b["specials"]:
            raise ValueError(f"{what} vocabulary has different special tokens: {b['specials']} vs {a['specials']}")
        raise ValueError(f"{what} vocabulary differs: {other.describe()} vs expected {self.describe()}")

    def describe(self) -> str:
        parts = [f"specials[0:{len(self.specials)}]"] + [f"{r.name}[{r.offset}:{r.end}]" for r in self._ranges]
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"Vocab(size={self.size}, {self.describe()})"
