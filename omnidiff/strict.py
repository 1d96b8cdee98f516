"""Building a config dataclass from a plain dict, refusing keys it does not have."""

from __future__ import annotations

from dataclasses import fields
from typing import TypeVar

T = TypeVar("T")


def from_known_keys(cls: type[T], d: dict, what: str) -> T:
    """``cls(**d)``, or a ValueError naming the unknown keys of ``what`` and the valid ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; valid keys: {sorted(known)}")
    return cls(**d)
