"""The command lines of `mclu.hosts.commands`, run on a real host (a sandbox host) and on the
fake, with the same expectations: exit statuses and the files they leave. The fake answers
them from its file table (`mclu.hosts.fake_files`); this suite keeps it true.

Each test works in a fresh directory of its own on the host, removed when it ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import zstandard

from mclu import errors, hostpaths
from mclu.hosts import commands, fake, open_session
from mclu.hosts.fake_files import Image
from mclu.hosts.session import CommandResult, Session
from mclu.images import nbd
from mclu.model import HostSpec
from mclu.read import storage
from tests.contract.targets import MISSING

MIB = 1 << 20


@dataclass
class Host:
    """A session with a shell, and a fresh directory on its host to work in."""

    session: Session
    directory: str
    fake_host: fake.FakeHost | None  # the fake's state, when the host is the fake

    def path(self, name: str) -> str:
        return f"{self.directory}/{name}"

    async def run(self, argv: list[str]) -> CommandResult:
        return await self.session.run(argv, check=False)

    async def put(self, name: str, data: bytes) -> str:
        """A file `name` in the directory holding data (how a test sets the scene)."""
        path = self.path(name)
        if self.fake_host is not None:
            self.fake_host.files.write(path, data)
        else:
            # (no input at all for no data: an empty input is never ended)
            script = 'cat > "$1"' if data else ': > "$1"'
            await self.session.run(["sh", "-c", script, "sh", path], input=data or None)
        return path

    async def holds(self, path: str) -> bool:
        return (await self.run(commands.is_file(path))).exit_status == 0

    async def content(self, path: str) -> bytes:
        return (await self.session.run(commands.read_file(path))).stdout

    async def size(self, path: str) -> int:
        return int((await self.session.run(commands.file_size(path))).stdout)


@pytest.fixture(params=["fake", pytest.param("sandbox", marks=pytest.mark.sandbox)])
async def host(request: pytest.FixtureRequest) -> AsyncIterator[Host]:
    directory = f"/tmp/mclu-commands-{uuid.uuid4().hex[:8]}"
    if request.param == "fake":
        cluster = fake.FakeCluster([fake.FakeHost("host-a")])
        async with cluster.open(cluster.spec("host-a")) as fake_session:
            await fake_session.run(commands.make_directory(directory))
            yield Host(fake_session, directory, fake_session.fake_host)
        return
    spec: HostSpec = request.getfixturevalue("sandbox_host")
    async with open_session(spec) as session:
        await session.run(commands.make_directory(directory))
        try:
            yield Host(session, directory, None)
        finally:
            await session.run(commands.remove_tree(directory))


# --- files and directories ---------------------------------------------------------------------


async def test_remove(host: Host) -> None:
    a, b = await host.put("a", b"1"), await host.put("b", b"2")
    done = await host.run(commands.remove(a, b, host.path("missing")))
    assert done.exit_status == 0
    assert not await host.holds(a) and not await host.holds(b)


async def test_remove_refuses_a_directory(host: Host) -> None:
    await host.run(commands.make_directory(host.path("d")))
    done = await host.run(commands.remove(host.path("d")))
    assert done.exit_status == 1
    assert b"Is a directory" in done.stderr


async def test_remove_tree(host: Host) -> None:
    await host.run(commands.make_directory(host.path("d/e")))
    await host.put("d/e/f", b"x")
    assert (await host.run(commands.remove_tree(host.path("d")))).exit_status == 0
    assert (await host.run(commands.exists(host.path("d")))).exit_status == 1
    assert (await host.run(commands.remove_tree(host.path("d")))).exit_status == 0  # gone: fine


async def test_make_directory(host: Host) -> None:
    deep = host.path("x/y/z")
    assert (await host.run(commands.make_directory(deep, "0711"))).exit_status == 0
    assert (await host.run(commands.make_directory(deep))).exit_status == 0  # exists: fine
    assert (await host.run(commands.exists(deep))).exit_status == 0
    assert (await host.run(commands.is_file(deep))).exit_status == 1


async def test_make_directory_where_a_file_is(host: Host) -> None:
    file = await host.put("f", b"")
    assert (await host.run(commands.make_directory(file))).exit_status == 1
    assert (await host.run(commands.make_directory(f"{file}/sub"))).exit_status == 1


@pytest.mark.parametrize(
    ("test", "file", "directory", "missing"),
    [(commands.exists, 0, 0, 1), (commands.is_file, 0, 1, 1), (commands.is_socket, 1, 1, 1)],
)
async def test_tests(
    host: Host, test: Callable[[str], list[str]], file: int, directory: int, missing: int
) -> None:
    path = await host.put("f", b"")
    assert (await host.run(test(path))).exit_status == file
    assert (await host.run(test(host.directory))).exit_status == directory
    assert (await host.run(test(host.path("missing")))).exit_status == missing


async def test_read_file(host: Host) -> None:
    path = await host.put("f", b"hello\nworld\n")
    assert await host.content(path) == b"hello\nworld\n"
    assert (await host.run(commands.read_file(host.path("missing")))).exit_status == 1
    assert (await host.run(commands.read_file(host.directory))).exit_status == 1


async def test_tail(host: Host) -> None:
    path = await host.put("log", b"booting\r\nweb1 login: ")
    assert (await host.run(commands.tail(path, 11))).stdout == b"web1 login: "[-11:]
    assert (await host.run(commands.tail(path, 4096))).stdout == b"booting\r\nweb1 login: "
    missing = await host.run(commands.tail(host.path("missing"), 10))
    assert (missing.exit_status, missing.stdout) == (1, b"")


async def test_file_size_and_make_private(host: Host) -> None:
    path = await host.put("f", b"12345")
    assert await host.size(path) == 5
    assert (await host.run(commands.make_private(path))).exit_status == 0
    assert (await host.run(commands.make_private(host.path("missing")))).exit_status == 1
    assert (await host.run(commands.file_size(host.path("missing")))).exit_status == 1


async def test_write_new_file_never_replaces(host: Host) -> None:
    seed = host.path("web1.mclu-seed.iso")
    done = await host.session.run(commands.write_new_file(seed), input=b"cidata", check=False)
    assert done.exit_status == 0
    assert await host.content(seed) == b"cidata"
    again = await host.session.run(commands.write_new_file(seed), input=b"other", check=False)
    assert again.exit_status != 0
    assert await host.content(seed) == b"cidata"
    if host.fake_host is None:  # the fake keeps no modes
        mode = await host.run(["stat", "-c", "%a", seed])
        assert mode.stdout.strip() == b"600"
    elsewhere = host.path("missing/web1.mclu-seed.iso")
    failed = await host.session.run(commands.write_new_file(elsewhere), input=b"x", check=False)
    assert failed.exit_status != 0


async def test_link_never_replaces(host: Host) -> None:
    new, old = await host.put("new", b"new"), await host.put("old", b"old")
    assert (await host.run(commands.link(new, host.path("disk")))).exit_status == 0
    assert await host.content(host.path("disk")) == b"new"
    assert (await host.run(commands.link(new, old))).exit_status == 1
    assert await host.content(old) == b"old"
    assert (await host.run(commands.link(host.path("missing"), host.path("x")))).exit_status == 1


async def test_move_over_replaces(host: Host) -> None:
    new, old = await host.put("new", b"new"), await host.put("old", b"old")
    assert (await host.run(commands.move_over(new, old))).exit_status == 0
    assert await host.content(old) == b"new"
    assert not await host.holds(new)
    assert (await host.run(commands.move_over(new, old))).exit_status == 1  # gone now


async def test_commit(host: Host) -> None:
    partial, dest = await host.put("base.partial-1", b"image"), host.path("base.raw")
    await host.put("base.raw", b"old image")
    assert (await host.run(commands.commit(partial, dest))).exit_status == 0
    assert await host.content(dest) == b"image"
    assert not await host.holds(partial)
    again = await host.run(commands.commit(partial, dest))
    assert again.exit_status == 1
    assert await host.content(dest) == b"image"


async def test_empty_file(host: Host) -> None:
    path = await host.put("f", b"old data")
    assert (await host.run(commands.empty_file(path, 3 * MIB))).exit_status == 0
    assert await host.size(path) == 3 * MIB
    nowhere = await host.run(commands.empty_file(host.path("none/f"), MIB))
    assert nowhere.exit_status == 2  # the shell's: it cannot redirect


async def test_set_size(host: Host) -> None:
    path = await host.put("f", b"abc")
    assert (await host.run(commands.set_size(path, 5))).exit_status == 0
    assert await host.content(path) == b"abc\0\0"
    assert (await host.run(commands.set_size(path, 1))).exit_status == 0
    assert await host.content(path) == b"a"
    assert (await host.run(commands.set_size(host.path("new"), 2))).exit_status == 0
    assert await host.content(host.path("new")) == b"\0\0"


# --- images ------------------------------------------------------------------------------------


async def test_image_create(host: Host) -> None:
    base = host.path("base.raw")
    await host.run(commands.empty_file(base, MIB))
    overlay = host.path("web1.qcow2")
    made = await host.run(commands.image_create(overlay, "qcow2", 4 * MIB, base, "raw"))
    assert made.exit_status == 0, made.stderr
    assert await host.holds(overlay)
    raw = host.path("plain.raw")
    assert (await host.run(commands.image_create(raw, "raw", 2 * MIB))).exit_status == 0
    assert await host.size(raw) == 2 * MIB
    if host.fake_host is not None:
        assert host.fake_host.files.files[overlay] == Image("qcow2", 4 * MIB, base, "raw")


async def test_image_create_without_its_backing_file(host: Host) -> None:
    overlay = host.path("web1.qcow2")
    argv = commands.image_create(overlay, "qcow2", MIB, host.path("missing.raw"), "raw")
    assert (await host.run(argv)).exit_status == 1
    assert not await host.holds(overlay)


async def test_sparse_copy(host: Host) -> None:
    base = await host.put("base.raw", b"data")
    copy = host.path("web1.img")
    assert (await host.run(commands.sparse_copy(base, copy, 8))).exit_status == 0
    assert await host.content(copy) == b"data\0\0\0\0"
    missing = await host.run(commands.sparse_copy(host.path("missing"), copy, 8))
    assert missing.exit_status == 1


async def test_qcow2_files_and_their_backing_files(host: Host) -> None:
    base = host.path("base.raw")
    await host.run(commands.empty_file(base, MIB))
    overlay = host.path("web1.qcow2")
    await host.run(commands.image_create(overlay, "qcow2", 4 * MIB, base, "raw"))
    await host.put("notes.txt", b"not an image")
    listed = await host.run(commands.qcow2_files(host.directory))
    assert listed.stdout.decode().splitlines() == [overlay]
    assert (await host.run(commands.qcow2_files(host.path("missing")))).exit_status == 1
    info = await host.run(commands.backing_info([overlay, host.path("missing.qcow2"), base]))
    assert info.exit_status == 0
    assert storage.parse_backing(info.stdout.decode()) == {base}
    documents = [json.loads(d) for d in _json_documents(info.stdout.decode())]
    assert [(d["filename"], d["format"], d["virtual-size"]) for d in documents] == [
        (overlay, "qcow2", 4 * MIB),
        (base, "raw", MIB),
    ]


def _json_documents(text: str) -> list[str]:
    """Concatenated JSON documents, each on its own."""
    decoder, found, pos, text = json.JSONDecoder(), [], 0, text.strip()
    while pos < len(text):
        doc, end = decoder.raw_decode(text, pos)
        found.append(json.dumps(doc))
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return found


async def test_disk_info_follows_the_backing_chain(host: Host) -> None:
    base = host.path("base.raw")
    await host.run(commands.empty_file(base, MIB))
    overlay = host.path("web1.qcow2")
    await host.run(commands.image_create(overlay, "qcow2", 4 * MIB, base, "raw"))
    info = await host.run(commands.disk_info([overlay, base]))
    assert info.exit_status == 0, info.stderr
    chains = [json.loads(d) for d in _json_documents(info.stdout.decode())]
    assert [[(i["filename"], i["format"], i["virtual-size"]) for i in c] for c in chains] == [
        [(overlay, "qcow2", 4 * MIB), (base, "raw", MIB)],
        [(base, "raw", MIB)],
    ]
    assert chains[0][0]["backing-filename-format"] == "raw"
    assert chains[0][0]["full-backing-filename"] == base
    failed = await host.run(commands.disk_info([base, host.path("missing.qcow2"), overlay]))
    assert failed.exit_status == 1
    assert len(_json_documents(failed.stdout.decode())) == 1  # stops at the first it cannot read


# --- rebuild's and migrate's ---------------------------------------------------------------


async def test_existing(host: Host) -> None:
    a = await host.put("a", b"")
    done = await host.run(commands.existing([host.path("missing"), a, host.directory]))
    assert (done.exit_status, done.stdout.decode()) == (0, f"{a}\n{host.directory}\n")


async def test_same_file(host: Host) -> None:
    disk, other = await host.put("disk", b"d"), await host.put("other", b"d")
    old = host.path("disk.mclu-old")
    await host.run(commands.link(disk, old))
    assert (await host.run(commands.same_file(old, disk))).exit_status == 0
    assert (await host.run(commands.same_file(other, disk))).exit_status == 1
    assert (await host.run(commands.same_file(host.path("missing"), disk))).exit_status == 1


@pytest.mark.parametrize("stage", ["not begun", "linked", "swapped"])
async def test_restore_disk(host: Host, stage: str) -> None:
    """A rebuild's swap undone at each of its stages: the old disk is back, under its name."""
    disk, new = await host.put("disk", b"old disk"), await host.put("new", b"new disk")
    old = host.path("disk.mclu-old")
    if stage != "not begun":
        await host.session.run(commands.link(disk, old))
    if stage == "swapped":
        await host.session.run(commands.move_over(new, disk))
    assert (await host.run(commands.restore_disk(old, disk))).exit_status == 0
    assert await host.content(disk) == b"old disk"
    assert (await host.run(commands.exists(old))).exit_status == 1


