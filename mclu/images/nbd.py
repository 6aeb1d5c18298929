"""The `nbd` transport: qemu-nbd on the host, its socket forwarded, nbdcopy filling it from here.

On the host: DEST is created empty at its final size (all holes), served by `qemu-nbd` on a
unix socket in a private temporary directory, for the duration of a `Session.background`
block. Here: that socket is forwarded over the session's ssh connection and `nbdcopy
--target-is-zero` copies only the source's data extents (it also skips zero blocks within
them), so the holes stay holes and only data crosses the wire, uncompressed. `--flush` makes
the server sync before nbdcopy exits. The server is stopped and the directory removed on
every way out, cancellation included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from mclu import errors
from mclu.hosts.session import Background, Session, command_line
from mclu.images.stream import check_size, transfer_timeout

log = logging.getLogger(__name__)

SERVER_START_TIMEOUT = 10.0  # seconds for qemu-nbd to create its socket
POLL = 0.02  # seconds between looks for the socket

# DEST emptied (a replaced file keeps no old data: nbdcopy writes only the source's data) and
# given its size as one hole.
_CREATE = ': > "$1" && truncate -s "$2" -- "$1"'


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
            raise errors.LocalToolMissing(self.nbdcopy, "the nbd image transport")
        await session.run(["sh", "-c", _CREATE, "sh", dest, str(size)])
        async with _private_directory(session) as directory:
            socket = f"{directory}/nbd.sock"
            server_argv = [
                self.qemu_nbd,
                "--format=raw",
                "--persistent",
                "--shared=0",
                "--cache=writeback",
                "--socket",
                socket,
                dest,
            ]
            async with session.background(server_argv) as server:
                await _wait_for_socket(session, server, socket)
                async with session.forward_socket(socket) as local:
                    copy = [
                        nbdcopy,
                        "--target-is-zero",
                        "--flush",
                        f"--connections={self.connections}",
                        str(source),
                        nbd_uri(local),
                    ]
                    try:
                        await run_nbdcopy(copy, source_size, progress, session.host)
                    except errors.HostCommandFailed:
                        server.check()  # a dead server says more than nbdcopy
                        raise
                server.check()


def nbd_uri(socket: str) -> str:
    """The NBD URI of the default export on a local unix socket (nbdcopy's syntax)."""
    return f"nbd+unix:///?socket={socket}"


@contextlib.asynccontextmanager
async def _private_directory(session: Session) -> AsyncIterator[str]:
    """A new 0700 directory on the host, removed with its content on exit."""
    made = await session.run(["mktemp", "-d", "-t", "mclu-nbd.XXXXXXXX"])
    directory = made.stdout.decode().strip()
    try:
        yield directory
    finally:
        try:
            await session.run(["rm", "-rf", "--", directory], check=False)
        except errors.HostError as e:
            log.warning("%s: could not remove %s: %s", session.host, directory, e)


async def _wait_for_socket(session: Session, server: Background, socket: str) -> None:
    """Return once the server listens on socket; raise its error if it ended instead."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SERVER_START_TIMEOUT
    while True:
        if (await session.run(["test", "-S", socket], check=False)).exit_status == 0:
            return
        server.check()
        if server.result() is not None:
            raise errors.HostError(session.host, f"`{command_line(server.argv)}` ended at once")
        if loop.time() > deadline:
            raise errors.HostTimeout(
                session.host, f"`{command_line(server.argv)}` to listen", SERVER_START_TIMEOUT
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
            host, command_line(argv), process.returncode, stderr.decode(errors="replace")
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
