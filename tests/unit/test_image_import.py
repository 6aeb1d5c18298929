"""`mclu templates import`'s detection and import on real small images made with qemu-img:
every format taken (each also compressed with xz, gzip, zstd, bzip2) and the ones refused."""

from __future__ import annotations

import hashlib
import http.server
import json
import lzma
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mclu import errors
from mclu.config import fields, repo_index, sources
from mclu.decide import image_format
from mclu.images import importing

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

MIB = 1 << 20
SIZE = 8 * MIB
DATA = b"mclu import test data"
DATA_AT = 3 * MIB


def raw_disk(path: Path) -> Path:
    """A raw disk with an MBR (partition table signature 0x55aa) and some data."""
    with open(path, "wb") as disk:
        disk.truncate(SIZE)
        disk.seek(446)
        disk.write(bytes([0, 0, 0x21, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little"))
        disk.write((SIZE // 512 - 2048).to_bytes(4, "little"))
        disk.seek(510)
        disk.write(b"\x55\xaa")
        disk.seek(DATA_AT)
        disk.write(DATA)
    return path


def qemu_img(*argv: str) -> None:
    subprocess.run(["qemu-img", *argv], check=True, capture_output=True)


def image(tmp_path: Path, fmt: str) -> Path:
    raw = raw_disk(tmp_path / "disk.raw")
    if fmt == "raw":
        return raw
    out = tmp_path / f"disk.{fmt}"
    qemu_img("convert", "-f", "raw", "-O", fmt, str(raw), str(out))
    raw.unlink()
    return out


def compress(path: Path, packer: str) -> Path:
    if shutil.which(packer) is None:
        pytest.skip(f"needs {packer}")
    subprocess.run([packer, "-q", path], check=True)
    suffix = {"xz": ".xz", "gzip": ".gz", "zstd": ".zst", "bzip2": ".bz2"}[packer]
    packed = path.with_name(path.name + suffix)
    if packer == "zstd":
        path.unlink()
    # Named so that no file name could tell the format.
    return packed.rename(path.with_name("image.bin"))


def do_import(
    tmp_path: Path,
    source: Path | str,
    name: str = "mine",
    checksum: tuple[str, str] | None = None,
    seen: list[tuple[str, int, int]] | None = None,
) -> importing.Imported:
    work = Path(tempfile.mkdtemp(prefix="work-", dir=tmp_path))  # as each run has its own
    request = importing.Request(source=str(source), name=name, checksum=checksum)
    progress = (lambda *a: seen.append(a)) if seen is not None else (lambda *a: None)
    return importing.import_image(request, tmp_path / "repo", work, progress)


def refused(tmp_path: Path, source: Path | str, checksum: tuple[str, str] | None = None) -> str:
    with pytest.raises(errors.ImageRefused) as e:
        do_import(tmp_path, source, checksum=checksum)
    repo = tmp_path / "repo"
    assert not (repo / "index").exists()  # nothing kept
    assert not [p for p in repo.glob("*") if p.name != ".lock"] if repo.exists() else True
    assert str(e.value).startswith(f"{source}: not imported: ")
    return str(e.value)


def unpacked_base(done: importing.Imported) -> bytes:
    with lzma.open(done.file) as base:
        return base.read()


# --- taken ----------------------------------------------------------------------------------


# Every format bare, and every compressor around one of them (each format in one).
CASES = [(f, None) for f in ("qcow2", "raw", "vmdk", "vdi")] + [
    ("qcow2", "xz"),
    ("raw", "gzip"),
    ("vmdk", "zstd"),
    ("vdi", "bzip2"),
]


@pytest.mark.parametrize(("fmt", "packer"), CASES)
def test_every_format_bare_or_compressed_becomes_a_raw_xz_revision(
    tmp_path: Path, fmt: str, packer: str | None
) -> None:
    source = image(tmp_path, fmt)
    if packer:
        source = compress(source, packer)
    seen: list[tuple[str, int, int]] = []
    done = do_import(tmp_path, source, seen=seen)
    assert (done.format, done.compression, done.revision) == (fmt, packer, 1)
    assert done.virtual_size == SIZE
    base = unpacked_base(done)
    assert len(base) == SIZE and base[DATA_AT : DATA_AT + len(DATA)] == DATA
    assert base[510:512] == b"\x55\xaa"
    xz = Path(done.file).read_bytes()
    assert done.sha512 == hashlib.sha512(xz).hexdigest() and done.compressed_size == len(xz)
    [entry] = repo_index.parse_index(Path(done.index).read_text(), Path(done.index).as_uri())
    assert (entry.name, entry.revision, entry.format, entry.size) == ("mine", 1, "raw", SIZE)
    assert entry.sha512 == done.sha512 and entry.compressed_size == len(xz)
    assert entry.file_uri == Path(done.file).as_uri()
    assert seen[-1] == ("compressing", SIZE, SIZE)


def test_xz_blocks_are_16_mib_so_the_base_is_seekable(tmp_path: Path) -> None:
    done = do_import(tmp_path, image(tmp_path, "raw"))
    listed = subprocess.run(
        ["xz", "--robot", "--list", done.file], capture_output=True, text=True, check=True
    ).stdout
    assert "block" in listed or "file" in listed  # xz reads it back
    assert importing.XZ[2] == "--block-size=16MiB"


def test_a_second_import_is_the_next_revision_and_replaces_the_section(tmp_path: Path) -> None:
    first = do_import(tmp_path, image(tmp_path, "qcow2"))
    second = do_import(tmp_path, image(tmp_path, "raw"))
    other = do_import(tmp_path, image(tmp_path, "raw"), name="other")
    index = Path(second.index)
    entries = repo_index.parse_index(index.read_text(), index.as_uri())
    assert sorted((e.name, e.revision) for e in entries) == [("mine", 2), ("other", 1)]
    assert not Path(first.file).exists() and Path(second.file).exists()
    assert Path(other.file).exists()


def test_revision_follows_the_newest_any_source_has(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    request = importing.Request(
        source=str(image(tmp_path, "raw")), name="debian-12", revision_above=7
    )
    done = importing.import_image(request, tmp_path / "repo", work, lambda *a: None)
    assert done.revision == 8


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_a_matching_checksum_is_taken(tmp_path: Path, algorithm: str) -> None:
    source = compress(image(tmp_path, "qcow2"), "gzip")
    digest = hashlib.new(algorithm, source.read_bytes()).hexdigest()
    assert do_import(tmp_path, source, checksum=(algorithm, digest)).revision == 1


def test_the_conf_names_the_repository_for_mclu_and_virt_builder(tmp_path: Path) -> None:
    conf = importing.write_conf(tmp_path / "repos.d", tmp_path / "repo")
    [source] = repo_index.parse_sources(conf.read_text(), str(conf))
    assert source.uri == (tmp_path / "repo" / "index").as_uri() and source.gpgkey is None
    assert importing.write_conf(tmp_path / "repos.d", tmp_path / "repo") == conf
    env = {"HOME": "/home/u"}
    assert importing.repository_dir(env) == Path("/home/u/.local/share/mclu/images")
    assert importing.repository_dir({**env, "XDG_DATA_HOME": "/d"}) == Path("/d/mclu/images")


# --- refused --------------------------------------------------------------------------------


def test_a_qcow2_backed_by_a_controller_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"controller secret" * 1000)
    backed = tmp_path / "backed.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(backed))
    assert "it has a backing file" in refused(tmp_path, backed)


def test_a_qcow2_with_an_external_data_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "data.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={tmp_path / 'd.raw'}", str(out), "8M")
    assert "external data file" in refused(tmp_path, out)


def test_a_vmdk_descriptor_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "desc.vmdk"
    qemu_img("create", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(out), "8M")
    assert "vmdk descriptor" in refused(tmp_path, out)


def test_a_sparse_vmdk_split_in_extents_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "split.vmdk"
    qemu_img("create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", str(out), "8M")
    assert "extents are other files" in refused(tmp_path, out)


def test_a_truncated_qcow2_is_refused(tmp_path: Path) -> None:
    whole = image(tmp_path, "qcow2")
    data = whole.read_bytes()
    cut = tmp_path / "cut.qcow2"
    cut.write_bytes(data[: len(data) // 2])
    assert "qcow2" in refused(tmp_path, cut)


def test_a_qcow2_in_a_truncated_xz_is_refused(tmp_path: Path) -> None:
    packed = compress(image(tmp_path, "qcow2"), "xz")
    data = packed.read_bytes()
    packed.write_bytes(data[: len(data) - 40])
    assert "xz data is corrupt or truncated" in refused(tmp_path, packed)


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(hashlib.sha512(b"seed").digest() * 2048)
    assert "not a disk image" in refused(tmp_path, junk)


def test_an_iso_is_refused_even_with_an_mbr(tmp_path: Path) -> None:
    iso = raw_disk(tmp_path / "hybrid.iso")  # a hybrid ISO: an MBR and a volume descriptor
    with open(iso, "r+b") as f:
        f.seek(0x8000)
        f.write(b"\x01CD001\x01")
    assert "ISO 9660" in refused(tmp_path, iso)


def test_a_checksum_that_does_not_match_is_refused(tmp_path: Path) -> None:
    source = image(tmp_path, "raw")
    assert "sha256 mismatch" in refused(tmp_path, source, checksum=("sha256", "0" * 64))


def test_a_missing_file_and_a_directory_are_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, tmp_path / "nope").endswith("no such file")
    (tmp_path / "dir").mkdir()
    assert refused(tmp_path, tmp_path / "dir").endswith("not a regular file")


def test_a_url_that_fails_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.SourceUnavailable):
        do_import(tmp_path, "http://127.0.0.1:9/disk.qcow2")
    assert not (tmp_path / "repo" / "index").exists()


# --- the pure decisions ---------------------------------------------------------------------


def test_detect_names_what_is_not_taken() -> None:
    assert image_format.detect(b"conectix" + bytes(600)).reason.startswith("a VHD image")
    assert image_format.detect(bytes(4096)).reason.startswith("empty")
    xfs = image_format.detect(b"XFSB" + bytes(4096))
    assert (xfs.format, xfs.reason) == ("raw", "XFS file system")
    ext = bytearray(4096)
    ext[0x438:0x43A] = b"\x53\xef"
    assert image_format.detect(bytes(ext)) == image_format.Detected("raw", "ext2/3/4 file system")
    gpt = bytearray(4096)
    gpt[510:512], gpt[512:520] = b"\x55\xaa", b"EFI PART"
    assert image_format.detect(bytes(gpt)).reason == "GPT"
    assert image_format.compression(b"\xfd7zXZ\x00...") == "xz"


def test_check_info_refuses_a_disk_larger_than_any_host(tmp_path: Path) -> None:
    info = {"format": "qcow2", "virtual-size": fields.MAX_DISK + 1, "actual-size": 1}
    reason = image_format.check_info(info, "qcow2", fields.MAX_DISK)
    assert isinstance(reason, str) and "larger than any host" in reason
    ok = image_format.check_info({**info, "virtual-size": 5}, "qcow2", fields.MAX_DISK)
    assert ok == image_format.Measured(5, 1)
    corrupt = {**info, "format-specific": {"type": "qcow2", "data": {"corrupt": True}}}
    assert image_format.check_info(corrupt, "qcow2", fields.MAX_DISK) == "qcow2 marked corrupt"


def test_a_huge_virtual_size_is_refused_before_any_convert(tmp_path: Path) -> None:
    huge = tmp_path / "huge.qcow2"
    qemu_img("create", "-f", "qcow2", str(huge), str(fields.MAX_DISK + (1 << 30)))
    assert "larger than any host could hold" in refused(tmp_path, huge)
    assert not list(tmp_path.glob("work-*/base.raw"))


def test_qemu_img_info_json_is_what_check_info_reads(tmp_path: Path) -> None:
    out = image(tmp_path, "vmdk")
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", "-f", "vmdk", str(out)],
            capture_output=True,
            check=True,
        ).stdout
    )
    assert image_format.check_info(info, "vmdk", fields.MAX_DISK) == image_format.Measured(
        SIZE, info["actual-size"]
    )


# --- from a URL -------------------------------------------------------------------------------


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over http on 127.0.0.1, and its URL."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_image_from_a_url_is_downloaded_checked_and_imported(
    tmp_path: Path, http_dir: tuple[Path, str]
) -> None:
    served, url = http_dir
    packed = compress(image(tmp_path, "qcow2"), "xz")
    digest = hashlib.sha512(packed.read_bytes()).hexdigest()
    shutil.move(packed, served / "cloud.img")
    seen: list[tuple[str, int, int]] = []
    done = do_import(tmp_path, f"{url}/cloud.img", checksum=("sha512", digest), seen=seen)
    assert (done.format, done.compression) == ("qcow2", "xz")
    assert unpacked_base(done)[DATA_AT : DATA_AT + len(DATA)] == DATA
    assert ("downloading", (served / "cloud.img").stat().st_size) in {p[:2] for p in seen}
    wrong = ("sha512", "1" * 128)
    with pytest.raises(errors.ImageRefused, match="sha512 mismatch"):
        do_import(tmp_path, f"{url}/cloud.img", name="other", checksum=wrong)


def test_a_url_that_is_not_found_is_refused(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    _, url = http_dir
    with pytest.raises(
        errors.SourceUnavailable, match=r"(?i)cannot fetch .*/gone\.img: .*not found"
    ):
        do_import(tmp_path, f"{url}/gone.img")
    assert not (tmp_path / "repo" / "index").exists()


@pytest.mark.parametrize("phase", ["unpacking", "converting", "compressing"])
def test_stopped_by_progress_kills_the_tools_and_keeps_nothing(tmp_path: Path, phase: str) -> None:
    source = compress(image(tmp_path, "vdi"), "gzip")

    def progress(now: str, done: int, total: int) -> None:
        if now == phase:
            raise importing.Stopped

    work = tmp_path / "work"
    work.mkdir()
    request = importing.Request(source=str(source), name="mine")
    with pytest.raises(importing.Stopped):
        importing.import_image(request, tmp_path / "repo", work, progress)
    assert [p.name for p in (tmp_path / "repo").glob("*")] in ([], [".lock"])


def test_stopped_at_the_last_word_keeps_nothing(tmp_path: Path) -> None:
    """The last progress report comes once the file is whole, before anything is renamed."""
    calls: list[tuple[str, int, int]] = []

    def progress(*report: Any) -> None:
        calls.append(report)
        if len(calls) > 1 and calls[-1] == calls[-2] == ("compressing", SIZE, SIZE):
            raise importing.Stopped

    work = tmp_path / "work"
    work.mkdir()
    request = importing.Request(source=str(image(tmp_path, "raw")), name="mine")
    with pytest.raises(importing.Stopped):
        importing.import_image(request, tmp_path / "repo", work, progress)
    assert [p.name for p in (tmp_path / "repo").glob("*")] == [".lock"]


def test_the_stop_event_kills_the_running_tool_and_keeps_nothing(tmp_path: Path) -> None:
    stop = threading.Event()

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "compressing":
            stop.set()  # asked from outside: the import notices by itself

    work = tmp_path / "work"
    work.mkdir()
    request = importing.Request(source=str(image(tmp_path, "qcow2")), name="mine")
    with pytest.raises(importing.Stopped):
        importing.import_image(request, tmp_path / "repo", work, progress, stop)
    assert [p.name for p in (tmp_path / "repo").glob("*")] == [".lock"]


@pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")
def test_signed_with_the_users_key_mclu_checks_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(home))
    user = "mclu test <t@example.org>"
    gen = ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", user, "ed25519", "sign"]
    subprocess.run([*gen, "never"], check=True, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    request = importing.Request(
        source=str(image(tmp_path, "raw")), name="mine", sign_key="t@example.org"
    )
    repo = tmp_path / "repo"
    done = importing.import_image(request, repo, work, lambda *a: None)
    assert done.signed_by == "t@example.org"
    conf = importing.write_conf(tmp_path / "repos.d", repo, signed=True)
    [source] = repo_index.parse_sources(conf.read_text(), str(conf))
    assert source.uri.endswith("/index.asc") and source.gpgkey is not None
    text = sources.fetch_index(source)  # checked against key.asc by gpg
    [entry] = repo_index.parse_index(text, source.uri)
    assert entry.sha512 == done.sha512
    # Later imports sign with the same key without being told.
    again = importing.Request(source=str(image(tmp_path, "raw")), name="other")
    assert importing.import_image(again, repo, work, lambda *a: None).signed_by == done.signed_by
    names = {e.name for e in repo_index.parse_index(sources.fetch_index(source), source.uri)}
    assert names == {"mine", "other"}


def test_a_key_gpg_does_not_have_fails_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(home))
    request = importing.Request(source=str(image(tmp_path, "raw")), name="mine", sign_key="nobody")
    with pytest.raises((errors.LocalCommandFailed, errors.LocalToolMissing)):
        importing.import_image(request, tmp_path / "repo", tmp_path, lambda *a: None)
    assert [p.name for p in (tmp_path / "repo").glob("*")] == [".lock"]


def test_a_backing_url_is_refused_from_the_header_before_qemu_img_opens_it(
    tmp_path: Path,
) -> None:
    """A backing URL would be followed by `qemu-img convert`: refused from the header, and
    nothing connects to it at any step."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        out = tmp_path / "url.qcow2"
        backing = f"nbd://127.0.0.1:{port}/secret"
        qemu_img("create", "-f", "qcow2", "-u", "-b", backing, "-F", "raw", str(out), "8M")
        assert "it has a backing file" in refused(tmp_path, out)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody came


def test_the_qcow2_header_alone_tells_backing_and_data_files(tmp_path: Path) -> None:
    backed = tmp_path / "b.qcow2"
    qemu_img("create", "-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw", str(backed), "8M")
    assert image_format.detect(backed.read_bytes()).format is None
    data = tmp_path / "d.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={tmp_path / 'd.raw'}", str(data), "8M")
    assert "external data file" in image_format.detect(data.read_bytes()).reason
    assert image_format.detect(b"QFI\xfb" + bytes(20)).reason.startswith("qcow2 truncated")
