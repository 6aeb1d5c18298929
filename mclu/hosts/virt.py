"""LibvirtSession: a Session over one libvirt connection, for any libvirt URI.

libvirt-python blocks, so every call runs on the session's own single worker thread: one
connection per host, calls to it in order, and hosts never queue behind each other in a shared
pool (asyncio.to_thread's default pool has min(32, cpus + 4) threads). This is the only module
that imports libvirt; `libvirt.libvirtError` is translated here by its error code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import libvirt

from mclu import errors
from mclu.hosts import locallock
from mclu.hosts.session import (
    AGENT_TIMEOUT,
    Background,
    CommandResult,
    Input,
    MigrationProgress,
    MigrationProgressCallback,
    MigrationTarget,
    Terminal,
)
from mclu.model import Address, AddressSource, Guest, GuestMeta, GuestState, HostFacts
from mclu.read import addresses, facts, metadata

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CALL_TIMEOUT = 30.0
MIGRATION_POLL = 0.5  # seconds between looks at a migration's progress
ABORT_WAIT = 60.0  # seconds an aborted migration gets to end before the caller moves on
CLOSE_TIMEOUT = 5.0  # closing must not wait long on a host that stopped answering

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: GuestState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: GuestState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: GuestState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: GuestState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: GuestState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: GuestState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: GuestState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: GuestState.PMSUSPENDED,
}

# Errors that mean the connection itself is gone, whatever the call was.
_CONNECTION_CODES = frozenset(
    {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC}
)


def _ignore_libvirt_error(_context: object, _error: object) -> None:
    """libvirt prints every error to stderr by default; mclu raises them instead."""


libvirt.registerErrorHandler(_ignore_libvirt_error, None)


def translate(
    error: libvirt.libvirtError, host: str, what: str, name: str | None = None
) -> errors.MCLUError:
    """mclu's error for a libvirt error raised by `what` (on guest `name`, if any)."""
    code = error.get_error_code()
    reason = error.get_error_message() or str(error)
    if code == libvirt.VIR_ERR_NO_DOMAIN and name is not None:
        return errors.GuestNotFound(name=name, host=host)
    if code == libvirt.VIR_ERR_DOM_EXIST and name is not None:
        return errors.GuestExists(host=host, name=name)
    if code in _CONNECTION_CODES or error.get_error_domain() == libvirt.VIR_FROM_RPC:
        return errors.LibvirtUnavailable(host=host, reason=reason)
    if code == libvirt.VIR_ERR_OPERATION_INVALID and name is not None and _NOT_RUNNING in reason:
        return errors.GuestInactive(host=host, what=what, reason=reason, name=name)
    return errors.LibvirtCallFailed(host=host, what=what, reason=reason)


# The words of libvirt's VIR_ERR_OPERATION_INVALID when a call needs a running domain
# (virDomainObjCheckActive, in every driver): the code alone also covers other refusals.
_NOT_RUNNING = "domain is not running"


