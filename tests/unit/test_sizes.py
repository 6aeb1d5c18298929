"""Sizes: what users write, and what people read."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mclu import sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 GiB", 2 << 30),
        ("512M", 512 << 20),
        ("1.5G", 3 << 29),
        ("4096", 4096),
        ("10 kB", 10_000),
        ("1 TiB", 1 << 40),
        (1234, 1234),
        ("0", 0),
    ],
)
def test_parse(text: object, expected: int) -> None:
    assert sizes.parse(text) == expected


@pytest.mark.parametrize("bad", ["", "G", "2 gallons", "-1G", "1e3", True, None, 2.5, "9" * 30])
def test_parse_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        sizes.parse(bad)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (3 << 29, "1.5 GiB"),
        ((1 << 30) - (1 << 19), "1 GiB"),  # 1023.5 MiB would print as "1024 MiB"
        (200 << 20, "200 MiB"),
        (1023 << 20, "1023 MiB"),
        (5 << 40, "5 TiB"),
    ],
)
def test_human(n: int, text: str) -> None:
    assert sizes.human(n) == text


@given(st.integers(min_value=0, max_value=1 << 50))
def test_human_round_trips_within_rounding(n: int) -> None:
    back = sizes.parse(sizes.human(n).replace(" ", ""))
    assert abs(back - n) <= max(n * 0.01, 1)
