"""SshSession: a production host, reached by ssh, with libvirt through the same connection.

One ssh connection per host carries both the shell commands and libvirt's RPC (its unix
socket forwarded to a private local socket), so a host costs one login and honours the
user's ssh setup exactly as `ssh HOST` does.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from mclu import errors
from mclu.hosts import commands, ssh, virt
from mclu.hosts.session import (
    Background,
    CommandResult,
    Input,
    MigrationProgressCallback,
    MigrationTarget,
    Terminal,
)
from mclu.model import Address, AddressSource, Guest, GuestMeta, HostFacts, HostSpec
from mclu.read import addresses

log = logging.getLogger(__name__)


class SshSession:
    """A Session over ssh: commands over the connection, libvirt over its forwarded socket."""

    def __init__(
        self,
        spec: HostSpec,
        connection: ssh.SshConnection,
        libvirt: virt.LibvirtSession,
        stack: AsyncExitStack,
    ) -> None:
        self.host = spec.name
        self.uri = display_uri(spec)
        self._ssh = connection
        self._libvirt = libvirt
        self._stack = stack
        self._neighbours: dict[str, list[tuple[str, int | None]]] | None = None

    async def facts(self) -> HostFacts:
        """libvirt's facts: memory from its node stats over all NUMA cells.

        No extra command per host (such as reading /proc/meminfo): with many hosts, each
        process started on them shows in every `mclu status`.
        """
        return await self._libvirt.facts()

    async def guests(self) -> tuple[Guest, ...]:
        return await self._libvirt.guests()

    async def define(self, xml: str) -> Guest:
        return await self._libvirt.define(xml)

    async def start(self, name: str) -> None:
        await self._libvirt.start(name)

    async def shutdown(self, name: str) -> None:
        await self._libvirt.shutdown(name)

    async def destroy(self, name: str) -> None:
        await self._libvirt.destroy(name)

    async def reboot(self, name: str) -> None:
        await self._libvirt.reboot(name)

    async def undefine(self, name: str) -> None:
        await self._libvirt.undefine(name)

    async def set_metadata(self, name: str, meta: GuestMeta) -> None:
        await self._libvirt.set_metadata(name, meta)

    async def set_autostart(self, name: str, autostart: bool) -> None:
        await self._libvirt.set_autostart(name, autostart)

    async def attach_device(self, name: str, xml: str) -> None:
        await self._libvirt.attach_device(name, xml)

    async def update_device(self, name: str, xml: str) -> None:
        await self._libvirt.update_device(name, xml)

    async def detach_device(self, name: str, xml: str) -> None:
        await self._libvirt.detach_device(name, xml)

    async def agent_ping(self, name: str, timeout: int) -> bool:
        return await self._libvirt.agent_ping(name, timeout)

    async def addresses(self, name: str, source: AddressSource) -> tuple[Address, ...]:
        """ARP from the host's neighbour table read here (`ip neigh`), not by libvirt: libvirt
        9.0 reads it over netlink and fails on newer kernels ("wrong nlmsg len"). The table
        is read once for all the guests asked after it, until the next command is run (a
        command such as commands.provoke_neighbours changes it)."""
        if source != AddressSource.ARP:
            return await self._libvirt.addresses(name, source)
        macs = await self._libvirt.interface_macs(name)
        if not macs:  # not running, or no NIC
            return ()
        if self._neighbours is None:
            listed = await self._ssh.run(commands.neighbours())
            self._neighbours = addresses.parse_neighbours(listed.stdout.decode(errors="replace"))
        return addresses.from_neighbours(self._neighbours, macs)

    async def network_leases(self, network: str) -> tuple[Address, ...]:
        return await self._libvirt.network_leases(network)

    async def migrate(
        self,
        name: str,
        target: MigrationTarget,
        *,
        progress: MigrationProgressCallback | None = None,
        timeout: float | None = None,
    ) -> None:
        await self._libvirt.migrate(name, target, progress=progress, timeout=timeout)

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: Input = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        self._neighbours = None  # the command may change the neighbour table
        return await self._ssh.run(argv, input=input, check=check, timeout=timeout)

    def background(self, argv: Sequence[str]) -> AbstractAsyncContextManager[Background]:
        return self._ssh.background(argv)

    def forward_socket(self, remote_path: str) -> AbstractAsyncContextManager[str]:
        return self._ssh.forward_unix_socket(remote_path)

    def open_terminal(
        self, argv: Sequence[str], *, term: str, size: tuple[int, int]
    ) -> AbstractAsyncContextManager[Terminal]:
        return self._ssh.open_terminal(argv, term=term, size=size)

    def lock(self, path: str, holder: str) -> AbstractAsyncContextManager[None]:
        return self._ssh.lock(path, holder)

    async def close(self) -> None:
        """Close libvirt, the forward and the ssh connection, in that order; idempotent."""
        await self._stack.aclose()


def display_uri(spec: HostSpec) -> str:
    """The libvirt URI a user would type for this host (`virsh -c ...`), for messages."""
    user = f"{spec.user}@" if spec.user else ""
    port = f":{spec.port}" if spec.port is not None else ""
    return f"qemu+ssh://{user}{spec.address}{port}/system"


def libvirt_uri(socket_path: str) -> str:
    """The URI libvirt-python opens to reach the host's libvirtd through the forwarded socket."""
    return "qemu+unix:///system?" + urllib.parse.urlencode({"socket": socket_path})


async def _is_socket(connection: ssh.SshConnection, path: str) -> bool:
    """Whether path is a socket on the host (True when that cannot be told)."""
    try:
        result = await connection.run(commands.is_socket(path), check=False)
    except errors.HostError:
        return True
    return result.exit_status == 0


@asynccontextmanager
async def open(spec: HostSpec) -> AsyncIterator[SshSession]:
    """Connect by ssh, forward spec.libvirt_socket, open libvirt on it; all closed on exit.

    Raises what ssh.connect raises, and LibvirtUnavailable when libvirtd does not answer.
    """
    async with AsyncExitStack() as stack:
        connection = await stack.enter_async_context(ssh.connect(spec))
        socket_path = await stack.enter_async_context(
            connection.forward_unix_socket(spec.libvirt_socket)
        )
        try:
            libvirt = await stack.enter_async_context(
                virt.open(
                    spec.name,
                    libvirt_uri(socket_path),
                    call_timeout=spec.command_timeout,
                    shown_as=display_uri(spec),
                )
            )
        except errors.LibvirtUnavailable as e:
            # Through a forward, a missing socket shows only as "End of file while reading".
            if not await _is_socket(connection, spec.libvirt_socket):
                reason = f"no socket {spec.libvirt_socket} on the host (is libvirtd running?)"
                raise errors.LibvirtUnavailable(host=spec.name, reason=reason) from e
            raise
        # The session owns what the stack holds; its close() and leaving this block both
        # release it, whichever comes first.
        yield SshSession(spec, connection, libvirt, stack)