# --- mostly on a real host only: the fake answers these as a test cans them ------------------


def only_real(host: Host) -> None:
    if host.fake_host is not None:
        pytest.skip("the fake answers this command line only as a test cans it")


async def test_zstd_receive(host: Host) -> None:
    only_real(host)
    data = b"image" + bytes(MIB) + b"end"
    dest = host.path("base.raw")
    frames = zstandard.ZstdCompressor().compress(data)
    assert (await host.session.run(commands.zstd_receive(dest), input=frames)).exit_status == 0
    assert await host.content(dest) == data


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(400):  # 20 s: a bound for a hung host, not a timing goal
        if await check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"never {what}")


async def test_nbd_server_listens_and_removes_its_directory(host: Host) -> None:
    image = host.path("disk.raw")
    await host.run(commands.empty_file(image, MIB))
    directory = host.path("nbd")
    socket = f"{directory}/nbd.sock"
    server = commands.qemu_nbd(socket, image, ["--format=raw", "--shared=1"])
    async with host.session.background(commands.nbd_server(directory, server)) as running:

        async def listening() -> bool:
            return (await host.run(commands.is_socket(socket))).exit_status == 0

        await _until(listening, "listening")
        assert running.result() is None
    assert (await host.run(commands.exists(directory))).exit_status == 1