class LibvirtSession:
    """A Session on one libvirt connection; open it with `open()`."""

    def __init__(
        self,
        host: str,
        uri: str,
        connection: Any,
        executor: ThreadPoolExecutor,
        call_timeout: float,
        connect_uri: str | None = None,
    ) -> None:
        self.host = host
        self.uri = uri
        # What libvirt.open takes (uri may be only how it is shown): a migration opens a
        # second connection, so that the first stays free to report its progress.
        self._connect_uri = connect_uri or uri
        self._connection = connection
        self._executor = executor
        self._call_timeout = call_timeout
        self._closed = False
        self._locks: set[locallock.LocalLock] = set()  # held; released by close() too

    async def facts(self) -> HostFacts:
        return await self._call("read host facts", self._facts)

    async def guests(self) -> tuple[Guest, ...]:
        return await self._call("list guests", self._guests)

    async def define(self, xml: str) -> Guest:
        try:
            name = facts.parse_domain_name(xml)
        except facts.ParseError as e:
            raise errors.LibvirtCallFailed(host=self.host, what="define", reason=str(e)) from None
        return await self._call(f"define {name}", functools.partial(self._define, name, xml), name)

    async def start(self, name: str) -> None:
        await self._on_domain("start", name, lambda d: d.create())

    async def shutdown(self, name: str) -> None:
        await self._on_domain("shutdown", name, lambda d: d.shutdown())

    async def destroy(self, name: str) -> None:
        await self._on_domain("destroy", name, lambda d: d.destroy())

    async def reboot(self, name: str) -> None:
        await self._on_domain("reboot", name, lambda d: d.reboot(0))

    async def undefine(self, name: str) -> None:
        await self._on_domain("undefine", name, lambda d: d.undefine())

    async def set_metadata(self, name: str, meta: GuestMeta) -> None:
        await self._on_domain("set metadata of", name, functools.partial(_set_metadata, meta=meta))

    async def set_autostart(self, name: str, autostart: bool) -> None:
        await self._on_domain("set autostart of", name, lambda d: d.setAutostart(int(autostart)))

    async def attach_device(self, name: str, xml: str) -> None:
        await self._on_domain(
            "attach a device to",
            name,
            lambda d: d.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG),
        )

    async def update_device(self, name: str, xml: str) -> None:
        await self._on_domain("update a device of", name, functools.partial(_update, xml=xml))

    async def detach_device(self, name: str, xml: str) -> None:
        await self._on_domain(
            "detach a device from",
            name,
            lambda d: d.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG),
        )

    async def agent_ping(self, name: str, timeout: int) -> bool:
        answered: list[bool] = []
        await self._on_domain(
            "ping the guest agent of",
            name,
            functools.partial(_agent_ping, timeout=timeout, answered=answered),
        )
        if not answered:  # libvirt's test driver: no agents
            raise errors.Unsupported(host=self.host, what="guest agents", uri=self.uri)
        return answered[0]

    async def addresses(self, name: str, source: AddressSource) -> tuple[Address, ...]:
        asked = functools.partial(_interface_addresses, self._connection, name, source)
        found = await self._call(f"read the {source} addresses of {name}", asked, name)
        if found is None:
            raise errors.Unsupported(host=self.host, what=f"{source} addresses", uri=self.uri)
        return addresses.from_libvirt(found, source)

    async def network_leases(self, network: str) -> tuple[Address, ...]:
        asked = functools.partial(_network_leases, self._connection, network)
        found = await self._call(f"read the DHCP leases of network {network}", asked)
        if found is None:
            raise errors.Unsupported(host=self.host, what="DHCP leases", uri=self.uri)
        return addresses.from_leases(found)

    async def interface_macs(self, name: str) -> tuple[str, ...]:
        """The MACs of the running guest's NICs, from its live XML; () when it is not running
        (for SshSession's neighbour table)."""

        def read() -> str:
            domain = self._connection.lookupByName(name)
            return str(domain.XMLDesc(0)) if domain.isActive() else "<domain/>"

        xml = await self._call(f"read the NICs of {name}", read, name)
        return addresses.macs_of(xml)

    async def migrate(
        self,
        name: str,
        target: MigrationTarget,
        *,
        progress: MigrationProgressCallback | None = None,
        timeout: float | None = None,
    ) -> None:
        """See Session.migrate. The migration call blocks for its whole length, so it runs on
        a thread and connection of its own; this session's worker polls the job meanwhile."""
        what = f"migrate {name} to {target.host}"
        await self._on_domain("migrate", name, functools.partial(_check_active, self.host))
        if self._connect_uri.startswith("test:"):
            # The test driver cannot migrate, and a second connection to it is another host.
            raise errors.Unsupported(host=self.host, what="migration", uri=self.uri)
        loop = asyncio.get_running_loop()
        migrating = loop.run_in_executor(
            None, functools.partial(_migrate, self._connect_uri, name, target)
        )
        try:
            async with asyncio.timeout(timeout):
                await self._follow_job(name, migrating, progress)
                await migrating
        except BaseException as e:
            await asyncio.shield(self._abort(name, migrating))
            if isinstance(e, TimeoutError) and timeout is not None:
                raise errors.HostTimeout(host=self.host, what=what, seconds=timeout) from None
            if isinstance(e, libvirt.libvirtError):
                if e.get_error_code() in _UNSUPPORTED_CODES:
                    raise errors.Unsupported(host=self.host, what="migration", uri=self.uri) from e
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise errors.GuestNotFound(name=name, host=self.host) from e
                # RPC errors here are the source's connection to the destination (peer to
                # peer), not this session's: say what failed, not "libvirt is not answering".
                reason = e.get_error_message() or str(e)
                raise errors.LibvirtCallFailed(host=self.host, what=what, reason=reason) from e
            raise

    async def _follow_job(
        self, name: str, migrating: asyncio.Future[None], progress: MigrationProgressCallback | None
    ) -> None:
        while not migrating.done():
            await asyncio.wait([migrating], timeout=MIGRATION_POLL)
            if progress is None or migrating.done():
                continue
            try:
                stats = await self._call(
                    f"job of {name}", functools.partial(_job_stats, self._connection, name), name
                )
            except errors.MCLUError as e:  # progress is nice to have; the migration goes on
                log.debug("%s: reading the migration's progress: %s", self.host, e)
                continue
            if stats is not None:
                progress(stats)

    async def _abort(self, name: str, migrating: asyncio.Future[None]) -> None:
        """Abort the migration job if it still runs, and wait (bounded) for the call to end."""
        if not migrating.done():
            try:
                await self._on_domain("abort the migration of", name, lambda d: d.abortJob())
            except errors.MCLUError as e:
                log.warning("%s: %s", self.host, e)
        # The caller's exception is what matters, not how the aborted call ended.
        with contextlib.suppress(libvirt.libvirtError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(migrating), ABORT_WAIT)

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: Input = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        raise errors.Unsupported(host=self.host, what="running commands", uri=self.uri)

    @asynccontextmanager
    async def background(self, argv: Sequence[str]) -> AsyncIterator[Background]:
        raise errors.Unsupported(host=self.host, what="running commands", uri=self.uri)
        yield  # pragma: no cover (makes this a generator)

    @asynccontextmanager
    async def forward_socket(self, remote_path: str) -> AsyncIterator[str]:
        raise errors.Unsupported(host=self.host, what="forwarding sockets", uri=self.uri)
        yield  # pragma: no cover (makes this a generator)

    @asynccontextmanager
    async def open_terminal(
        self, argv: Sequence[str], *, term: str, size: tuple[int, int]
    ) -> AsyncIterator[Terminal]:
        raise errors.Unsupported(host=self.host, what="interactive terminals", uri=self.uri)
        yield  # pragma: no cover (makes this a generator)

    @asynccontextmanager
    async def lock(self, path: str, holder: str) -> AsyncIterator[None]:
        """Without a shell on the host, the lock is a file on this controller (one per URI
        and path): it keeps this controller's runs apart, not two controllers'."""
        lock = locallock.LocalLock(self.host, f"{self.uri}\0{path}", path, holder)
        self._locks.add(lock)
        try:
            yield
        finally:
            lock.release()
            self._locks.discard(lock)

    async def close(self) -> None:
        """Close the libvirt connection and stop the worker thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        for lock in self._locks:
            lock.release()
        try:
            await self._in_thread(self._connection.close, timeout=CLOSE_TIMEOUT)
        except (libvirt.libvirtError, TimeoutError) as e:
            log.debug("%s: closing libvirt connection: %s", self.host, e)
        finally:
            # Not waiting: a call stuck on a dead connection must not hang the caller.
            self._executor.shutdown(wait=False, cancel_futures=True)

    # --- blocking parts, run on the worker thread ---

    def _facts(self) -> HostFacts:
        conn = self._connection
        capabilities = facts.parse_capabilities(conn.getCapabilities())
        memory = _node_memory(conn)
        return HostFacts(
            hostname=conn.getHostname(),
            arch=capabilities.arch,
            # [model, memory MiB, cpus, ...]: asked only when the capabilities lack a topology
            cpus=capabilities.cpus if capabilities.cpus is not None else conn.getInfo()[2],
            memory_total=memory.total,
            memory_free=memory.available,
            domain_types=capabilities.domain_types,
            libvirt_version=facts.libvirt_version(conn.getLibVersion()),
            host_uuid=capabilities.host_uuid,
            networks=_networks(conn, self.host),
            bridges=_bridges(conn, self.host),
        )

    def _guests(self) -> tuple[Guest, ...]:
        return _guests_of(self._connection)

    def _define(self, name: str, xml: str) -> Guest:
        if self._lookup(name) is not None:
            raise errors.GuestExists(host=self.host, name=name)
        return _guest_of(self._connection.defineXML(xml))

    def _lookup(self, name: str) -> Any:
        try:
            return self._connection.lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    # --- running calls off the event loop ---

    async def _on_domain(self, what: str, name: str, action: Callable[[Any], object]) -> None:
        def call() -> None:
            action(self._connection.lookupByName(name))

        await self._call(f"{what} {name}", call, name)

    async def _call(self, what: str, function: Callable[[], T], name: str | None = None) -> T:
        """Run function on the worker thread, translating libvirt's and the parsers' errors."""
        if self._closed:
            raise errors.LibvirtUnavailable(host=self.host, reason="the session is closed")
        try:
            return await self._in_thread(function, timeout=self._call_timeout)
        except libvirt.libvirtError as e:
            raise translate(e, self.host, what, name) from e
        except facts.ParseError as e:
            raise errors.LibvirtCallFailed(host=self.host, what=what, reason=str(e)) from e
        except TimeoutError:
            raise errors.HostTimeout(
                host=self.host, what=what, seconds=self._call_timeout
            ) from None

    async def _in_thread(self, function: Callable[[], T], *, timeout: float) -> T:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._executor, function), timeout)


@asynccontextmanager
async def open(
    host: str, uri: str, *, call_timeout: float = DEFAULT_CALL_TIMEOUT, shown_as: str | None = None
) -> AsyncIterator[LibvirtSession]:
    """Connect to libvirt at uri (read-write) for the host named `host`, closed on exit.

    shown_as names the connection in messages and as the session's uri (default: uri).
    Raises LibvirtUnavailable when libvirt does not answer, HostTimeout when it takes longer
    than call_timeout.
    """
    shown_as = shown_as or uri
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"libvirt-{host}")
    try:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(executor, libvirt.open, uri)
        connection = await asyncio.wait_for(future, call_timeout)
    except BaseException as e:
        executor.shutdown(wait=False, cancel_futures=True)
        if isinstance(e, libvirt.libvirtError):
            reason = e.get_error_message() or str(e)
            raise errors.LibvirtUnavailable(host=host, reason=f"{shown_as}: {reason}") from e
        if isinstance(e, TimeoutError):
            raise errors.HostTimeout(
                host=host, what=f"connecting to libvirt at {shown_as}", seconds=call_timeout
            ) from e
        raise
    session = LibvirtSession(host, shown_as, connection, executor, call_timeout, connect_uri=uri)
    try:
        yield session
    finally:
        await session.close()


def _node_memory(connection: Any) -> facts.Memory:
    """Memory from node stats over all NUMA cells; virNodeGetInfo's counts node 0 only."""
    try:
        stats = connection.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
        return facts.parse_node_memory_stats(stats)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
    # The test driver has no memory stats and reports 0 free: its configured memory less
    # what its running guests hold is what a real host would show.
    total = connection.getInfo()[1] * 1024 * 1024
    running = sum(g.memory for g in _guests_of(connection) if g.state.active)
    return facts.Memory(total=total, available=max(total - running, 0))


