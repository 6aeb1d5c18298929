"""`mclu console`'s relay: the local terminal in raw mode, bytes both ways, Ctrl-] ends it.

The local side is a pair of file descriptors (normally the user's terminal); the remote side
a `Terminal` (mclu.hosts.session) running the guest's console on its host.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import termios
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mclu.hosts.session import Terminal

ESCAPE = b"\x1d"  # Ctrl-], as telnet and virsh console have it
ESCAPE_NAME = "^]"
DEFAULT_SIZE = (80, 24)  # columns, rows: when the output is not a terminal
TAIL = 4096  # bytes of the remote output kept to say why it ended
READ_SIZE = 4096


class Ending(enum.StrEnum):
    """Why a relay ended."""

    ESCAPE = "escape"  # the user typed the escape character
    ENDED = "ended"  # the remote command ended (its output closed)
    INPUT_CLOSED = "input closed"  # the local input reached its end


@dataclass(frozen=True)
class Relayed:
    ending: Ending
    tail: bytes  # the last of the remote output


def terminal_size(fd: int) -> tuple[int, int]:
    """(columns, rows) of the terminal on fd, else DEFAULT_SIZE."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return DEFAULT_SIZE
    return size.columns, size.lines


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The terminal on fd in raw mode for the block, restored on every way out.

    Raw: keys go through unread (Ctrl-C reaches the guest, not mclu), output unprocessed.
    Does nothing when fd is not a terminal.
    """
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):  # EIO: the terminal hung up, nothing to restore
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def relay(terminal: Terminal, stdin_fd: int, stdout_fd: int) -> Relayed:
    """Copy keys from stdin_fd to the terminal and its output to stdout_fd until one ends.

    The escape character ends the relay (it is not sent); so do the end of the remote
    output and the end of the local input. The remote terminal follows the local window's
    size (SIGWINCH). Raises what the terminal's read raises (a HostError).
    """
    loop = asyncio.get_running_loop()
    ending: asyncio.Future[Ending] = loop.create_future()
    tail = bytearray()

    def finish(why: Ending) -> None:
        if not ending.done():
            ending.set_result(why)

    def keys_ready() -> None:
        try:
            keys = os.read(stdin_fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: a pty whose other side has gone
            keys = b""
        before, escape, _after = keys.partition(ESCAPE)
        if before:
            terminal.write(before)
        if escape:
            finish(Ending.ESCAPE)
        elif not keys:
            finish(Ending.INPUT_CLOSED)

    async def copy_output() -> None:
        while chunk := await terminal.read():
            _write_all(stdout_fd, chunk)
            tail.extend(chunk)
            del tail[:-TAIL]
        finish(Ending.ENDED)

    loop.add_reader(stdin_fd, keys_ready)
    output = asyncio.create_task(copy_output())
    try:
        with _following_window_size(loop, terminal, stdout_fd):
            waiting: list[asyncio.Future[Any]] = [ending, output]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not ending.done():
                output.result()  # raises the read's error
            return Relayed(ending.result(), bytes(tail))
    finally:
        loop.remove_reader(stdin_fd)
        output.cancel()
        await asyncio.gather(output, return_exceptions=True)


@contextlib.contextmanager
def _following_window_size(
    loop: asyncio.AbstractEventLoop, terminal: Terminal, fd: int
) -> Iterator[None]:
    """Resize the remote terminal whenever the local window changes, for the block."""
    if not os.isatty(fd):
        yield
        return
    loop.add_signal_handler(signal.SIGWINCH, lambda: terminal.resize(*terminal_size(fd)))
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
