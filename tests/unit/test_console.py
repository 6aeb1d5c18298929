"""mclu.act.console's relay between a local pseudo-terminal and a fake remote Terminal."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Iterator

import pytest

from mclu import model
from mclu.act import console
from mclu.decide import connect


class FakeTerminal:
    """A remote terminal: records keys, plays queued output; b"" in the queue ends it."""

    def __init__(self) -> None:
        self.keys = b""
        self.output: asyncio.Queue[bytes] = asyncio.Queue()
        self.sizes: list[tuple[int, int]] = []

    async def read(self) -> bytes:
        return await self.output.get()

    def write(self, data: bytes) -> None:
        self.keys += data

    def resize(self, columns: int, rows: int) -> None:
        self.sizes.append((columns, rows))

    def exit_status(self) -> int | None:
        return None


@pytest.fixture
def pty() -> Iterator[tuple[int, int]]:
    """(controller, terminal): the user types into the controller; mclu sees the terminal."""
    controller, terminal = os.openpty()
    yield controller, terminal
    os.close(controller)
    os.close(terminal)


async def test_keys_go_through_until_the_escape_character(pty: tuple[int, int]) -> None:
    controller, terminal = pty
    remote = FakeTerminal()
    with console.raw_mode(terminal):
        relaying = asyncio.create_task(console.relay(remote, terminal, terminal))
        os.write(controller, b"ls\x03\r")  # Ctrl-C goes to the guest in raw mode
        await remote.output.put(b"hello\r\n")
        await asyncio.sleep(0.1)
        os.write(controller, b"x\x1dnot sent")
        relayed = await asyncio.wait_for(relaying, 5)
    assert relayed.ending == console.Ending.ESCAPE
    assert remote.keys == b"ls\x03\rx"
    assert os.read(controller, 100) == b"hello\r\n"


async def test_the_relay_ends_with_the_remote_output(pty: tuple[int, int]) -> None:
    _controller, terminal = pty
    remote = FakeTerminal()
    await remote.output.put(b"error: domain is not running\r\n")
    await remote.output.put(b"")
    relayed = await asyncio.wait_for(console.relay(remote, terminal, terminal), 5)
    assert relayed == console.Relayed(console.Ending.ENDED, b"error: domain is not running\r\n")


async def test_raw_mode_is_restored_on_error(pty: tuple[int, int]) -> None:
    _controller, terminal = pty
    before = termios.tcgetattr(terminal)
    seen = []

    def fail_in_raw_mode() -> None:
        with console.raw_mode(terminal):
            seen.append(termios.tcgetattr(terminal))
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_in_raw_mode()
    assert seen[0] != before
    assert termios.tcgetattr(terminal) == before


def test_terminal_size_of_a_pipe() -> None:
    read, write = os.pipe()
    try:
        assert console.terminal_size(write) == console.DEFAULT_SIZE
    finally:
        os.close(read)
        os.close(write)


def test_viewer_uri_leaves_user_and_port_to_ssh() -> None:
    spec = model.HostSpec(name="h", address="h.example")
    assert connect.viewer_uri(spec) == "qemu+ssh://h.example/system?no_verify=0"


async def test_the_remote_terminal_follows_the_window_size(pty: tuple[int, int]) -> None:
    controller, terminal = pty
    remote = FakeTerminal()
    with console.raw_mode(terminal):  # else the escape waits for the end of its line
        relaying = asyncio.create_task(console.relay(remote, terminal, terminal))
        await asyncio.sleep(0.05)
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.kill(os.getpid(), signal.SIGWINCH)  # what the terminal sends its foreground
        await asyncio.sleep(0.1)
        os.write(controller, console.ESCAPE)
        await asyncio.wait_for(relaying, 5)
    assert remote.sizes == [(120, 40)]


def test_raw_mode_ends_quietly_when_the_terminal_hung_up() -> None:
    """A dropped ssh session closes the pty's master: restoring the modes fails with EIO,
    which must not replace the hangup's own way out (undo, exit 129)."""
    master, slave = os.openpty()
    try:
        with console.raw_mode(slave):
            assert not termios.tcgetattr(slave)[3] & termios.ECHO
            os.close(master)
    finally:
        os.close(slave)