async def test_nbd_server_of_a_missing_program(host: Host) -> None:
    only_real(host)
    directory = host.path("nbd")
    server = commands.qemu_nbd(f"{directory}/nbd.sock", host.path("x"), [], MISSING)
    async with host.session.background(commands.nbd_server(directory, server)) as running:

        async def ended() -> bool:
            return running.result() is not None

        await _until(ended, "ended")
        result = running.result()
        assert result is not None and result.exit_status == 127
        assert MISSING.encode() in result.stderr
    assert (await host.run(commands.exists(directory))).exit_status == 1


async def test_console_tail(host: Host) -> None:
    name = f"mclu-contract-{uuid.uuid4().hex[:8]}"
    log = hostpaths.console_log(name)
    if host.fake_host is not None:
        host.fake_host.files.write(log, b"booting\r\nlogin: ")
    else:
        await host.session.run(["sh", "-c", 'cat > "$1"', "sh", log], input=b"booting\r\nlogin: ")
    try:
        assert (await host.run(commands.console_tail(name, 7))).stdout == b"login: "
    finally:
        await host.run(commands.remove(log))
    assert (await host.run(commands.console_tail(name, 7))).exit_status == 1


async def test_base_ages(host: Host) -> None:
    only_real(host)
    await host.put("tiny.x86_64.r1.raw", b"base")
    await host.put("notes.txt", b"")
    ages = storage.parse_ages((await host.run(commands.base_ages(host.directory))).stdout.decode())
    assert list(ages) == ["tiny.x86_64.r1.raw"]
    assert ages["tiny.x86_64.r1.raw"] > -1  # the host's clock in whole seconds, mtime finer


