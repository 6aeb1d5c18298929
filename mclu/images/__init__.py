"""Moving and preparing disk images: transports, the controller cache, personalisation.

A transport copies a local raw image to a path on a host over the host's session, leaving
the copy sparse: `stream` (zstd-compressed over an ssh channel into `zstd -d --sparse`) and
`nbd` (qemu-nbd on the host, reached through a forwarded socket, filled by nbdcopy, which
skips holes). `get(name)` gives one, `DEFAULT` names the faster one on the machines measured
(bench/transfer.py), and `send_atomically` is how callers use them: the destination appears
whole or not at all.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mclu import errors, hostpaths
from mclu.hosts import commands
from mclu.hosts.session import Session
from mclu.images import nbd as nbd
from mclu.images import stream as stream

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # bytes of the source consumed so far

# bench/transfer.py, 1 GiB raw image with 474 MB of data (own test image) to a sandbox host,
# 2 busy cores, medians of 5: nbd 2.37 s, stream 3.13 s; baselines zstd|ssh|zstd 3.30 s,
# ssh dd conv=sparse 3.47 s, ssh cat 5.38 s. nbd moves only the data extents and compresses
# nothing, so it needs the least CPU. Both leave the copy as sparse as the source.
DEFAULT = "nbd"


class Transport(Protocol):
    """Copies a local raw image to a file on a host, leaving it sparse."""

    @property
    def name(self) -> str: ...

    async def send(
        self,
        session: Session,
        source: Path,
        dest: str,
        size: int,
        *,
        progress: Progress | None = None,
    ) -> None:
        """Write source to exactly `dest` on the host, `size` bytes long (holes kept).

        dest is created or replaced; on failure or cancellation its content is undefined
        (`send_atomically` removes it). size is the image's size in bytes, at least the
        source file's; the rest reads as zeros. progress gets the bytes of the source
        consumed, often enough for a progress bar. Raises ToolMissing when the host lacks a
        program the transport needs, HostCommandFailed with the host's message when writing
        fails (a full disk), LocalToolMissing / LocalCommandFailed for this machine's part.
        """
        ...


TRANSPORTS: dict[str, Transport] = {"stream": stream.Stream(), "nbd": nbd.Nbd()}


def get(name: str) -> Transport:
    """The transport called name (UnknownTransport if there is none)."""
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise errors.UnknownTransport(name=name, known=sorted(TRANSPORTS)) from None


def partial_name(dest: str, owner: str | None = None) -> str:
    """A fresh name beside dest for the file being written: `dest.partial-<random>`, with
    `-<owner>` when a guest's lock covers the run writing it (`mclu cleanup` then knows
    that the file is left over as soon as that lock is free)."""
    return hostpaths.partial_file(dest, secrets.token_hex(4), owner)


async def send_atomically(
    transport: Transport,
    session: Session,
    source: Path,
    dest: str,
    size: int,
    *,
    progress: Progress | None = None,
    owner: str | None = None,
) -> None:
    """Send source to dest through a partial file, renamed into place once written and synced.

    An existing dest is replaced. On any failure or cancellation the partial file is deleted
    (and dest left as it was) before the exception propagates. Raises what transport.send
    raises. `owner`: the guest whose lock the caller holds (see `partial_name`).
    """
    partial = partial_name(dest, owner)
    try:
        await transport.send(session, source, partial, size, progress=progress)
        await session.run(commands.commit(partial, dest))
    except BaseException:
        try:  # best effort: the error being raised matters more
            await session.run(commands.remove(partial), check=False)
        except errors.HostError as e:
            log.warning("%s: could not remove %s: %s", session.host, partial, e)
        raise
