"""`mclu templates import`'s detection and import on real small images made with qemu-img and
mkfs: every format taken (each also compressed with xz, gzip, zstd, bzip2) and the ones
refused, among them disks nothing could personalise (only a vfat filesystem, an MBR and no
filesystem). libguestfs's appliance (10-45 s a launch under TCG) is stood in for here, where
a disk reaches it; tests/integration/test_import_inspect.py runs the real one."""

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mclu import errors
from mclu.config import fields, repo_index, sources
from mclu.decide import image_format
from mclu.images import import_inspect, importing

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("mkfs.ext4") is None,
    reason="needs qemu-img and mkfs.ext4",
)

MIB = 1 << 20
SIZE = 8 * MIB
DATA = b"mclu import test data"
DATA_AT = 3 * MIB
PART_AT, PART_SIZE = 1 * MIB, 2 * MIB  # raw_disk's one partition
OS_RELEASE = 'ID=debian\nVERSION_ID=12\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'


def mbr(path: Path, size: int = SIZE, partitions: tuple[tuple[int, int, int], ...] = ()) -> Path:
    """A raw disk of `size` bytes with an MBR listing `partitions` (start, bytes, type)."""
    with open(path, "wb") as disk:
        disk.truncate(size)
        for number, (start, length, kind) in enumerate(partitions):
            disk.seek(446 + 16 * number)
            disk.write(bytes([0, 0, 0x21, 0, kind, 0, 0, 0]) + (start // 512).to_bytes(4, "little"))
            disk.write((length // 512).to_bytes(4, "little"))
        disk.seek(510)
        disk.write(b"\x55\xaa")
    return path


def os_tree(directory: Path, cloud_init: bool = False) -> Path:
    """A directory that mkfs -d makes an OS root (libguestfs's test: /etc/os-release)."""
    (directory / "etc").mkdir(parents=True, exist_ok=True)
    (directory / "etc" / "os-release").write_text(OS_RELEASE)
    if cloud_init:
        (directory / "usr" / "bin").mkdir(parents=True, exist_ok=True)
        (directory / "usr" / "bin" / "cloud-init").write_text("#!/bin/sh\n")
        (directory / "etc" / "cloud").mkdir(exist_ok=True)
        (directory / "etc" / "cloud" / "cloud.cfg").write_text("datasource_list: [NoCloud]\n")
    return directory


def mkfs_ext4(disk: Path, tree: Path | None, at: int = PART_AT, size: int = PART_SIZE) -> None:
    """An ext4 filesystem of `size` bytes at offset `at` of `disk`, holding `tree`."""
    fill = ["-d", str(tree)] if tree is not None else []
    argv = ["mkfs.ext4", "-q", "-F", *fill, "-E", f"offset={at}", str(disk), f"{size // 1024}k"]
    subprocess.run(argv, check=True, capture_output=True)


def raw_disk(path: Path, cloud_init: bool = False) -> Path:
    """A raw disk with an MBR whose one partition holds an ext4 OS root, and some data past
    it."""
    mbr(path, partitions=((PART_AT, PART_SIZE, 0x83),))
    mkfs_ext4(path, os_tree(path.parent / f"{path.name}.root", cloud_init))
    with open(path, "r+b") as disk:
        disk.seek(DATA_AT)
        disk.write(DATA)
    return path


def stand_in_appliance(
    monkeypatch: pytest.MonkeyPatch, found: import_inspect.Inspection | None = None
) -> list[Path]:
    """libguestfs's appliance stood in for: it answers `found` (by default the OS root of
    raw_disk's partition) for the raw disks it is given, which are listed."""
    looked: list[Path] = []
    answer = found or import_inspect.Inspection(
        {"/dev/sda1": "ext4"}, "/dev/sda1", "Debian GNU/Linux 12 (bookworm)", True
    )

    def stand_in(
        source: str, disk: Path, tmpdir: Path, tick: Callable[[], None]
    ) -> import_inspect.Inspection:
        tick()
        assert tmpdir.is_dir()
        looked.append(disk)
        return answer

    monkeypatch.setattr(import_inspect, "inspect", stand_in)
    return looked


@pytest.fixture(autouse=True)
def appliance(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    return stand_in_appliance(monkeypatch)


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
    assert base[PART_AT + 0x438 : PART_AT + 0x43A] == b"\x53\xef"  # the ext4 superblock
    xz = Path(done.file).read_bytes()
    assert done.sha512 == hashlib.sha512(xz).hexdigest() and done.compressed_size == len(xz)
    [entry] = repo_index.parse_index(Path(done.index).read_text(), Path(done.index).as_uri())
    assert (entry.name, entry.revision, entry.format, entry.size) == ("mine", 1, "raw", SIZE)
    assert entry.sha512 == done.sha512 and entry.compressed_size == len(xz)
    assert entry.file_uri == Path(done.file).as_uri()
    assert entry.expand == "/dev/sda1"  # the root's partition: a larger disk grows it
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


@pytest.mark.parametrize("phase", ["unpacking", "converting", "inspecting", "compressing"])
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


# --- measured -----------------------------------------------------------------------------


def test_the_room_a_host_needs_is_qemu_img_measure_s(tmp_path: Path) -> None:
    source = image(tmp_path, "qcow2")
    measured = json.loads(
        subprocess.run(
            ["qemu-img", "measure", "--output=json", "-f", "qcow2", "-O", "qcow2", str(source)],
            capture_output=True,
            check=True,
        ).stdout
    )
    done = do_import(tmp_path, source)
    assert done.required_size == measured["required"]
    # The disk holds its partition's filesystem and DATA, not its 8 MiB: a host keeps less.
    assert 0 < done.required_size < SIZE == done.virtual_size


# --- a disk nothing could personalise ---------------------------------------------------------

NO_OS = "no operating system libguestfs can personalise"


def vfat(path: Path, at: int = 0, size: int = SIZE) -> None:
    if shutil.which("mkfs.vfat") is None:
        pytest.skip("needs mkfs.vfat (dosfstools)")
    offset = ["--offset", str(at // 512)] if at else []
    argv = ["mkfs.vfat", *offset, str(path), str(size // 1024)]
    subprocess.run(argv, check=True, capture_output=True)


@pytest.mark.parametrize("partitioned", [False, True])
def test_a_disk_with_only_a_vfat_filesystem_is_refused_without_an_appliance(
    tmp_path: Path, appliance: list[Path], partitioned: bool
) -> None:
    disk = tmp_path / "esp.img"
    if partitioned:
        vfat(mbr(disk, partitions=((MIB, 6 * MIB, 0x0C),)), at=MIB, size=6 * MIB)
    else:
        with open(disk, "wb") as f:
            f.truncate(SIZE)
        vfat(disk)  # a "superfloppy": its boot sector has 55aa at 510 too, and no partitions
    reason = refused(tmp_path, disk)
    assert reason == f"{disk}: not imported: {NO_OS} (found: one vfat filesystem, no root)"
    assert appliance == []


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_disk_with_an_mbr_and_no_filesystem_is_refused_after_conversion(
    tmp_path: Path, appliance: list[Path], fmt: str
) -> None:
    disk = mbr(tmp_path / "empty.raw", partitions=((MIB, 6 * MIB, 0x83),))
    if fmt == "qcow2":
        qemu_img("convert", "-f", "raw", "-O", "qcow2", str(disk), str(tmp_path / "empty.qcow2"))
        disk = tmp_path / "empty.qcow2"
    reason = refused(tmp_path, disk)
    assert reason.endswith(f"{NO_OS} (found: an MBR with one partition, no filesystem)")
    assert appliance == []
    no_partitions = mbr(tmp_path / "bare.raw")
    assert refused(tmp_path, no_partitions).endswith(
        f"{NO_OS} (found: an MBR with no partitions, no filesystem)"
    )


def test_a_gpt_disk_with_an_esp_and_an_empty_partition_is_refused(
    tmp_path: Path, appliance: list[Path]
) -> None:
    if shutil.which("sfdisk") is None:
        pytest.skip("needs sfdisk")
    disk = tmp_path / "gpt.raw"
    with open(disk, "wb") as f:
        f.truncate(SIZE)
    script = "label: gpt\nstart=2048, size=8192, type=U\nstart=10240, size=4096, type=L\n"
    subprocess.run(["sfdisk", "-q", str(disk)], input=script, text=True, check=True)
    vfat(disk, at=2048 * 512, size=8192 * 512)
    assert refused(tmp_path, disk).endswith(f"{NO_OS} (found: one vfat filesystem, no root)")
    assert appliance == []


def test_an_ext4_filesystem_goes_to_the_appliance_which_finds_no_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = mbr(tmp_path / "data.raw", partitions=((PART_AT, PART_SIZE, 0x83),))
    mkfs_ext4(disk, None)  # a data disk: a filesystem, no /etc
    nothing = import_inspect.Inspection({"/dev/sda1": "ext4"})
    looked = stand_in_appliance(monkeypatch, nothing)
    assert refused(tmp_path, disk).endswith(f"{NO_OS} (found: one ext4 filesystem, no root)")
    assert looked == [disk]  # the raw source itself: one appliance, once
    windows = import_inspect.Inspection({"/dev/sda1": "ntfs"}, "/dev/sda1", "", has_etc=False)
    stand_in_appliance(monkeypatch, windows)
    assert refused(tmp_path, disk).endswith("with no /etc: mclu personalises Linux systems)")


def test_cloud_init_in_the_image_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = import_inspect.Inspection(
        {"/dev/sda1": "ext4"},
        "/dev/sda1",
        "Debian GNU/Linux 12 (bookworm)",
        True,
        ("/usr/bin/cloud-init", "/etc/cloud/cloud.cfg"),
    )
    stand_in_appliance(monkeypatch, found)
    done = do_import(tmp_path, image(tmp_path, "qcow2"))
    assert done.cloud_init == ("/usr/bin/cloud-init", "/etc/cloud/cloud.cfg")
    assert (done.root, done.os_name) == ("/dev/sda1", "Debian GNU/Linux 12 (bookworm)")
    [entry] = repo_index.parse_index(Path(done.index).read_text(), Path(done.index).as_uri())
    assert entry.notes.endswith("; carries cloud-init (/usr/bin/cloud-init, /etc/cloud/cloud.cfg)")


def test_layouts_read_from_the_disk_s_first_bytes(tmp_path: Path) -> None:
    disk = mbr(tmp_path / "d.raw", partitions=((MIB, MIB, 0x83), (2 * MIB, MIB, 0x82)))
    head = disk.read_bytes()[: image_format.HEAD_BYTES]
    assert image_format.layout(head) == image_format.Layout("MBR", (MIB, 2 * MIB))
    extended = mbr(tmp_path / "e.raw", partitions=((MIB, 4 * MIB, 0x05),))
    found = image_format.layout(extended.read_bytes()[: image_format.HEAD_BYTES])
    assert found.unreadable == "an extended partition"
    assert image_format.without_root(found, []) is None  # the appliance must look
    assert image_format.filesystem(bytes(4096)) is None
    assert image_format.filesystem(b"\x01" + bytes(4095)) == "unknown"
    swap = bytearray(8192)
    swap[4086:4096] = b"SWAPSPACE2"
    assert image_format.filesystem(bytes(swap)) == "swap"
    assert image_format.no_root("GPT", ["swap", "vfat", "vfat"], 3) == (
        f"{NO_OS} (found: one swap area, two vfat filesystems, no root)"
    )
    assert image_format.parse_measure({"required": 5, "fully-allocated": 9}) == 5
    assert isinstance(image_format.parse_measure({"required": "x"}), str)


def test_an_inspection_that_libguestfs_fails_refuses_the_image_with_its_last_word() -> None:
    stderr = "libguestfs: trace\nRuntimeError: mount: /dev/sda1: wrong fs type, bad superblock\n"
    refused = import_inspect.failure("disk.img", 1, stderr)
    assert isinstance(refused, errors.ImageRefused)
    assert str(refused) == (
        "disk.img: not imported: libguestfs could not inspect it: RuntimeError: mount: "
        "/dev/sda1: wrong fs type, bad superblock"
    )
    assert str(import_inspect.failure("disk.img", 1, "")).endswith("inspect it: exit status 1")
    assert isinstance(import_inspect.failure("disk.img", 3, ""), errors.LocalToolMissing)


@pytest.mark.parametrize(
    ("root", "expand"),
    [
        ("/dev/sda1", "/dev/sda1"),
        ("/dev/sda12", "/dev/sda12"),
        ("/dev/sda", None),  # a filesystem on the whole disk: nothing to grow
        ("/dev/mapper/vg-root", None),  # LVM: mclu grows partitions only
        ("/dev/md0", None),
        (None, None),
    ],
)
def test_the_partition_a_larger_disk_grows_is_the_roots(
    root: str | None, expand: str | None
) -> None:
    assert importing.expand_partition(root) == expand
