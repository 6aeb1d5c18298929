"""The pure parts of the sandbox template repository: index text, build keys, parsers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mclu.errors import UsageError
from mclu.sandbox import config
from mclu.sandbox.images import debian, index, recipes, repository

ENTRY = index.IndexEntry(
    name="tiny",
    title="mclu tiny",
    osinfo="debian12",
    file="tiny.xz",
    revision=3,
    checksum="ab" * 64,
    size=128 << 20,
    compressed_size=11181512,
    notes="First line.\n\nAfter a blank line.",
)

RENDERED = f"""\
[tiny]
name=mclu tiny
osinfo=debian12
arch=x86_64
file=tiny.xz
revision=3
checksum[sha512]={"ab" * 64}
format=raw
size=134217728
compressed_size=11181512
expand=/dev/sda1
notes=First line.
 \n After a blank line.

"""


def test_entry_renders_in_virt_builder_index_format() -> None:
    assert index.render_entry(ENTRY) == RENDERED


def test_index_sorts_templates_and_parses_back() -> None:
    other = dataclasses.replace(ENTRY, name="debian-12", file="debian-12.xz", notes="")
    text = index.render_index([ENTRY, other])
    assert text.index("[debian-12]") < text.index("[tiny]")
    parsed = index.parse_index(text)
    assert list(parsed) == ["debian-12", "tiny"]
    assert "notes" not in parsed["debian-12"]
    assert index.entry_from_fields("tiny", parsed["tiny"]) == ENTRY
    assert index.entry_from_fields("debian-12", parsed["debian-12"]) == other


def test_empty_field_is_refused() -> None:
    with pytest.raises(ValueError, match="osinfo"):
        index.render_entry(dataclasses.replace(ENTRY, osinfo=""))


def test_parse_index_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="line 2"):
        index.parse_index("[tiny]\nno equals sign here\n")


def test_repo_conf() -> None:
    conf = index.render_repo_conf("mclu-sandbox", "file:///r/index.asc", "file:///r/key.asc")
    assert conf == ("[mclu-sandbox]\nuri=file:///r/index.asc\ngpgkey=file:///r/key.asc\n")


# --- build keys ---------------------------------------------------------------------------

SCRIPTS = {"tiny-root.sh": b"echo root\n", "disk.sh": b"echo disk\n"}
INPUTS = {"kernel": "6.1.0-56-amd64", "package:busybox-static": "1:1.35.0-4"}


def key(
    recipe: recipes.Recipe = recipes.TINY,
    scripts: dict[str, bytes] = SCRIPTS,
    inputs: dict[str, str] = INPUTS,
) -> str:
    return recipes.build_key(recipe, scripts, inputs)


def test_build_key_is_stable_and_ignores_mapping_order() -> None:
    assert key() == key(
        scripts=dict(reversed(SCRIPTS.items())), inputs=dict(reversed(INPUTS.items()))
    )
    assert len(key()) == 64


@pytest.mark.parametrize(
    "changed",
    [
        {"scripts": {**SCRIPTS, "disk.sh": b"echo disk -v\n"}},
        {"inputs": {**INPUTS, "package:busybox-static": "1:1.35.0-5"}},
        {"inputs": {**INPUTS, "kernel": "6.1.0-57-amd64"}},
        {"recipe": dataclasses.replace(recipes.TINY, size_mib=256)},
        {"recipe": recipes.DEBIAN_12},
    ],
)
def test_build_key_changes_with_any_input(changed: dict[str, object]) -> None:
    assert key(**changed) != key()  # type: ignore[arg-type]


def test_recipes_name_their_packaged_scripts() -> None:
    for recipe in recipes.RECIPES.values():
        for name in recipe.scripts:
            assert recipes.script_path(name).is_file(), name


# --- parsers of Debian tool output --------------------------------------------------------


def test_parse_dpkg_versions() -> None:
    text = "busybox-static\t1:1.35.0-4+deb12u1+b1\nextlinux\t3:6.04~git\nbroken line\n"
    assert debian.parse_dpkg_versions(text) == {
        "busybox-static": "1:1.35.0-4+deb12u1+b1",
        "extlinux": "3:6.04~git",
    }


def test_parse_apt_show_takes_the_first_record_of_each_package() -> None:
    text = (
        "Package: libc6\nVersion: 2.36-9+deb12u14\nDescription: x\n multi\n\n"
        "Package: base-files\nArchitecture: amd64\nVersion: 12.4+deb12u15\n\n"
        "Package: libc6\nVersion: 2.36-9\n"
    )
    assert debian.parse_apt_show(text) == {
        "libc6": "2.36-9+deb12u14",
        "base-files": "12.4+deb12u15",
    }


@pytest.mark.parametrize(
    ("depends", "kver"),
    [
        ("linux-image-6.1.0-56-amd64 (= 6.1.192-2)", "6.1.0-56-amd64"),
        ("linux-image-6.12.9-amd64", "6.12.9-amd64"),
        (
            "linux-image-6.1.0-56-amd64-unsigned (= 6.1.192-2) | linux-image-6.1.0-56-amd64",
            "6.1.0-56-amd64-unsigned",
        ),
        ("", None),
    ],
)
def test_kernel_from_depends(depends: str, kver: str | None) -> None:
    assert debian.kernel_from_depends(depends) == kver


DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example.org/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example.org/debian-security
Suites: bookworm-security
Components: main
"""
ONE_LINE = """\
deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main
deb-src http://src.example.org/debian bookworm main
# deb http://commented.example.org/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://one.example.org/debian bookworm main
"""


