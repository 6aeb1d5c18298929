"""The one seam between mclu and a host: the Session protocol.

Implementations: `virt.LibvirtSession` (any libvirt URI), `remote.SshSession` (ssh + libvirt
through the same connection) and `fake.FakeSession` (in memory). tests/contract/ runs one suite
against all of them; what it pins is what callers may rely on.

Errors are mclu's own (`mclu.errors`): a missing guest is GuestNotFound, a taken name
GuestExists, a refused libvirt call LibvirtCallFailed, a host that stops answering a HostError.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mclu.model import Guest, GuestMeta, HostFacts


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
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run a command on the host, bounded by timeout (default: the host's command timeout).

        Raises HostCommandFailed on a non-zero exit when check is true, HostTimeout when the
        time runs out, and Unsupported for sessions without a shell (libvirt's test driver).
        """
        ...

    async def close(self) -> None:
        """Release the connection; idempotent. `open_session`'s context manager calls it."""
        ...
