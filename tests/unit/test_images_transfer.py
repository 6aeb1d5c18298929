"""Pure parts of the image transports: the registry, send_atomically's bookkeeping, the
compressed stream, and how a missing program is recognised."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import pytest
import zstandard

from mclu import errors, images
from mclu.hosts.session import CommandResult, Input, Session, command_failed
from mclu.images import nbd, stream

MIB = 1 << 20


def test_the_registry() -> None:
    assert images.DEFAULT in images.TRANSPORTS
    assert images.get("stream").name == "stream"
    assert images.get("nbd").name == "nbd"
    with pytest.raises(errors.UnknownTransport, match=r"'ftp' \(known: nbd, stream\)") as raised:
        images.get("ftp")
    assert isinstance(raised.value, KeyError)


def test_partial_names_are_fresh_and_beside_dest() -> None:
    a, b = images.partial_name("/d/base.raw"), images.partial_name("/d/base.raw")
    assert a != b
    assert a.startswith("/d/base.raw.partial-")


class Recorder:
    """Just enough of a Session for send_atomically: records the commands it runs."""

    host = "h"
    uri = "recorder:///h"

    def __init__(self) -> None:
        self.commands: list[tuple[str, ...]] = []

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: Input = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        self.commands.append(tuple(argv))
        return CommandResult(tuple(argv), 0)


class Writes:
    """A transport that records what it was asked, then does what `then` says."""

    name = "writes"

    def __init__(self, then: Callable[[], object] = lambda: None) -> None:
        self.dest = ""
        self.then = then

    async def send(
        self,
        session: Session,
        source: Path,
        dest: str,
        size: int,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.dest = dest
        result = self.then()
        if asyncio.iscoroutine(result):
            await result


async def test_send_atomically_renames_the_synced_partial_file() -> None:
    session, transport = Recorder(), Writes()
    await images.send_atomically(
        transport, cast(Session, session), Path("/src"), "/images/base.raw", 10
    )
    assert transport.dest.startswith("/images/base.raw.partial-")
    [commit] = session.commands
    assert commit[:2] == ("sh", "-c")
    assert "sync" in commit[2] and "mv -f -T" in commit[2]
    assert commit[3:] == ("sh", transport.dest, "/images/base.raw", "/images")


def _fail() -> None:
    raise errors.HostCommandFailed(
        host="h", command="zstd -d", exit_status=1, stderr="No space left on device"
    )


async def _hang() -> None:
    await asyncio.sleep(3600)


async def test_send_atomically_removes_the_partial_file_on_failure() -> None:
    session, transport = Recorder(), Writes(_fail)
    with pytest.raises(errors.HostCommandFailed, match="No space left"):
        await images.send_atomically(
            transport, cast(Session, session), Path("/src"), "/images/base.raw", 10
        )
    assert session.commands == [("rm", "-f", "--", transport.dest)]


async def test_send_atomically_removes_the_partial_file_when_cancelled() -> None:
    session, transport = Recorder(), Writes(_hang)
    task = asyncio.create_task(
        images.send_atomically(
            transport, cast(Session, session), Path("/src"), "/images/base.raw", 10
        )
    )
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert session.commands == [("rm", "-f", "--", transport.dest)]


@pytest.fixture
def sparse_image(tmp_path: Path) -> Path:
    """13 MiB: random data, a hole, text, written zeros, and a trailing hole."""
    path = tmp_path / "image.raw"
    with path.open("wb") as f:
        f.write(os.urandom(3 * MIB))
        f.seek(5 * MIB)
        f.write(b"mclu " * (MIB // 5))
        f.seek(8 * MIB)
        f.write(bytes(4 * MIB))
        f.truncate(13 * MIB)
    return path


async def test_compressed_decompresses_to_the_source(sparse_image: Path) -> None:
    seen: list[int] = []
    chunks = [c async for c in stream.compressed(sparse_image, 1, seen.append)]
    frames = io.BytesIO(b"".join(chunks))
    reader = zstandard.ZstdDecompressor().stream_reader(frames, read_across_frames=True)
    assert reader.read() == sparse_image.read_bytes()
    assert seen == sorted(seen)
    assert seen[-1] == 13 * MIB
    assert len(seen) == -(-13 * MIB // stream.CHUNK)


async def test_compressed_closes_the_file_when_abandoned(sparse_image: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    chunks = stream.compressed(sparse_image, 1)
    await anext(chunks)
    await chunks.aclose()
    assert set(os.listdir("/proc/self/fd")) <= before


def test_check_size(sparse_image: Path) -> None:
    assert stream.check_size(sparse_image, 13 * MIB) == 13 * MIB
    assert stream.check_size(sparse_image, 14 * MIB) == 13 * MIB
    with pytest.raises(ValueError, match="more than the size"):
        stream.check_size(sparse_image, MIB)


def test_transfer_timeout_grows_with_the_size() -> None:
    assert stream.transfer_timeout(0) == 60.0
    assert stream.transfer_timeout(1 << 30) > stream.transfer_timeout(1 << 20)


def test_nbd_uri() -> None:
    assert nbd.nbd_uri("/tmp/x/sock") == "nbd+unix:///?socket=/tmp/x/sock"


@pytest.mark.parametrize(
    ("stderr", "tool"),
    [
        ("sh: 1: qemu-nbd: not found\n", "qemu-nbd"),
        ("bash: line 1: zstd: command not found\n", "zstd"),
        ("bash: zstd: command not found\n", "zstd"),
        ("env: 'nbdkit': No such file or directory\n", "nbdkit"),
    ],
)
def test_a_missing_program_is_recognised(stderr: str, tool: str) -> None:
    error = command_failed("h", CommandResult(("x", "y"), 127, b"", stderr.encode()))
    assert isinstance(error, errors.ToolMissing)
    assert (error.host, error.tool) == ("h", tool)
    assert str(error) == f"h: `{tool}` is not installed on the host (needed by `x y`)"


@pytest.mark.parametrize(
    ("status", "stderr"),
    [
        (127, "something else entirely\n"),
        (1, "sh: 1: zstd: not found\n"),
    ],
)
def test_other_failures_are_not_missing_programs(status: int, stderr: str) -> None:
    error = command_failed("h", CommandResult(("x",), status, b"", stderr.encode()))
    assert type(error) is errors.HostCommandFailed
    assert error.exit_status == status