def test_mirrors_from_deb822_sources() -> None:
    assert debian.mirrors_from_sources([ONE_LINE.splitlines()[0], DEB822]) == (
        "http://mirror.example.org/debian",
        "http://security.example.org/debian-security",
    )


def test_mirrors_from_one_line_sources_with_options() -> None:
    assert debian.mirrors_from_sources([ONE_LINE]) == (
        "http://one.example.org/debian",
        debian.DEFAULT_SECURITY_MIRROR,
    )


def test_mirrors_fall_back_to_deb_debian_org() -> None:
    assert debian.mirrors_from_sources([]) == (
        debian.DEFAULT_MIRROR,
        debian.DEFAULT_SECURITY_MIRROR,
    )


# --- repository helpers -------------------------------------------------------------------


def test_unknown_template_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nope"):
        repository.build_repository(tmp_path, names=["tiny", "nope"])
    assert not any(tmp_path.iterdir())


def test_state_dir_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCLU_SANDBOX_DIR", "/srv/sb")
    assert repository.default_state_dir() == Path("/srv/sb")
    monkeypatch.delenv("MCLU_SANDBOX_DIR")
    assert repository.default_state_dir() == config.DEFAULT_STATE_DIR


def test_virt_builder_env_and_conf_path() -> None:
    repo = Path("/s/repo")
    assert repository.repo_conf(repo) == Path("/s/repo/virt-builder/repos.d/mclu-sandbox.conf")
    env = repository.virt_builder_env(repo, Path("/c"))
    assert env == {
        "VIRT_BUILDER_DIRS": "/s/repo",
        "XDG_CONFIG_HOME": "/c/config",
        "XDG_CACHE_HOME": "/c/cache",
    }


def test_manifest_missing_or_damaged_reads_as_empty(tmp_path: Path) -> None:
    assert repository.read_manifest(tmp_path) == {}
    (tmp_path / "manifest.json").write_text('{"tiny": {"name": "tiny"}}')
    assert repository.read_manifest(tmp_path) == {}


def test_debian_12_is_published_also_as_debian_12_cloud_from_the_same_file() -> None:
    built = repository.Built(
        name="debian-12",
        build_key="k" * 64,
        revision=4,
        inputs={},
        file="debian-12.xz",
        size=1 << 30,
        allocated=700 << 20,
        compressed_size=200 << 20,
        checksum="cd" * 64,
        seconds=300.0,
        built_at="2026-11-29T12:00:00+0000",
    )
    stale = dataclasses.replace(built, name="gone", file="gone.xz")  # no recipe: left out
    entries = {e.name: e for e in repository.index_entries({"debian-12": built, "gone": stale})}
    assert set(entries) == {"debian-12", "debian-12-cloud"}
    plain, cloud = entries["debian-12"], entries["debian-12-cloud"]
    same = ("file", "revision", "checksum", "size", "compressed_size", "osinfo")
    assert [getattr(cloud, f) for f in same] == [getattr(plain, f) for f in same]
    assert "cloud-init" in cloud.title and "cloud-init" not in plain.title


def test_debian_13_is_built_only_when_named() -> None:
    """The default set (the test suite's, the demo's) is tiny and debian-12; debian-13, for
    the cloud-init benchmark, is built when named, by the same steps from trixie."""
    assert [r.name for r in repository._check_names(None)] == ["tiny", "debian-12"]
    assert [r.name for r in repository._check_names(["debian-13"])] == ["debian-13"]
    d13 = recipes.RECIPES["debian-13"]
    assert d13.debootstrapped and not recipes.TINY.debootstrapped
    assert d13.params["suite"] == "trixie" and d13.scripts == recipes.DEBIAN_12.scripts
    assert set(d13.also) == {"debian-13-cloud"} and "trixie" in d13.notes
