"""The one seam between mclu and a host: the Session protocol.

Implementations: `virt.LibvirtSession` (any libvirt URI), `remote.SshSession` (ssh + libvirt
through the same connection) and `fake.FakeSession` (in memory). tests/contract/ runs one suite
against all of them; what it pins is what callers may rely on.

Errors are mclu's own (`mclu.errors`): a missing guest is GuestNotFound, a taken name
GuestExists, a refused libvirt call LibvirtCallFailed, a host that stops answering a HostError,
a command that fails HostCommandFailed (ToolMissing when the shell found no such program).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import AsyncIterable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from mclu import errors
from mclu.model import Address, AddressSource, Guest, GuestMeta, HostFacts

# What run() takes as a command's standard input: all of it at once, or a stream of chunks
# sent as they come (with back-pressure), so a 1 GiB image never sits in memory.
Input = bytes | AsyncIterable[bytes] | None


@dataclass(frozen=True)
class CommandResult:
    """What a command run on a host returned."""

    argv: tuple[str, ...]
    exit_status: int  # negative: killed by that signal, as in subprocess
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def command(self) -> str:
        return command_line(self.argv)


def command_line(argv: Sequence[str]) -> str:
    """The shell command line that runs argv on a host; the one place argv is quoted."""
    return shlex.join(argv)


# How shells and env(1) say a program is missing: dash "sh: 1: zstd: not found", bash
# "bash: line 1: zstd: command not found", env "env: 'zstd': No such file or directory".
_NOT_FOUND = re.compile(
    r"^(?:.*?: )?'?([^\s:']+)'?: (?:command )?not found$"
    r"|^env: '([^']+)': No such file or directory$",
    re.MULTILINE,
)
EXIT_NOT_FOUND = 127  # POSIX: the shell found no program of that name


def command_failed(host: str, result: CommandResult) -> errors.HostCommandFailed:
    """The error for a command that exited non-zero: ToolMissing when the shell says a program
    is missing (exit status 127), else HostCommandFailed with the host's message."""
    stderr = result.stderr.decode(errors="replace")
    if result.exit_status == EXIT_NOT_FOUND:
        found = _NOT_FOUND.search(stderr)
        if found is not None:
            tool = found.group(1) or found.group(2)
            return errors.ToolMissing(host=host, command=result.command, tool=tool, stderr=stderr)
    return errors.HostCommandFailed(
        host=host, command=result.command, exit_status=result.exit_status, stderr=stderr
    )


@dataclass(frozen=True)
class MigrationTarget:
    """Where `Session.migrate` sends a guest, as the SOURCE host reaches it (peer to peer)."""

    host: str  # the destination's inventory name
    uri: str  # libvirt URI the source's libvirtd opens, e.g. qemu+ssh://root@10.0.0.2/system
    copy_storage: bool = True  # local disks: copy the top image of each disk (pre-created there)


@dataclass(frozen=True)
class MigrationProgress:
    """A running migration's job, as libvirt reports it; bytes (memory and disks together)."""

    processed: int
    remaining: int
    total: int
    elapsed: float  # seconds since the job started


MigrationProgressCallback = Callable[[MigrationProgress], None]


# Seconds libvirt waits for a guest agent's answer when asked for addresses: a guest without
# an agent must not stall its host's worker (libvirt's own default is to wait for ever).
AGENT_TIMEOUT = 2


class Background(Protocol):
    """A command running on a host for the duration of a `Session.background` block."""

    @property
    def argv(self) -> tuple[str, ...]: ...

    def result(self) -> CommandResult | None:
        """What the command returned once it has ended (by itself or stopped), else None.

        Its output is kept only in part: the last 64 KiB of stdout and of stderr.
        """
        ...

    def check(self) -> None:
        """Raise if the command has ended by itself with a non-zero exit status.

        HostCommandFailed with the host's message (ToolMissing for a missing program).
        """
        ...


class Terminal(Protocol):
    """An interactive command on a host, on a pseudo-terminal (`Session.open_terminal`)."""

    async def read(self) -> bytes:
        """The command's next output (stdout and stderr, merged by the pty); b"" at its end.

        Raises HostError when the connection breaks.
        """
        ...

    def write(self, data: bytes) -> None:
        """Send keystrokes to the command (ignored once it has ended)."""
        ...

    def resize(self, columns: int, rows: int) -> None:
        """Tell the command's terminal its new size (SIGWINCH on the host)."""
        ...

    def exit_status(self) -> int | None:
        """The command's exit status once it has ended (negative: killed by that signal)."""
        ...


