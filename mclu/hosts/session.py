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
from collections.abc import AsyncIterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from mclu import errors
from mclu.model import Guest, GuestMeta, HostFacts

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
_NOT_FOUND = re.compile(r"^(?:.*?: )?'?([^\s:']+)'?: (?:command )?not found$"
                        r"|^env: '([^']+)': No such file or directory$", re.MULTILINE)
EXIT_NOT_FOUND = 127  # POSIX: the shell found no program of that name


def command_failed(host: str, result: CommandResult) -> errors.HostCommandFailed:
    """The error for a command that exited non-zero: ToolMissing when the shell says a program
    is missing (exit status 127), else HostCommandFailed with the host's message."""
    stderr = result.stderr.decode(errors="replace")
    if result.exit_status == EXIT_NOT_FOUND:
        found = _NOT_FOUND.search(stderr)
        if found is not None:
            tool = found.group(1) or found.group(2)
            return errors.ToolMissing(host, result.command, tool, stderr)
    return errors.HostCommandFailed(host, result.command, result.exit_status, stderr)


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

    async def undefine(self, name: str) -> None:
        """Remove the guest's definition; a running guest runs on as a transient one until stopped.

        Storage is left alone.
        """
        ...

    async def set_metadata(self, name: str, meta: GuestMeta) -> None:
        """Replace mclu's record in the guest's definition (and the running guest's, if running)."""
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

    async def close(self) -> None:
        """Release the connection; idempotent. `open_session`'s context manager calls it."""
        ...
