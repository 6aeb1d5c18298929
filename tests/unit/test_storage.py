"""Storage facts parsed from what hosts print."""

from __future__ import annotations

import pytest

from mclu import storage


def test_df_avail() -> None:
    assert storage.parse_df_avail("    Avail\n53687091200\n") == 53687091200


@pytest.mark.parametrize("bad", ["", "Avail\n", "Avail\nlots\n", "1\n2\n3\n"])
def test_df_avail_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="df output"):
        storage.parse_df_avail(bad)


def test_names_sorted_without_blanks() -> None:
    assert storage.parse_names("tiny.x86_64.r3.raw\n\ndebian-12.x86_64.r2.raw\n") == (
        "debian-12.x86_64.r2.raw", "tiny.x86_64.r3.raw")


def test_cache_dir_is_inside_the_image_dir() -> None:
    assert storage.cache_dir("/var/lib/libvirt/images") == "/var/lib/libvirt/images/mclu-templates"