async def test_change_times(host: Host) -> None:
    only_real(host)
    disk = await host.put("web1.qcow2", b"")
    done = await host.run(commands.change_times([host.path("missing"), disk]))
    assert done.exit_status == 0
    ctime, _, path = done.stdout.decode().strip().partition(" ")
    assert (ctime.isdigit(), path) == (True, disk)


async def test_storage_and_leftover_scans(host: Host) -> None:
    only_real(host)
    partial = await host.put("base.raw.partial-0a1b2c3d-web1", b"")
    await host.run(commands.make_directory(host.path("mclu-templates")))
    cached = await host.put("mclu-templates/tiny.x86_64.r1.raw", b"")
    storage_done = await host.run(commands.storage_scan(host.directory))
    sections = storage.parse_sections(storage_done.stdout.decode())
    assert sections["dfstatus"] == ["0"]
    assert int(sections["df"][1]) > 0
    assert sections["cache"] == [posixpath.basename(cached)]
    assert {posixpath.basename(partial), "mclu-templates"} <= set(sections["files"])
    assert [line.partition(" ")[2] for line in sections["partial"]] == [partial]
    leftovers = await host.run(commands.leftover_scan(host.directory))
    sections = storage.parse_sections(leftovers.stdout.decode())
    assert "df" not in sections and "cache" not in sections
    assert [line.partition(" ")[2] for line in sections["partial"]] == [partial]


