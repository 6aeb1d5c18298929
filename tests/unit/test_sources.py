"""Template sources: repos.d files, signed and unsigned indexes over file:// and http://,
resolving names, and the controller's cache of base images."""

from __future__ import annotations

import functools
import hashlib
import http.server
import lzma
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mclu import errors, model
from mclu.config import catalogue, repo_index, sources
from mclu.images import cache
from mclu.sandbox.images import signing

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")

IMAGE_SIZE = 8 << 20


@dataclass
class Repo:
    root: Path
    conf_dir: Path
    image: bytes  # the raw image the index describes

    def source(self, **changes: str | None) -> repo_index.Source:
        (found,) = sources.read_sources([self.conf_dir])
        return repo_index.Source(**{**found.__dict__, **changes})


def gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(
        ["gpg", "--batch", "--quiet", "--homedir", str(home), *args],
        input=data,
        capture_output=True,
        check=True,
    ).stdout


def make_key(home: Path, who: str) -> bytes:
    home.mkdir(mode=0o700)
    gpg(home, "--passphrase", "", "--quick-gen-key", who, "ed25519", "sign", "never")
    return gpg(home, "--armor", "--export", who)


def raw_image() -> bytes:
    """8 MiB with data at the start and the end and zeros (holes to be) between."""
    return b"boot" * 1024 + bytes(IMAGE_SIZE - 8192) + b"data" * 1024


def index_text(image_xz: bytes, revision: int) -> str:
    return (
        f"[tiny]\nname=Tiny test\nosinfo=debian12\narch=x86_64\nfile=tiny.img.xz\n"
        f"revision={revision}\nchecksum[sha512]={hashlib.sha512(image_xz).hexdigest()}\n"
        f"format=raw\nsize={IMAGE_SIZE}\ncompressed_size={len(image_xz)}\n"
        "expand=/dev/sda1\n"
    )


@pytest.fixture(scope="module")
def gnupg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, bytes]]:
    """One signing key for the module: key generation is the slow part. The gpg-agent that
    gpg starts for its home is stopped at the end."""
    home = tmp_path_factory.mktemp("keys") / "gnupg"
    with signing.gnupg(home):
        yield home, make_key(home, "mclu repo")


@pytest.fixture
def repo(tmp_path: Path, gnupg: tuple[Path, bytes]) -> Repo:
    root = tmp_path / "repo"
    root.mkdir()
    image = raw_image()
    xz = lzma.compress(image)
    (root / "tiny.img.xz").write_bytes(xz)
    text = index_text(xz, revision=3)
    (root / "index").write_text(text)
    home, key = gnupg
    (root / "key.asc").write_bytes(key)
    (root / "index.asc").write_bytes(gpg(home, "--clearsign", data=text.encode()))
    conf_dir = tmp_path / "repos.d"
    conf_dir.mkdir()
    (conf_dir / "test.conf").write_text(
        f"[test]\nuri=file://{root}/index.asc\ngpgkey=file://{root}/key.asc\n"
    )
    return Repo(root=root, conf_dir=conf_dir, image=image)


def test_signed_index_is_verified_and_read(repo: Repo) -> None:
    found = sources.find_templates([repo.source()])
    assert found.failed == {}
    (tiny,) = found.templates
    assert tiny.entry.revision == 3 and tiny.source.name == "test"
    assert tiny.entry.file_uri == f"file://{repo.root}/tiny.img.xz"


def test_tampered_index_is_refused(repo: Repo) -> None:
    signed = (repo.root / "index.asc").read_text()
    (repo.root / "index.asc").write_text(signed.replace("revision=3", "revision=9"))
    with pytest.raises(errors.SignatureInvalid, match="bad signature"):
        sources.fetch_index(repo.source())


def test_index_signed_by_another_key_is_refused(repo: Repo, tmp_path: Path) -> None:
    with signing.gnupg(tmp_path / "other"):
        other = make_key(tmp_path / "other", "someone else")
    (repo.root / "other.asc").write_bytes(other)
    with pytest.raises(errors.SignatureInvalid, match="bad signature"):
        sources.fetch_index(repo.source(gpgkey=f"file://{repo.root}/other.asc"))


def test_unsigned_index_with_a_gpgkey_is_refused(repo: Repo) -> None:
    with pytest.raises(errors.SignatureInvalid, match="not signed"):
        sources.fetch_index(repo.source(uri=f"file://{repo.root}/index"))


def test_unsigned_index_without_gpgkey_is_read(repo: Repo) -> None:
    source = repo.source(uri=f"file://{repo.root}/index", gpgkey=None)
    assert "[tiny]" in sources.fetch_index(source)


