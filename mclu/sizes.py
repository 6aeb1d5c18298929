"""Sizes in bytes: parsing what users write ("2 GiB", "512M", 1073741824) and showing them."""

from __future__ import annotations

import re
from fractions import Fraction

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1000**3,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1000**4,
    "tib": 1 << 40,
}
# ASCII digits only (\d would take any script's), and at most 30 of them: enough for any
# size up to MAX_SIZE written in bytes, and no work on absurd inputs.
_SIZE = re.compile(r"^\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*([A-Za-z]{0,3})\s*$", re.ASCII)
# No host or guest mclu manages is bigger than this; larger values are typing mistakes.
MAX_SIZE = 1 << 60


def parse(value: object) -> int:
    """Bytes from an int or a string like "2 GiB", "512M", "1.5G" (k, M, G, T are binary).

    Raises ValueError with a message fit for the user, and nothing else, whatever the input.
    A fraction of a byte is dropped ("1.5" is 1).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and (m := _SIZE.match(value)) and m[2].lower() in _UNITS:
        number = int(Fraction(m[1]) * _UNITS[m[2].lower()])  # exact: no float rounding
    else:
        raise ValueError(f'must be a size like "2 GiB", "512M" or bytes, got {_shown(value)}')
    if not 0 <= number <= MAX_SIZE:
        raise ValueError(f"size out of range: {_shown(value)}")
    return number


def _shown(value: object, width: int = 40) -> str:
    """`value` for an error message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def human(n: int) -> str:
    """A size for people: binary units, three significant digits ("1.5 GiB", "512 MiB")."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        # 1023.5 and more would print as "1024": that is the next unit's 1.
        if abs(value) < 1023.5 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return f"{n} B"
    return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
