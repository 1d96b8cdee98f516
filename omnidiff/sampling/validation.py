"""Checks on the options a user gives the sampler, in one place and with one wording.

Each check returns the value or raises a ValueError that names the option, shows what was given and
says what to pass instead. Two traps they close: NaN slips through plain range checks (``nan < 0``
and ``nan > 1`` are both False) and inf through one-sided ones, so real numbers must be finite; and
``8.0`` or ``True`` are not integers here, although Python lets them index and count.
"""

from __future__ import annotations

import math
import numbers


def check_int(name: str, value, *, minimum: int = 1, optional: bool = False) -> int | None:
    """``value`` as an int >= ``minimum`` (None passes when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = f"; use {int(value)}" if _is_whole(value) else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{' or None' if optional else ''}, "
                         f"got {value!r} ({type(value).__name__}){hint}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_real(name: str, value, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, optional: bool = False, hint: str = "") -> float | None:
    """``value`` as a finite float within the given bounds (None passes when ``optional``).

    Args:
        low, high: bounds (None: unbounded on that side); ``low_open``/``high_open`` exclude them.
        hint: what a sensible value looks like, appended to the message.
    """
    if value is None and optional:
        return None
    wanted = _interval(low, high, low_open, high_open) + (" or None" if optional else "")
    suffix = f"; {hint}" if hint else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {wanted}, got {value!r} ({type(value).__name__}){suffix}")
    x = float(value)
    below = low is not None and (x <= low if low_open else x < low)
    above = high is not None and (x >= high if high_open else x > high)
    if not math.isfinite(x) or below or above:
        raise ValueError(f"{name} must be {wanted}, got {value!r}{suffix}")
    return x


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def _is_whole(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _interval(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"