def test_unreachable_source_is_reported_not_fatal(repo: Repo) -> None:
    gone = repo.source(name="gone", uri="file:///nonexistent/index", gpgkey=None)
    found = sources.find_templates([gone, repo.source()])
    assert len(found.templates) == 1
    assert isinstance(found.failed["gone"], errors.SourceUnavailable)
    assert str(found.failed["gone"]).startswith("cannot fetch file:///nonexistent/index: ")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(repo: Repo) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(repo.root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_repository_index_and_image(repo: Repo, http_root: str, tmp_path: Path) -> None:
    source = repo.source(uri=f"{http_root}/index.asc", gpgkey=f"{http_root}/key.asc")
    found = sources.find_templates([source])
    assert found.failed == {}
    template = sources.resolve("tiny", {}, found.templates)
    assert template.source_uri == f"{http_root}/tiny.img.xz"
    base = cache.ensure(template, tmp_path / "cache")
    assert base.path.read_bytes() == repo.image


def test_resolve_mclu_template_takes_newest_base_and_its_defaults(repo: Repo) -> None:
    found = sources.find_templates([repo.source()])
    older = repo_index.Entry(
        name="tiny", arch="x86_64", file_uri="file:///old.xz", revision=2, sha512="0" * 128, size=1
    )
    available = [*found.templates, sources.RepoTemplate(repo.source(), older)]
    mine = {
        "web": catalogue.Template(
            name="web", path="web.toml", base="tiny", memory=256 << 20, vcpus=2, size=16 << 20
        )
    }
    web = sources.resolve("web", mine, available)
    assert web.base == model.BaseImage(
        template="tiny",
        revision=3,
        arch="x86_64",
        size=IMAGE_SIZE,
        data_bytes=IMAGE_SIZE,
        expand="/dev/sda1",
        digest=web.sha512,
    )
    assert web.sha512 != older.sha512  # the newest's, not the older revision's
    assert web.base.cache_name == f"tiny.x86_64.r3.{web.sha512[:16]}.raw"
    assert (web.memory, web.vcpus, web.disk_size) == (256 << 20, 2, 16 << 20)
    plain = sources.resolve("tiny", mine, available)
    assert plain.name == "tiny" and plain.memory == 1 << 30 and plain.disk_size is None


def test_resolve_unknown_lists_what_is_known(repo: Repo) -> None:
    found = sources.find_templates([repo.source()])
    with pytest.raises(errors.UnknownTemplate, match=r"'fedora-29' \(known: tiny\)"):
        sources.resolve("fedora-29", {}, found.templates)


def test_cache_fetches_once_unpacks_sparse_and_reuses(repo: Repo, tmp_path: Path) -> None:
    found = sources.find_templates([repo.source()])
    template = sources.resolve("tiny", {}, found.templates)
    seen: list[int] = []
    base = cache.ensure(template, tmp_path / "cache", progress=lambda d, t: seen.append(d))
    assert base.path.read_bytes() == repo.image
    assert base.size == IMAGE_SIZE
    assert base.data_bytes < IMAGE_SIZE // 2  # the zeros in the middle are holes
    assert seen and seen[-1] == (repo.root / "tiny.img.xz").stat().st_size
    os.remove(repo.root / "tiny.img.xz")  # a second ensure must not fetch again
    assert cache.ensure(template, tmp_path / "cache") == base
    assert cache.cached(template, tmp_path / "cache") == base


def test_a_revision_published_again_with_other_content_is_fetched_anew(
    repo: Repo, tmp_path: Path
) -> None:
    """Same name and revision, other bytes: the controller's cache fetches it under a name of
    its own (the digest's first digits) and keeps the first, never overwriting a base; one
    cached by name and revision only (older mclu) is neither reused nor offered for sending."""
    directory = tmp_path / "cache"
    found = sources.find_templates([repo.source()])
    first = cache.ensure(sources.resolve("tiny", {}, found.templates), directory)
    (directory / "tiny.x86_64.r3.raw").write_bytes(b"stale")  # as older mclu named it
    image = b"new!" + repo.image[4:]
    xz = lzma.compress(image)
    (repo.root / "tiny.img.xz").write_bytes(xz)
    (repo.root / "index").write_text(index_text(xz, revision=3))
    unsigned = repo.source(uri=f"file://{repo.root}/index", gpgkey=None)
    again = sources.resolve("tiny", {}, sources.find_templates([unsigned]).templates)
    assert again.base.revision == 3 and cache.cached(again, directory) is None
    second = cache.ensure(again, directory)
    assert second.path != first.path
    assert second.path.name == f"tiny.x86_64.r3.{hashlib.sha512(xz).hexdigest()[:16]}.raw"
    assert second.path.read_bytes() == image
    assert first.path.read_bytes() == repo.image  # kept as it was
    assert cache.names(directory) == {first.path.name, second.path.name}
    assert set(cache.ages(directory)) == {first.path.name, second.path.name, "tiny.x86_64.r3.raw"}
    assert cache.remove(directory, [first.path.name, "tiny.x86_64.r3.raw", "gone.raw"]) == {}
    assert sorted(p.name for p in directory.iterdir()) == [".lock", second.path.name]


def test_cache_refuses_a_corrupt_download_and_keeps_nothing(repo: Repo, tmp_path: Path) -> None:
    found = sources.find_templates([repo.source()])
    template = sources.resolve("tiny", {}, found.templates)
    (repo.root / "tiny.img.xz").write_bytes(lzma.compress(b"evil" + repo.image[4:]))
    with pytest.raises(errors.ChecksumMismatch, match="sha512 mismatch"):
        cache.ensure(template, tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".lock"]


def test_repos_d_locations_follow_virt_builder() -> None:
    dirs = sources.default_repo_dirs({"XDG_CONFIG_HOME": "/h", "XDG_CONFIG_DIRS": "/a:/b"})
    assert dirs == [
        Path("/h/virt-builder/repos.d"),
        Path("/a/virt-builder/repos.d"),
        Path("/b/virt-builder/repos.d"),
        Path("/etc/virt-builder/repos.d"),
    ]
