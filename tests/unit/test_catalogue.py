"""mclu templates: the shipped catalogue and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from mclu import errors
from mclu.config import catalogue

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_templates_parse() -> None:
    found = catalogue.load(ROOT / "templates")
    assert {"tiny", "debian-12"} <= set(found)
    tiny = found["tiny"]
    assert tiny.base == "tiny" and tiny.memory == 128 << 20 and tiny.vcpus == 1
    assert tiny.size is None  # the base image's own size
    assert found["debian-12"].size == 2 << 30
    assert found["debian-12"].customization.run == ("ssh-keygen -A",)
    assert tiny.network is None  # the host's network


def test_missing_directory_is_an_empty_catalogue(tmp_path: Path) -> None:
    assert catalogue.load(tmp_path / "none") == {}


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("description = 'x'\n", "base", "missing"),
        ("base = 'b'\nvcpus = 0\n", "vcpus", "1 to 512"),
        ("base = 'b'\nmemory = 'lots'\n", "memory", "size"),
        ("base = 'b'\ndisk_bus = 'usb'\n", "disk_bus", "virtio"),
        ("base = 'b'\nflavour = 'x'\n", "flavour", "unknown key"),
        ("base = 'b'\nfull_copy = 'yes'\n", "full_copy", "true or false"),
        ("base = 'b'\nnetwork = 'lan'\n", "network", "bridge:NAME"),
        ("base = 'b'\n[customize]\nreboot = true\n", "customize", "unknown step 'reboot'"),
        ("base = 'b'\n[customize]\nrun = 'x'\n", "customize", "run must be a list"),
        ("base = 'b'\n[customize.files]\n'etc/x' = 'y'\n", "customize", "absolute"),
    ],
)
def test_each_mistake_names_file_and_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        catalogue.parse("t", text, "templates/t.toml")
    assert caught.value.key == key
    assert str(caught.value).startswith(f"templates/t.toml: {key}: ")
    assert problem in str(caught.value)


def test_bad_file_name_is_refused() -> None:
    with pytest.raises(errors.ConfigError, match="file name"):
        catalogue.parse("../x", "base = 'b'\n", "templates/../x.toml")


def test_locate_order(tmp_path: Path) -> None:
    assert catalogue.locate(str(tmp_path), {}) == tmp_path
    assert catalogue.locate(None, {"MCLU_TEMPLATES": "/t"}) == Path("/t")