def _networks(connection: Any, host: str) -> tuple[str, ...] | None:
    """The active libvirt networks; None (unknown) where libvirt cannot list them."""
    try:
        return tuple(sorted(connection.listNetworks()))
    except libvirt.libvirtError as e:
        log.debug("%s: no list of libvirt networks: %s", host, e)
        return None


# libvirt names the tap devices it makes vnetN and macvtapN, and refuses those prefixes for
# devices named by a user: never a bridge, and one per guest NIC, so not asked one by one.
_NOT_BRIDGES = ("vnet", "macvtap", "macvlan")


def _bridges(connection: Any, host: str) -> tuple[str, ...] | None:
    """The host's bridges, from libvirt's interface driver (udev); None (unknown)
    where it has none. An interface gone between the list and its XML is left out."""
    try:
        # All, not only active ones: udev calls a bridge without ports down, yet guests can join it.
        interfaces = connection.listAllInterfaces(0)
    except libvirt.libvirtError as e:
        log.debug("%s: no list of interfaces: %s", host, e)
        return None
    described = []
    for interface in interfaces:
        if interface.name() == "lo" or interface.name().startswith(_NOT_BRIDGES):
            continue
        with contextlib.suppress(libvirt.libvirtError):
            described.append(interface.XMLDesc(0))
    try:
        return facts.parse_bridges(described)
    except facts.ParseError as e:
        log.debug("%s: interface XML not understood: %s", host, e)
        return None


