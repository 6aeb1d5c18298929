"""Storage facts parsed from what hosts print."""

from __future__ import annotations

import pytest

from mclu import hostpaths
from mclu.read import storage


def test_df_avail() -> None:
    assert storage.parse_df_avail("    Avail\n53687091200\n") == 53687091200


@pytest.mark.parametrize("bad", ["", "Avail\n", "Avail\nlots\n", "1\n2\n3\n"])
def test_df_avail_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="df output"):
        storage.parse_df_avail(bad)


def test_names_sorted_without_blanks() -> None:
    assert storage.parse_names("tiny.x86_64.r3.raw\n\ndebian-12.x86_64.r2.raw\n") == (
        "debian-12.x86_64.r2.raw",
        "tiny.x86_64.r3.raw",
    )


def test_cache_dir_is_inside_the_image_dir() -> None:
    assert (
        hostpaths.cache_dir("/var/lib/libvirt/images") == "/var/lib/libvirt/images/mclu-templates"
    )


def test_ages_from_the_hosts_clock() -> None:
    assert storage.parse_ages("1000\ntiny.x86_64.r1.raw 400.5\nd e.raw 999\n") == {
        "tiny.x86_64.r1.raw": 599.5,
        "d e.raw": 1.0,
    }
    assert storage.parse_ages("") == {}


def test_backing_files_from_concatenated_qemu_img_json() -> None:
    text = (
        '{"filename": "a.qcow2", "full-backing-filename": "/i/mclu-templates/t.raw"}\n'
        '{"filename": "b.img", "format": "raw"}\n'
        '{"filename": "c.qcow2", "backing-filename": "/i/mclu-templates/u.raw"}\n'
    )
    assert storage.parse_backing(text) == {"/i/mclu-templates/t.raw", "/i/mclu-templates/u.raw"}


def test_change_times_of_the_paths_asked_about() -> None:
    text = "1795199990 /i/web1.qcow2\n1795199991 /i/other.qcow2\nbad /i/web2.qcow2\n"
    assert storage.parse_change_times(text, ["/i/web1.qcow2", "/i/web2.qcow2"]) == {
        "/i/web1.qcow2": 1795199990.0
    }
