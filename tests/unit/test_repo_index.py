"""virt-builder repositories: sources, indexes (plain and clear-signed) and revisions."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mclu import errors
from mclu.config import repo_index

DATA = Path(__file__).resolve().parents[1] / "data" / "repo"
URI = "https://builder.example.org/index.asc"


def entries() -> list[repo_index.Entry]:
    return repo_index.parse_index((DATA / "index").read_text(), URI)


def test_index_fields_are_read_as_virt_builder_writes_them() -> None:
    first = entries()[0]
    assert first.name == "fedora-29" and first.revision == 2 and first.arch == "x86_64"
    assert first.display_name == "Fedora® 29 Server" and first.osinfo == "fedora29"
    assert first.file_uri == "https://builder.example.org/fedora-29.xz"
    assert first.size == 6 << 30 and first.compressed_size == 690305364
    assert first.expand == "/dev/sda4" and first.compressed and first.aliases == ("fedora29",)
    assert first.notes == (
        "Fedora Server 29.\n\nThis Fedora image contains only unmodified @Core group packages."
    )
    assert len(first.sha512) == 128


def test_defaults_revision_1_format_raw_and_relative_files() -> None:
    r1 = entries()[1]
    assert r1.revision == 1 and r1.format == "raw" and r1.compressed_size is None
    tiny = entries()[3]
    assert tiny.hidden and tiny.file_uri == "https://builder.example.org/images/tiny.img.xz"
    local = repo_index.parse_index((DATA / "index").read_text(), "file:///srv/repo/index")
    assert local[3].file_uri == "file:///srv/repo/images/tiny.img.xz"


def test_newest_revision_for_the_arch_and_aliases() -> None:
    found = repo_index.newest(entries(), "fedora-29")
    assert found is not None and found.revision == 2
    arm = repo_index.newest(entries(), "fedora-29", arch="aarch64")
    assert arm is not None and arm.revision == 5
    alias = repo_index.newest(entries(), "fedora29")
    assert alias is not None and alias.name == "fedora-29"
    assert repo_index.newest(entries(), "windows") is None


def test_clear_signed_index_is_unwrapped_including_dash_escapes() -> None:
    body = (DATA / "index").read_text()
    escaped = "\n".join("- " + line if line.startswith("-") else line for line in body.split("\n"))
    signed = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"
        + escaped
        + "-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n"
    )
    assert repo_index.parse_index(signed, URI) == entries()


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("size=1\n", "line 1", "before any [section]"),
        ("[a]\nfile=a.xz\nsize=1\n", "[a] (line 1)", "missing checksum[sha512]="),
        (
            "[a]\nfile=a.xz\nsize=big\nchecksum[sha512]=" + "0" * 128 + "\n",
            "[a].size",
            "not a number",
        ),
        ("[a]\nfile=a\nsize=1\nchecksum[sha512]=abc\n", "[a].checksum[sha512]", "sha512"),
        (
            "[a]\nfile=a\nsize=1\nformat=vmdk\nchecksum[sha512]=" + "0" * 128 + "\n",
            "[a].format",
            "vmdk",
        ),
        ("[a]\n== nonsense\n", "line 2", "cannot parse"),
    ],
)
def test_bad_index_names_the_entry_and_field(text: str, where: str, problem: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        repo_index.parse_index(text, URI)
    assert caught.value.key == where and problem in str(caught.value)
    assert str(caught.value).startswith(URI)


def test_sources_from_a_repos_d_file() -> None:
    text = (
        "[libguestfs.org]\nuri=http://builder.libguestfs.org/index.asc\n"
        "gpgkey=file:///etc/virt-builder/repos.d/libguestfs.gpg\n\n"
        "[local]\nuri=file:///srv/repo/index\nproxy=off\n"
    )
    first, second = repo_index.parse_sources(text, "repos.d/x.conf")
    assert first.gpgkey == "file:///etc/virt-builder/repos.d/libguestfs.gpg"
    assert second == repo_index.Source(name="local", uri="file:///srv/repo/index", proxy="off")
    with pytest.raises(errors.ConfigError, match=r"repos.d/x.conf: \[b\] \(line 1\): missing uri"):
        repo_index.parse_sources("[b]\ngpgkey=x\n", "repos.d/x.conf")
    with pytest.raises(errors.ConfigError, match="native"):
        repo_index.parse_sources("[b]\nuri=x\nformat=simplestreams\n", "repos.d/x.conf")


def test_recorded_index_is_valid_for_virt_builder_itself() -> None:
    if shutil.which("virt-index-validate") is None:
        pytest.skip("virt-index-validate is not installed (libguestfs-tools)")
    validate = subprocess.run(
        ["virt-index-validate", str(DATA / "index")], capture_output=True, text=True, check=False
    )
    assert validate.returncode == 0, validate.stderr