def _guests_of(connection: Any) -> tuple[Guest, ...]:
    guests = []
    # One call for every guest's autostart flag instead of one per guest.
    autostart = {
        d.UUIDString()
        for d in connection.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
    }
    for domain in connection.listAllDomains(0):
        try:
            guests.append(_guest_of(domain, domain.UUIDString() in autostart))
        except libvirt.libvirtError as e:
            # A transient guest can stop (and vanish) between the listing and the reading.
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    return tuple(guests)


def _guest_of(domain: Any, autostart: bool | None = None) -> Guest:
    state, _reason = domain.state()
    if autostart is None:
        autostart = bool(domain.autostart())
    return facts.parse_guest(
        domain.XMLDesc(0),
        _STATES.get(state, GuestState.NOSTATE),
        persistent=bool(domain.isPersistent()),
        autostart=autostart,
    )


def _update(domain: Any, *, xml: str) -> None:
    """The device changed in the definition, and in the running guest when it runs."""
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if domain.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    domain.updateDeviceFlags(xml, flags)


# Why an agent gives no answer: not installed or not up yet, no channel, guest not running.
_NO_AGENT_CODES = frozenset(
    {
        libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
        libvirt.VIR_ERR_AGENT_UNSYNCED,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
        libvirt.VIR_ERR_OPERATION_INVALID,
        libvirt.VIR_ERR_OPERATION_FAILED,
    }
)


