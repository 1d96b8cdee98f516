"""What the entry points (``train.py``, ``infer.py``) share: one-line usage errors and checked numbers.

`Parser` is an `argparse.ArgumentParser` whose mistakes raise `UsageError` (a `ValueError`) instead
of printing the usage block and exiting, so an entry point reports every bad input the same way: one
``error: ...`` line on stderr and exit status 2 (`report`). The ``*_int``/``*_float`` factories
are argparse ``type=`` functions that refuse what is not a number, not finite (nan, inf) or out of
range, with a message that gives the range. This module imports nothing heavy, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import sys

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """A command line that does not parse."""


class Parser(argparse.ArgumentParser):
    """Usage errors raise `UsageError`; options must be spelled out (``--resum`` is not ``--resume``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def report(err: BaseException) -> int:
    """Print ``err`` as the one line a user sees and return the bad-input exit status."""
    text = " ".join(str(err).split()) or type(err).__name__
    print(f"error: {text}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _number(text: str, kind: type):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def bounded_int(low: int | None = None, high: int | None = None):
    """An argparse type: an integer in ``[low, high]`` (either end may be open)."""
    def parse(text: str) -> int:
        value = _number(text, int)
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {_range(low, high)}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def bounded_float(low: float | None = None, high: float | None = None, *, low_open: bool = False):
    """An argparse type: a finite number in ``[low, high]``, or ``(low, high]`` with ``low_open``."""
    def parse(text: str) -> float:
        value = _number(text, float)
        below = low is not None and (value <= low if low_open else value < low)
        if below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be a number {_range(low, high, low_open)}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def float_list(text: str) -> list[float]:
    """An argparse type: comma-separated finite numbers, e.g. ``0.1,0.6,0.2``."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated finite numbers, got {text!r}")
    return values


def _range(low, high, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}]"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    return f"<= {high}"