async def test_remove_unused(host: Host) -> None:
    only_real(host)
    a, b = await host.put("a.partial-1", b""), await host.put("b.partial-2", b"")
    paths = f"{a}\n{host.path('missing')}\n{b}\n".encode()
    done = await host.session.run(commands.remove_unused(), input=paths)
    assert done.stdout.decode().splitlines() == [a, b]
    assert not await host.holds(a) and not await host.holds(b)


async def test_lock_is_held_until_its_input_ends(host: Host) -> None:
    only_real(host)
    path = host.path("locks/web1.lock")
    done = await host.session.run(commands.lock(path, "run one"), input=b"end")
    assert (done.exit_status, done.stdout) == (0, b"locked\n")
    assert await host.content(path) == b"run one\n"


async def test_lock_held_elsewhere_names_its_holder(host: Host) -> None:
    only_real(host)
    path = host.path("web1.lock")
    async with host.session.lock(path, "run one"):
        done = await host.session.run(commands.lock(path, "run two"), input=b"end", check=False)
    assert (done.exit_status, done.stdout) == (commands.LOCK_HELD, b"")
    assert done.stderr == b"run one\n"


async def test_background_gives_the_exit_status_of_its_command(host: Host) -> None:
    only_real(host)
    done = await host.run(commands.background(["sh", "-c", "echo out; echo err >&2; exit 3"]))
    assert (done.exit_status, done.stdout, done.stderr) == (3, b"out\n", b"err\n")


async def test_serve_forwards_the_socket_and_leaves_nothing(host: Host) -> None:
    """images.nbd.serve over these command lines: forwarded here on a real host; on the fake
    (which forwards nothing) refused as Unsupported at once, not after waiting to listen."""
    image = host.path("disk.raw")
    await host.run(commands.empty_file(image, MIB))
    if host.fake_host is not None:
        with pytest.raises(errors.Unsupported):
            async with nbd.serve(host.session, image, nbd.WRITE_RAW, owner="web1"):
                pass
        assert host.fake_host.running == [] and host.fake_host.files.sockets == set()
        return
    async with nbd.serve(host.session, image, nbd.WRITE_RAW, owner="web1") as served:
        assert stat.S_ISSOCK(os.stat(served.socket).st_mode)
        assert served.argv[0] == "qemu-nbd" and "/tmp/mclu-nbd-web1." in served.argv[2]
        directory = posixpath.dirname(served.argv[2])
    assert (await host.run(commands.exists(directory))).exit_status == 1