def _agent_ping(domain: Any, *, timeout: int, answered: list[bool]) -> None:
    import libvirt_qemu  # part of libvirt-python; only this call needs it

    try:
        libvirt_qemu.qemuAgentCommand(domain, '{"execute":"guest-ping"}', timeout, 0)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return
        if e.get_error_code() not in _NO_AGENT_CODES:
            raise
        answered.append(False)
        return
    answered.append(True)


_ADDRESS_SOURCES = {
    AddressSource.LEASE: libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
    AddressSource.AGENT: libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
    AddressSource.ARP: libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
}


def _interface_addresses(connection: Any, name: str, source: AddressSource) -> Any:
    """virDomainInterfaceAddresses of the guest from `source`: its dict, {} when the source
    knows nothing (the guest not running, no agent answering), None when the connection
    cannot read that source."""
    domain = connection.lookupByName(name)
    if not domain.isActive():
        return {}
    if source != AddressSource.AGENT:
        return _ask_addresses(domain, _ADDRESS_SOURCES[source])
    # The agent's timeout is the domain's, for every agent call: short for this one, then
    # libvirt's default again. Without it, a guest whose agent channel exists but whose agent
    # does not answer would hold this host's worker for libvirt's default (for ever).
    try:
        domain.agentSetResponseTimeout(AGENT_TIMEOUT, 0)
    except libvirt.libvirtError as e:
        if e.get_error_code() not in _UNSUPPORTED_CODES:
            raise
        return None  # no agents here (libvirt's test driver)
    try:
        return _ask_addresses(domain, _ADDRESS_SOURCES[source], _NO_AGENT_CODES)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            domain.agentSetResponseTimeout(libvirt.VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_DEFAULT, 0)


