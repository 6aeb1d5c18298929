"""The sandbox template repository, built for real (cached in $MCLU_SANDBOX_DIR).

The first run builds both templates (about 4 minutes, debootstrap needs the Debian mirror);
later runs find them cached and only check and boot them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mclu.config import repo_index
from mclu.sandbox.images import build, console, index, repository

pytestmark = pytest.mark.sandbox

NEEDS = ("debootstrap", "extlinux", "mkfs.ext4", "qemu-system-x86_64", "gpg", "xz", "unshare")


@pytest.fixture(scope="module")
def repo() -> Path:
    if os.geteuid() != 0:
        pytest.skip("building templates needs root (loop mounts, chroot)")
    missing = [tool for tool in NEEDS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")
    return repository.build_repository(repository.default_state_dir())


def index_entries(repo: Path) -> dict[str, index.IndexEntry]:
    parsed = index.parse_index((repo / "index").read_text())
    return {name: index.entry_from_fields(name, fields) for name, fields in parsed.items()}


@pytest.mark.timeout(1800)
def test_index_parses_and_names_every_template(repo: Path) -> None:
    entries = index_entries(repo)
    assert set(entries) == {"tiny", "debian-12", "debian-12-cloud"}
    assert entries["debian-12-cloud"].file == entries["debian-12"].file  # one image, two names
    assert all(
        e.arch == "x86_64" and e.format == "raw" and e.revision >= 1 for e in entries.values()
    )
    # mclu's own reader of virt-builder indexes agrees, through the signature wrapper.
    signed = repo_index.strip_signature((repo / "index.asc").read_text())
    read = {e.name: e for e in repo_index.parse_index(signed, (repo / "index.asc").as_uri())}
    assert read["tiny"].sha512 == entries["tiny"].checksum
    assert read["debian-12"].size == 1 << 30


def test_index_signature_verifies_with_the_published_key(repo: Path, tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--no-autostart"]  # no agent needed
    subprocess.run([*gpg, "--import", str(repo / "key.asc")], check=True, capture_output=True)
    subprocess.run([*gpg, "--verify", str(repo / "index.asc")], check=True, capture_output=True)
    tampered = tmp_path / "index.asc"
    tampered.write_text((repo / "index.asc").read_text().replace("revision=", "revision=9"))
    bad = subprocess.run([*gpg, "--verify", str(tampered)], capture_output=True, check=False)
    assert bad.returncode != 0


def test_checksums_and_sizes_match_the_files(repo: Path) -> None:
    for entry in index_entries(repo).values():
        path = repo / entry.file
        assert path.stat().st_size == entry.compressed_size
        assert build.sha512_file(path) == entry.checksum
        listing = subprocess.run(
            ["xz", "--robot", "--list", str(path)], check=True, capture_output=True, text=True
        ).stdout
        totals = next(
            line.split("\t") for line in listing.splitlines() if line.startswith("totals")
        )
        assert int(totals[4]) == entry.size  # uncompressed bytes
        assert int(totals[2]) > 1, "16 MiB xz blocks (seekable), not one stream block"


def test_repos_d_conf_points_at_the_signed_index(repo: Path) -> None:
    conf = repository.repo_conf(repo).read_text()
    assert f"uri={(repo / 'index.asc').as_uri()}" in conf
    assert f"gpgkey={(repo / 'key.asc').as_uri()}" in conf


def test_a_second_build_is_a_cached_no_op(repo: Path) -> None:
    generation = repo.resolve()
    manifest = json.loads((repo / "manifest.json").read_text())
    written = {f.name: f.stat().st_mtime_ns for f in generation.iterdir()}
    assert repository.build_repository(repository.default_state_dir()) == repo
    assert repo.resolve() == generation
    assert json.loads((repo / "manifest.json").read_text()) == manifest
    assert {f.name: f.stat().st_mtime_ns for f in generation.iterdir()} == written  # no image made


def unpacked(repo: Path, name: str, tmp_path: Path) -> Path:
    disk = tmp_path / f"{name}.img"
    with disk.open("wb") as out:
        subprocess.run(
            ["xz", "--decompress", "--stdout", str(repo / f"{name}.xz")], stdout=out, check=True
        )
    return disk


@pytest.mark.timeout(180)
def test_tiny_boots_to_a_root_login_and_powers_off_by_acpi(repo: Path, tmp_path: Path) -> None:
    with console.boot(unpacked(repo, "tiny", tmp_path)) as guest:
        guest.login(timeout=60)
        assert guest.run("hostname").strip() == "tiny"
        assert "ID=debian" in guest.run("cat /etc/os-release")
        assert guest.powerdown(timeout=30) == 0


@pytest.mark.timeout(300)
def test_debian_12_boots_to_a_root_login_with_sshd(repo: Path, tmp_path: Path) -> None:
    with console.boot(unpacked(repo, "debian-12", tmp_path), network=True) as guest:
        guest.login(timeout=150)
        assert guest.run("hostname").strip() == "debian"
        assert guest.run("systemctl is-active ssh").strip() == "active"
        assert guest.run("stat -c %a /root/.ssh").strip() == "700"
        # cloud-init is installed, but with no datasource its generator disabled it: none of
        # its units ran (debian-12-cloud, the same file, gets a NoCloud seed).
        assert guest.run("test -x /usr/bin/cloud-init && echo installed").strip() == "installed"
        assert "disabled" in guest.run("ls /run/cloud-init").split()
        assert guest.run("systemctl is-active cloud-init.target").strip() == "inactive"
        assert guest.powerdown(timeout=60) == 0
