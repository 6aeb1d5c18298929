"""The image transports against a sandbox host (ham1): content, sparseness, cancellation,
missing programs and a full disk."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mclu import errors, images
from mclu.hosts import open_session
from mclu.hosts.session import Session
from mclu.images import nbd, stream
from tests.conftest import sandbox_spec
from tests.integration import sandbox as sb

pytestmark = pytest.mark.sandbox

MIB = 1 << 20
HOST = "ham1"
IMAGES = "/var/lib/libvirt/images"


def _write_image(path: Path, size: int, regions: list[tuple[int, bytes]]) -> Path:
    with path.open("wb") as f:
        for offset, data in regions:
            f.seek(offset)
            f.write(data)
        f.truncate(size)
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 MiB, sparse: random data, text, written zeros, holes between and at the end."""
    return _write_image(
        tmp_path_factory.mktemp("img") / "small.raw",
        64 * MIB,
        [
            (0, os.urandom(8 * MIB)),
            (16 * MIB, b"mclu image " * MIB),
            (40 * MIB, bytes(4 * MIB)),
            (48 * MIB, os.urandom(MIB + 12345)),
        ],
    )


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 GiB with 384 MiB of random data: long enough to cancel half way."""
    path = tmp_path_factory.mktemp("img") / "big.raw"
    return _write_image(path, 1 << 30, [(i * 128 * MIB, os.urandom(48 * MIB)) for i in range(8)])


@pytest.fixture
async def session(sandbox: sb.Sandbox) -> AsyncIterator[Session]:
    async with open_session(sandbox_spec(HOST, sandbox.address(HOST))) as opened:
        yield opened


@pytest.fixture
def dest(sandbox: sb.Sandbox) -> Iterator[str]:
    """A destination path on the host, removed (with any partial file) after the test."""
    path = f"{IMAGES}/mclu-transfer-{uuid.uuid4().hex[:8]}.raw"
    yield path
    sandbox.exec(HOST, ["sh", "-c", 'rm -f -- "$1" "$1".partial-*', "sh", path])


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


async def _remote_facts(session: Session, path: str) -> tuple[str, int, int]:
    """sha256, size and allocated bytes of path on the host."""
    sha = await session.run(["sha256sum", "--", path])
    stat = await session.run(["stat", "-c", "%s %b %B", "--", path])
    size, blocks, block_size = (int(x) for x in stat.stdout.split())
    return sha.stdout.split()[0].decode(), size, blocks * block_size


async def _leftovers(session: Session, dest: str) -> list[str]:
    """Partial files of dest and processes still serving or writing one."""
    found = await session.run(
        [
            "sh",
            "-c",
            'ls -d -- "$1".partial-* 2>/dev/null; pgrep -a -f -- "$1".partial- | grep -v pgrep',
            "sh",
            dest,
        ],
        check=False,
    )
    return found.stdout.decode().split("\n")[:-1]


@pytest.mark.parametrize("name", ["stream", "nbd"])
async def test_copy_is_exact_and_sparse(
    session: Session, dest: str, image: Path, name: str
) -> None:
    seen: list[int] = []
    size = image.stat().st_size
    await images.send_atomically(images.get(name), session, image, dest, size, progress=seen.append)
    sha, remote_size, allocated = await _remote_facts(session, dest)
    assert sha == hashlib.sha256(image.read_bytes()).hexdigest()
    assert remote_size == size
    assert allocated <= 1.05 * _allocated(image)
    assert seen and seen == sorted(seen) and seen[-1] == size
    assert await _leftovers(session, dest) == []


@pytest.mark.parametrize("name", ["stream", "nbd"])
async def test_size_beyond_the_source_is_a_hole(
    session: Session, dest: str, image: Path, name: str
) -> None:
    size = image.stat().st_size + 16 * MIB
    await images.get(name).send(session, image, dest, size)
    _, remote_size, allocated = await _remote_facts(session, dest)
    assert remote_size == size
    assert allocated <= 1.05 * _allocated(image)


@pytest.mark.parametrize("name", ["stream", "nbd"])
async def test_cancelled_half_way_leaves_nothing(
    session: Session, dest: str, big_image: Path, name: str
) -> None:
    size = big_image.stat().st_size
    under_way = asyncio.Event()

    def progress(done: int) -> None:
        if done > 0:
            under_way.set()

    task = asyncio.create_task(
        images.send_atomically(images.get(name), session, big_image, dest, size, progress=progress)
    )
    await asyncio.wait(
        [asyncio.create_task(under_way.wait()), task],
        return_when=asyncio.FIRST_COMPLETED,
        timeout=60,
    )
    assert not task.done(), "finished before it could be cancelled"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _leftovers(session, dest) == []
    assert (await session.run(["test", "-e", dest], check=False)).exit_status == 1
    assert (await session.run(["uname", "-n"])).stdout == f"{HOST}\n".encode()  # still usable


@pytest.mark.parametrize(
    ("transport", "tool"),
    [
        (stream.Stream(zstd="mclu-no-such-zstd"), "mclu-no-such-zstd"),
        (nbd.Nbd(qemu_nbd="mclu-no-such-qemu-nbd"), "mclu-no-such-qemu-nbd"),
    ],
)
async def test_a_missing_program_on_the_host(
    session: Session, dest: str, image: Path, transport: images.Transport, tool: str
) -> None:
    with pytest.raises(errors.ToolMissing) as raised:
        await images.send_atomically(transport, session, image, dest, image.stat().st_size)
    assert (raised.value.host, raised.value.tool) == (HOST, tool)
    assert f"{HOST}: `{tool}` is not installed on the host" in str(raised.value)
    assert await _leftovers(session, dest) == []


async def test_a_missing_local_nbdcopy(session: Session, dest: str, image: Path) -> None:
    with pytest.raises(errors.LocalToolMissing, match="mclu-no-such-nbdcopy"):
        await nbd.Nbd(nbdcopy="mclu-no-such-nbdcopy").send(session, image, dest, MIB * 64)


@pytest.fixture
def small_disk(sandbox: sb.Sandbox) -> Iterator[str]:
    """A 4 MiB tmpfs directory inside the host (its own mount namespace), removed after."""
    directory = f"{IMAGES}/mclu-full-{uuid.uuid4().hex[:8]}"
    sandbox.exec(HOST, ["mkdir", directory])
    sandbox.exec(HOST, ["mount", "-t", "tmpfs", "-o", "size=4m", "mclu-full", directory])
    try:
        yield directory
    finally:
        sandbox.exec(HOST, ["umount", directory], check=False)
        sandbox.exec(HOST, ["rmdir", directory], check=False)


@pytest.mark.parametrize("name", ["stream", "nbd"])
async def test_a_full_disk(session: Session, small_disk: str, image: Path, name: str) -> None:
    dest = f"{small_disk}/base.raw"
    with pytest.raises(errors.HostCommandFailed, match="No space left on device") as raised:
        await images.send_atomically(images.get(name), session, image, dest, image.stat().st_size)
    assert raised.value.host == HOST
    assert (await session.run(["ls", "-A", small_disk])).stdout == b""