def _network_leases(connection: Any, network: str) -> Any:
    """virNetworkGetDHCPLeases of the network: its list, [] when the network is not there or
    not active, None when the connection cannot read leases."""
    try:
        return connection.networkLookupByName(network).DHCPLeases() or []
    except libvirt.libvirtError as e:
        code = e.get_error_code()
        if code in _UNSUPPORTED_CODES:
            return None
        if code in (libvirt.VIR_ERR_NO_NETWORK, libvirt.VIR_ERR_OPERATION_INVALID):
            return []
        raise


def _ask_addresses(domain: Any, flag: int, nothing_known: frozenset[int] = frozenset()) -> Any:
    try:
        return domain.interfaceAddresses(flag, 0) or {}
    except libvirt.libvirtError as e:
        code = e.get_error_code()
        if code in _UNSUPPORTED_CODES and code not in nothing_known:
            return None
        stopped = code == libvirt.VIR_ERR_OPERATION_INVALID and _NOT_RUNNING in str(e)
        if code in nothing_known or stopped:
            return {}
        raise


def _set_metadata(domain: Any, *, meta: GuestMeta) -> None:
    # The definition and, when running, the live guest too: guests() reads the live XML.
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if domain.isPersistent() else 0
    if domain.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    domain.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        metadata.render_for_set_metadata(meta),
        metadata.PREFIX,
        metadata.NAMESPACE,
        flags,
    )


# Live migration, peer to peer: the source's libvirtd connects to the destination itself.
_MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)
_UNSUPPORTED_CODES = frozenset({libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED})


def migration_flags(target: MigrationTarget) -> int:
    """libvirt's flags for a migration to target: incremental storage copy for local disks."""
    storage: int = libvirt.VIR_MIGRATE_NON_SHARED_INC if target.copy_storage else 0
    return int(_MIGRATE_FLAGS | storage)


def _check_active(host: str, domain: Any) -> None:
    if not domain.isActive():
        raise errors.GuestInactive(
            host=host,
            what=f"migrate {domain.name()}",
            reason=f"Requested operation is not valid: {_NOT_RUNNING}",
            name=domain.name(),
        )


def _migrate(uri: str, name: str, target: MigrationTarget) -> None:
    """The blocking migration call, on a connection of its own (closed after, here).

    The domain object is released here too: an exception's traceback would otherwise keep
    it (libvirt-python's own frame holds it) alive until the event loop's thread frees it,
    and freeing the connection's last reference there closes its RPC client while the ssh
    forward it runs through needs that very thread (a deadlock seen with a failed migration).
    """
    connection = libvirt.open(uri)
    try:
        domain = connection.lookupByName(name)
        try:
            domain.migrateToURI3(target.uri, {}, migration_flags(target))
        except libvirt.libvirtError as e:
            # Its traceback holds the frame whose `self` is the domain: drop it.
            raise e.with_traceback(None) from None
        finally:
            del domain
    finally:
        connection.close()


def _job_stats(connection: Any, name: str) -> MigrationProgress | None:
    stats = connection.lookupByName(name).jobStats()
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    return MigrationProgress(
        processed=int(stats.get("data_processed", 0)),
        remaining=int(stats.get("data_remaining", 0)),
        total=int(stats.get("data_total", 0)),
        elapsed=int(stats.get("time_elapsed", 0)) / 1000,
    )
