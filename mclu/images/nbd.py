"""The `nbd` transport: qemu-nbd on the host, its socket forwarded, nbdcopy filling it from here.

On the host: DEST is created empty at its final size (all holes), served by `qemu-nbd` on a
unix socket in a private temporary directory, for the duration of a `Session.background`
block. Here: that socket is forwarded over the session's ssh connection and `nbdcopy
--target-is-zero` copies only the source's data extents (it also skips zero blocks within
them), so the holes stay holes and only data crosses the wire, uncompressed. `--flush` makes
the server sync before nbdcopy exits. The server is stopped and the directory removed on
every way out, cancellation included.

`serve` is the one way mclu serves an image with qemu-nbd and reaches it from here: this
transport, a build's personalisation (the guests' disks) and a migration's host-to-host copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import posixpath
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mclu import errors, hostpaths
from mclu.hosts import commands
from mclu.hosts.session import Background, Session, command_failed, command_line
from mclu.images.stream import check_size, transfer_timeout

SERVER_START_TIMEOUT = 10.0  # seconds for qemu-nbd to create its socket
POLL = 0.02  # seconds between looks for the socket

# qemu-nbd's options for a raw file one nbdcopy fills (`Nbd.send`; a migration's destination
# copy) and for one nbdcopy reads (a migration's source copy): each served to a single client
# (with several connections), kept serving between them.
WRITE_RAW = ("--format=raw", "--persistent", "--shared=0", "--cache=writeback")
READ_RAW = ("--format=raw", "--persistent", "--shared=0", "--read-only")


@dataclass(frozen=True)
class Nbd:
    """qemu-nbd on the host, nbdcopy here, through a socket forwarded over ssh."""

    qemu_nbd: str = "qemu-nbd"  # the host's; a parameter so tests can name a missing one
    nbdcopy: str = "nbdcopy"  # this machine's
    connections: int = 4  # nbdcopy's NBD connections (qemu-nbd serves them with --shared=0)
    name: str = "nbd"

    async def send(
        self,
        session: Session,
        source: Path,
        dest: str,
        size: int,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Write source to dest on the host (see mclu.images.Transport.send)."""
        source_size = check_size(source, size)
        nbdcopy = shutil.which(self.nbdcopy)
        if nbdcopy is None:
            raise errors.LocalToolMissing(tool=self.nbdcopy, purpose="the nbd image transport")
        await session.run(commands.empty_file(dest, size))
        async with serve(session, dest, WRITE_RAW, program=self.qemu_nbd) as served:
            copy = [
                nbdcopy,
                "--target-is-zero",
                "--flush",
                f"--connections={self.connections}",
                str(source),
                nbd_uri(served.socket),
            ]
            try:
                await run_nbdcopy(copy, source_size, progress, session.host)
            except errors.HostCommandFailed:
                served.check()  # a dead server says more than nbdcopy
                raise
            served.check()


def nbd_uri(socket: str) -> str:
    """The NBD URI of the default export on a local unix socket (nbdcopy's syntax)."""
    return f"nbd+unix:///?socket={socket}"


@dataclass(frozen=True)
class Served:
    """An image served by qemu-nbd on a host (`serve`)."""

    host: str
    socket: str  # here: the local unix socket forwarded to the server's
    argv: tuple[str, ...]  # the qemu-nbd command line, for messages
    server: Background

    def check(self) -> None:
        """Raise if the server has ended by itself with an error: HostCommandFailed (ToolMissing
        when the host has no qemu-nbd) naming the qemu-nbd command line."""
        _check(self.host, self.server, self.argv)


def _check(host: str, server: Background, argv: tuple[str, ...]) -> None:
    """server.check(), its error naming argv (qemu-nbd's) rather than its wrapper's script."""
    try:
        server.check()
    except errors.HostCommandFailed:
        result = server.result()
        assert result is not None
        raise command_failed(host, dataclasses.replace(result, argv=argv)) from None


def socket_directory(owner: str | None = None) -> str:
    """A fresh name for a private directory on the host to hold an NBD socket; with the name
    of the guest whose lock the caller holds, if any."""
    return hostpaths.nbd_socket_dir(secrets.token_hex(4), owner)


@contextlib.asynccontextmanager
async def serve(
    session: Session,
    image: str,
    options: Sequence[str],
    *,
    owner: str | None = None,
    program: str = "qemu-nbd",
) -> AsyncIterator[Served]:
    """`image` on the host served by qemu-nbd with `options`, for the duration of the block,
    its socket forwarded here (`Served.socket`).

    The socket lives in a new private (0700) directory under /tmp (named after `owner`, the
    guest whose lock the caller holds, if any), which the host removes when the server ends:
    on leaving the block, on error and on cancellation, and when the connection dies (mclu
    killed outright). Raises HostCommandFailed / ToolMissing when qemu-nbd fails to start,
    HostTimeout when it does not listen within SERVER_START_TIMEOUT seconds.
    """
    directory = socket_directory(owner)
    socket = posixpath.join(directory, "nbd.sock")
    argv = tuple(commands.qemu_nbd(socket, image, options, program))
    async with session.background(commands.nbd_server(directory, argv)) as server:
        await _wait_for_socket(session, server, argv, socket)
        async with session.forward_socket(socket) as local:
            yield Served(session.host, local, argv, server)


async def _wait_for_socket(
    session: Session, server: Background, argv: tuple[str, ...], socket: str
) -> None:
    """Return once the server (argv) listens on socket; raise its error if it ended instead."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SERVER_START_TIMEOUT
    while True:
        if (await session.run(commands.is_socket(socket), check=False)).exit_status == 0:
            return
        _check(session.host, server, argv)
        if server.result() is not None:
            raise errors.HostError(
                host=session.host, detail=f"`{command_line(argv)}` ended at once"
            )
        if loop.time() > deadline:
            raise errors.HostTimeout(
                host=session.host,
                what=f"`{command_line(argv)}` to listen",
                seconds=SERVER_START_TIMEOUT,
            )
        await asyncio.sleep(POLL)


async def run_nbdcopy(
    argv: list[str], size: int, progress: Callable[[int], None] | None, host: str
) -> None:
    """Run nbdcopy (argv) here, turning its "N/100" progress lines into bytes of size.

    Killed and waited for on any exception, cancellation included. A failure is the host's
    (HostCommandFailed with nbdcopy's message, e.g. the server's "No space left on device"):
    the local side only reads a file.
    """
    progress_read, progress_write = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv[:1],
            f"--progress={progress_write}",
            *argv[1:],
            pass_fds=(progress_write,),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(progress_write)
    try:
        async with asyncio.timeout(transfer_timeout(size)):
            _, (_, stderr) = await asyncio.gather(
                _follow(progress_read, size, progress), process.communicate()
            )
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    finally:
        with contextlib.suppress(OSError):
            os.close(progress_read)
    if process.returncode != 0:
        raise errors.HostCommandFailed(
            host=host,
            command=command_line(argv),
            exit_status=process.returncode,
            stderr=stderr.decode(errors="replace"),
        )


async def _follow(fd: int, size: int, progress: Callable[[int], None] | None) -> None:
    """Read nbdcopy's progress lines from fd until it closes, reporting bytes of size."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(fd), "rb", buffering=0)
    )
    try:
        async for line in reader:
            percent, _, _ = line.decode().strip().partition("/")
            if progress is not None and percent.isdigit():
                progress(size * int(percent) // 100)
    finally:
        transport.close()