class Session(Protocol):
    """A connection to one host. Open it with `mclu.hosts.open_session` (a context manager)."""

    host: str  # the inventory name
    uri: str  # how the host is reached, for messages

    async def facts(self) -> HostFacts:
        """The host's CPUs, memory, arch and supported domain types."""
        ...

    async def guests(self) -> tuple[Guest, ...]:
        """Every guest defined or running on the host, in no particular order."""
        ...

    async def define(self, xml: str) -> Guest:
        """Define a persistent, shut off guest from domain XML.

        Raises GuestExists when a guest of that name exists (libvirt itself would silently
        redefine a guest whose XML carries the same uuid).
        """
        ...

    async def start(self, name: str) -> None:
        """Start a shut off guest (LibvirtCallFailed if it is running)."""
        ...

    async def shutdown(self, name: str) -> None:
        """Ask the guest's OS to power off (ACPI); returns before it has.

        LibvirtCallFailed if the guest is not running.
        """
        ...

    async def destroy(self, name: str) -> None:
        """Power the guest off at once (LibvirtCallFailed if it is not running)."""
        ...

    async def reboot(self, name: str) -> None:
        """Ask the guest's OS to restart (ACPI); returns before it has.

        LibvirtCallFailed if the guest is not running.
        """
        ...

    async def undefine(self, name: str) -> None:
        """Remove the guest's definition; a running guest runs on as a transient one until stopped.

        Storage is left alone.
        """
        ...

    async def set_metadata(self, name: str, meta: GuestMeta) -> None:
        """Replace mclu's record in the guest's definition (and the running guest's, if running)."""
        ...

    async def set_autostart(self, name: str, autostart: bool) -> None:
        """Whether libvirt starts the defined guest when the host (libvirtd) starts."""
        ...

    async def attach_device(self, name: str, xml: str) -> None:
        """Add the device `xml` (e.g. a CD-ROM `<disk>`) to the guest's definition: it has it
        from its next start; a running guest is not changed."""
        ...

    async def update_device(self, name: str, xml: str) -> None:
        """Change the device `xml` names (by its target) in the guest's definition and, when
        it runs, in the running guest: a CD-ROM `<disk>` without a source ejects its medium."""
        ...

    async def detach_device(self, name: str, xml: str) -> None:
        """Remove the device `xml` names (by its target) from the guest's definition; a
        running guest keeps it until it stops (a SATA CD-ROM cannot be unplugged live)."""
        ...

    async def agent_ping(self, name: str, timeout: int) -> bool:
        """Whether the QEMU guest agent in the running guest answers a ping within `timeout`
        seconds. False when it does not (not installed, not up yet, no agent channel, the
        guest not running). Raises GuestNotFound, Unsupported where the connection cannot
        talk to agents (libvirt's test driver).
        """
        ...

    async def addresses(self, name: str, source: AddressSource) -> tuple[Address, ...]:
        """The addresses `source` knows of the guest's NICs (libvirt's
        virDomainInterfaceAddresses): LEASE the DHCP leases of the libvirt network it is on,
        AGENT its guest agent (waited on for at most AGENT_TIMEOUT seconds), ARP the host's
        neighbour table as it is now (the caller provokes entries). Each address carries the
        NIC's MAC; loopback addresses are left out.

        () when the source knows none, and for a guest that is not running or whose agent
        does not answer. Raises GuestNotFound, Unsupported where the connection cannot read
        that source.
        """
        ...

    async def network_leases(self, network: str) -> tuple[Address, ...]:
        """The DHCP leases of the libvirt network `network` (virNetworkGetDHCPLeases), each
        an Address of source LEASE with the leasing NIC's MAC: one call for every guest on it.
        () when the network is not there or not active. Raises Unsupported where the
        connection cannot read them."""
        ...

    async def migrate(
        self,
        name: str,
        target: MigrationTarget,
        *,
        progress: MigrationProgressCallback | None = None,
        timeout: float | None = None,
    ) -> None:
        """Live-migrate the running guest `name` to `target`, peer to peer; returns once it
        runs there, defined there only (its definition, mclu's metadata included, travels).

        With `target.copy_storage` each disk's top image is copied (its file must already
        exist on the destination, same path and size: libvirt does not create it). progress
        gets the job's state about twice a second. On failure or cancellation the job is
        aborted and the guest runs on here. Raises GuestNotFound, LibvirtCallFailed (not
        running, refused by either host), HostTimeout after `timeout` seconds (None: no bound),
        Unsupported where the connection cannot migrate (libvirt's test driver).
        """
        ...

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: Input = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run a command on the host, bounded by timeout (default: the host's command timeout).

        input is the command's stdin: bytes, or an async iterable of chunks streamed as they
        come, never all in memory (the iterable's exceptions propagate; the command then sees
        the end of its input and is waited for). The timeout covers the whole command,
        streaming included. Raises HostCommandFailed on a non-zero exit when check is true
        (ToolMissing when the program is not on the host), HostTimeout when the time runs
        out, and Unsupported for sessions without a shell (libvirt's test driver).
        """
        ...

    def background(self, argv: Sequence[str]) -> AbstractAsyncContextManager[Background]:
        """Run argv on the host for the duration of the block (a server such as qemu-nbd).

        Started over the session's own connection, and stopped (SIGTERM) and waited for when
        the block exits, on error and on cancellation too; it dies with the connection, so
        it never outlives the session. Entering raises Unsupported on sessions without a
        shell; a command that fails to start shows in `Background.check()`.
        """
        ...

    def forward_socket(self, remote_path: str) -> AbstractAsyncContextManager[str]:
        """Forward a new local unix socket to remote_path on the host; yields its local path.

        Over the session's one ssh connection; the local socket lives in a private temporary
        directory, removed on exit. Entering raises Unsupported on sessions without ssh.
        """
        ...

    def open_terminal(
        self, argv: Sequence[str], *, term: str, size: tuple[int, int]
    ) -> AbstractAsyncContextManager[Terminal]:
        """Run argv on the host on a pseudo-terminal for the duration of the block.

        term is the terminal type (TERM), size (columns, rows). Over the session's own
        connection; leaving the block closes the channel (the command gets SIGHUP). Entering
        raises Unsupported on sessions without ssh, HostError when the channel cannot open.
        """
        ...

    def lock(self, path: str, holder: str) -> AbstractAsyncContextManager[None]:
        """Hold an exclusive lock on the host's file `path` for the duration of the block.

        Never waits: raises LockHeld, with the holder text the other process wrote, when
        another process (another mclu run, from any controller) holds it. `holder` says who
        holds it, for that other process's message. The lock dies with the session's
        connection, so a killed mclu never leaves it held. The directory is created (0700).
        """
        ...

    async def close(self) -> None:
        """Release the connection; idempotent. `open_session`'s context manager calls it."""
        ...
