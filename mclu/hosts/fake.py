"""In-memory hosts behind the Session interface, for tests of everything above mclu.hosts.

FakeSession copies what libvirt does (tests/contract/ holds both to the same suite): the
same states, the same errors, a running guest that outlives its undefine as a transient one.
Its files are a small table (`mclu.hosts.fake_files`) on which the command lines of
`mclu.hosts.commands` act as on a real host (tests/contract/test_commands_contract.py);
other command lines answer what a test cans for them (`FakeHost.commands`).
FakeCluster holds several named fake hosts and opens sessions for HostSpecs with the same
signature as `mclu.hosts.open_session`, so tests inject `cluster.open` where production
passes `open_session`.
"""

from __future__ import annotations

import dataclasses
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

from mclu import errors
from mclu.hosts import commands
from mclu.hosts.fake_files import Files
from mclu.hosts.session import (
    CommandResult,
    Input,
    MigrationProgress,
    MigrationProgressCallback,
    MigrationTarget,
    Terminal,
    command_failed,
    command_line,
)
from mclu.model import Address, AddressSource, Guest, GuestMeta, GuestState, HostFacts, HostSpec
from mclu.read import facts

GIB = 1 << 30
_NOT_VALID = "Requested operation is not valid"  # libvirt's words for VIR_ERR_OPERATION_INVALID


@dataclass
class FakeHost:
    """One fake hypervisor: its capacity, its guests, its canned commands, and its failure."""

    name: str
    cpus: int = 8
    memory: int = 16 * GIB
    arch: str = "x86_64"
    domain_types: tuple[str, ...] = ("qemu", "kvm")
    # libvirt's host UUID; two FakeHosts given the same one are one machine under two names.
    host_uuid: str = field(default_factory=lambda: str(uuid_module.uuid4()))
    # Active libvirt networks and bridges, as on libvirt's test driver; None: unknown.
    networks: tuple[str, ...] | None = ("default",)
    bridges: tuple[str, ...] | None = ()
    guests: dict[str, Guest] = field(default_factory=dict)
    # argv → result, for any command line; one not listed is run on `files` when it is one
    # of mclu.hosts.commands that acts on files, else raises Unsupported, as on a session
    # without a shell.
    commands: dict[tuple[str, ...], CommandResult] = field(default_factory=dict)
    # Background commands running now. Any argv runs in the background until stopped, except
    # those in `commands`, which end at once with their result.
    running: list[tuple[str, ...]] = field(default_factory=list)
    failure: errors.HostError | None = None  # raised by opening and by every call while set
    # Why a migration to this host fails (as the source reports it), e.g. a storage error.
    refuse_migration: str | None = None
    ran: list[tuple[str, ...]] = field(default_factory=list)  # every run() argv, in order
    # Guests whose OS ignores ACPI requests: shutdown and reboot are accepted and do nothing.
    ignores_acpi: set[str] = field(default_factory=set)
    locks: dict[str, str] = field(default_factory=dict)  # path → holder, while held
    # Guests whose guest agent answers a ping (once running); console log text by guest
    # name (what `tail` of its console log prints).
    agents: set[str] = field(default_factory=set)
    consoles: dict[str, str] = field(default_factory=dict)
    # Its files, on which the command lines of mclu.hosts.commands act (those not canned).
    files: Files = field(default_factory=Files)
    # What each source knows of a guest's addresses (each Address names its source), by
    # guest name: given while the guest runs, as libvirt does.
    addresses: dict[str, tuple[Address, ...]] = field(default_factory=dict)

    def facts(self) -> HostFacts:
        """Facts as libvirt would give them; running guests' memory is not free."""
        held = sum(g.memory for g in self.guests.values() if g.state.active)
        return HostFacts(
            hostname=self.name,
            arch=self.arch,
            cpus=self.cpus,
            memory_total=self.memory,
            memory_free=max(self.memory - held, 0),
            domain_types=self.domain_types,
            libvirt_version="9.0.0",
            host_uuid=self.host_uuid,
            networks=self.networks,
            bridges=self.bridges,
        )


class FakeSession:
    """A Session on a FakeHost; every call sees and changes the host's state."""

    def __init__(self, fake_host: FakeHost, uri: str, cluster: FakeCluster | None = None) -> None:
        self.host = fake_host.name
        self.uri = uri
        self._fake = fake_host
        self._cluster = cluster  # where migrations go; None: this host cannot migrate
        self._closed = False
        self._held: set[str] = set()  # lock paths this session holds

    @property
    def fake_host(self) -> FakeHost:
        """The host this session sees and changes, for tests to inspect."""
        return self._fake

    async def facts(self) -> HostFacts:
        self._check()
        return self._fake.facts()

    async def guests(self) -> tuple[Guest, ...]:
        self._check()
        return tuple(self._fake.guests.values())

    async def define(self, xml: str) -> Guest:
        self._check()
        try:
            parsed = facts.parse_guest(xml, GuestState.SHUTOFF, persistent=True)
        except facts.ParseError as e:
            raise errors.LibvirtCallFailed(host=self.host, what="define", reason=str(e)) from None
        if parsed.name in self._fake.guests:
            raise errors.GuestExists(host=self.host, name=parsed.name)
        guest = dataclasses.replace(parsed, uuid=parsed.uuid or str(uuid_module.uuid4()))
        self._fake.guests[guest.name] = guest
        return guest

    async def start(self, name: str) -> None:
        guest = self._guest(name)
        if guest.state.active:
            self._refuse("start", name, f"{_NOT_VALID}: domain is already running")
        self._replace(guest, state=GuestState.RUNNING)

    async def shutdown(self, name: str) -> None:
        # Like libvirt's test driver, the guest's OS obeys at once.
        guest = self._guest(name)
        if name in self._fake.ignores_acpi and guest.state.active:
            return
        self._stop("shutdown", guest)

    async def reboot(self, name: str) -> None:
        guest = self._guest(name)
        if not guest.state.active:
            self._refuse("reboot", name, f"{_NOT_VALID}: domain is not running")
        # Rebooted at once: running again, as the test driver has it.

    async def destroy(self, name: str) -> None:
        self._stop("destroy", self._guest(name))

    async def undefine(self, name: str) -> None:
        guest = self._guest(name)
        if guest.state.active:
            self._replace(guest, persistent=False)  # runs on, transient, until stopped
        else:
            del self._fake.guests[name]

    async def set_metadata(self, name: str, meta: GuestMeta) -> None:
        self._replace(self._guest(name), mclu=meta)

    async def set_autostart(self, name: str, autostart: bool) -> None:
        self._replace(self._guest(name), autostart=autostart)

    # CD-ROMs: the guest's `cdroms` are the media of its drives. mclu's guests have one drive
    # at most, so a drive is not told from another by its target here.
    async def attach_device(self, name: str, xml: str) -> None:
        guest = self._guest(name)
        self._replace(guest, cdroms=(*guest.cdroms, _cdrom_file(xml)))

    async def update_device(self, name: str, xml: str) -> None:
        guest = self._guest(name)
        medium = _cdrom_file(xml)
        self._replace(guest, cdroms=(medium,) if medium else ())

    async def detach_device(self, name: str, xml: str) -> None:
        guest = self._guest(name)
        if not guest.state.active:  # a running guest keeps its drive until it stops
            self._replace(guest, cdroms=())

    async def agent_ping(self, name: str, timeout: int) -> bool:
        guest = self._guest(name)
        return guest.state.active and name in self._fake.agents

    async def addresses(self, name: str, source: AddressSource) -> tuple[Address, ...]:
        guest = self._guest(name)
        if not guest.state.active:
            return ()
        return tuple(a for a in self._fake.addresses.get(name, ()) if a.source == source)

    async def network_leases(self, network: str) -> tuple[Address, ...]:
        """The LEASE addresses of the running guests with a NIC on `network`."""
        self._check()
        if network not in (self._fake.networks or ()):
            return ()
        return tuple(
            a
            for guest in self._fake.guests.values()
            if guest.state.active and f"network:{network}" in guest.networks
            for a in self._fake.addresses.get(guest.name, ())
            if a.source == AddressSource.LEASE
        )

    async def migrate(
        self,
        name: str,
        target: MigrationTarget,
        *,
        progress: MigrationProgressCallback | None = None,
        timeout: float | None = None,
    ) -> None:
        """Move the running guest to the cluster's host `target.host`, as libvirt would."""
        guest = self._guest(name)
        if not guest.state.active:
            self._refuse("migrate", name, f"{_NOT_VALID}: domain is not running")
        if self._cluster is None:
            raise errors.Unsupported(host=self.host, what="migration", uri=self.uri)
        dest = self._cluster.hosts.get(target.host)
        why = None
        if dest is None or dest.failure is not None:
            why = f"cannot connect to {target.uri}: {dest.failure if dest else 'no such host'}"
        elif dest is self._fake:
            why = f"{_NOT_VALID}: the destination is the source host"
        elif name in dest.guests:
            why = f"domain '{name}' already exists on {dest.name}"
        else:
            why = dest.refuse_migration
        if why is not None or dest is None:
            raise errors.LibvirtCallFailed(
                host=self.host, what=f"migrate {name} to {target.host}", reason=why or ""
            )
        if progress is not None:
            progress(
                MigrationProgress(
                    processed=guest.memory, remaining=0, total=guest.memory, elapsed=0.0
                )
            )
        # libvirt defines it at the destination without its autostart flag.
        dest.guests[name] = dataclasses.replace(guest, persistent=True, autostart=False)
        del self._fake.guests[name]

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: Input = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        self._check()
        self._fake.ran.append(tuple(argv))
        canned = (
            self._console(argv)
            or self._fake.commands.get(tuple(argv))
            or self._fake.files.answer(argv, input if isinstance(input, bytes) else None)
        )
        if canned is None:
            raise errors.Unsupported(
                host=self.host, what=f"running `{command_line(argv)}`", uri=self.uri
            )
        if input is not None and not isinstance(input, bytes):
            async for _chunk in input:  # consumed, as a real command would read it
                pass
        if check and canned.exit_status != 0:
            raise command_failed(self.host, canned)
        return canned

    @asynccontextmanager
    async def background(self, argv: Sequence[str]) -> AsyncIterator[FakeBackground]:
        self._check()
        running = FakeBackground(self.host, tuple(argv), self._fake.commands.get(tuple(argv)))
        # An NBD server of mclu.hosts.commands listens on its socket while it runs.
        stop_serving = self._fake.files.serve(argv) if running.result() is None else None
        if running.result() is None:
            self._fake.running.append(running.argv)
        try:
            yield running
        finally:
            if running.result() is None:
                self._fake.running.remove(running.argv)
                running.stop()
                if stop_serving is not None:
                    stop_serving()

    @asynccontextmanager
    async def forward_socket(self, remote_path: str) -> AsyncIterator[str]:
        self._check()
        raise errors.Unsupported(host=self.host, what=f"forwarding {remote_path}", uri=self.uri)
        yield  # pragma: no cover (makes this a generator)

    @asynccontextmanager
    async def open_terminal(
        self, argv: Sequence[str], *, term: str, size: tuple[int, int]
    ) -> AsyncIterator[Terminal]:
        self._check()
        raise errors.Unsupported(host=self.host, what="interactive terminals", uri=self.uri)
        yield  # pragma: no cover (makes this a generator)

    @asynccontextmanager
    async def lock(self, path: str, holder: str) -> AsyncIterator[None]:
        self._check()
        if path in self._fake.locks:
            raise errors.LockHeld(host=self.host, path=path, holder=self._fake.locks[path])
        self._fake.locks[path] = holder
        self._held.add(path)
        try:
            yield
        finally:
            self._release(path)

    def _release(self, path: str) -> None:
        if path in self._held:
            self._held.discard(path)
            del self._fake.locks[path]

    async def close(self) -> None:
        for path in list(self._held):  # as a real lock dies with its connection
            self._release(path)
        self._closed = True

    def _console(self, argv: Sequence[str]) -> CommandResult | None:
        """`tail -c N -- LOG` of a guest's console log (`commands.console_tail`), as
        `consoles` has it."""
        for name, text in self._fake.consoles.items():
            size = argv[2] if len(argv) == 5 else ""
            if size.isdigit() and list(argv) == commands.console_tail(name, int(size)):
                return CommandResult(tuple(argv), 0, text.encode()[-int(size) :])
        return None

    def _check(self) -> None:
        if self._closed:
            raise errors.LibvirtUnavailable(host=self.host, reason="the session is closed")
        if self._fake.failure is not None:
            raise self._fake.failure

    def _guest(self, name: str) -> Guest:
        self._check()
        guest = self._fake.guests.get(name)
        if guest is None:
            raise errors.GuestNotFound(name=name, host=self.host)
        return guest

    def _stop(self, what: str, guest: Guest) -> None:
        if not guest.state.active:
            self._refuse(what, guest.name, f"{_NOT_VALID}: domain is not running")
        if guest.persistent:
            self._replace(guest, state=GuestState.SHUTOFF)
        else:
            del self._fake.guests[guest.name]  # a stopped transient guest is gone

    def _replace(self, guest: Guest, **changes: Any) -> None:
        self._fake.guests[guest.name] = dataclasses.replace(guest, **changes)

    def _refuse(self, what: str, name: str, reason: str) -> NoReturn:
        if reason.endswith("domain is not running"):  # as LibvirtSession translates it
            raise errors.GuestInactive(
                host=self.host, what=f"{what} {name}", reason=reason, name=name
            )
        raise errors.LibvirtCallFailed(host=self.host, what=f"{what} {name}", reason=reason)


class FakeBackground:
    """A fake background command: runs until stopped, or has ended at once with `ended`."""

    STOPPED = 128 + 15  # what the real wrapper's shell reports for a command it killed

    def __init__(self, host: str, argv: tuple[str, ...], ended: CommandResult | None) -> None:
        self.host = host
        self.argv = argv
        self._result = ended
        self._stopped = False

    def result(self) -> CommandResult | None:
        return self._result

    def check(self) -> None:
        if self._result is not None and not self._stopped and self._result.exit_status != 0:
            raise command_failed(self.host, self._result)

    def stop(self) -> None:
        self._stopped = True
        self._result = CommandResult(self.argv, self.STOPPED)


class FakeCluster:
    """Named fake hosts, opened by HostSpec name like real ones by address."""

    def __init__(self, hosts: Iterable[FakeHost] = ()) -> None:
        self.hosts: dict[str, FakeHost] = {h.name: h for h in hosts}
        self.open_sessions = 0  # sessions opened and not yet closed, to check for leaks

    @classmethod
    def of(cls, *names: str) -> FakeCluster:
        """Hosts with distinct capacities: the i-th has 4·(i+1) CPUs and 8·(i+1) GiB."""
        return cls(
            FakeHost(name, cpus=4 * (i + 1), memory=8 * (i + 1) * GIB)
            for i, name in enumerate(names)
        )

    def add(self, fake_host: FakeHost) -> FakeHost:
        self.hosts[fake_host.name] = fake_host
        return fake_host

    def fail(self, name: str, error: errors.HostError | None) -> None:
        """Make the host fail with error on opening and on every call; None heals it."""
        self.hosts[name].failure = error

    def spec(self, name: str, **fields: Any) -> HostSpec:
        """A HostSpec for the fake host `name`, as an inventory would give it."""
        return HostSpec(name=name, address=f"{name}.fake", **fields)

    @asynccontextmanager
    async def open(self, spec: HostSpec) -> AsyncIterator[FakeSession]:
        """Open a session on the fake host spec.name (same signature as open_session)."""
        fake_host = self.hosts.get(spec.name)
        if fake_host is None:
            raise errors.HostUnreachable(
                host=spec.name, address=spec.address, reason="no such fake host"
            )
        if fake_host.failure is not None:
            raise fake_host.failure
        session = FakeSession(fake_host, f"fake:///{spec.name}", cluster=self)
        self.open_sessions += 1
        try:
            yield session
        finally:
            self.open_sessions -= 1
            await session.close()


def canned(
    argv: Sequence[str], stdout: bytes = b"", stderr: bytes = b"", exit_status: int = 0
) -> tuple[tuple[str, ...], CommandResult]:
    """One entry for FakeHost.commands: `dict([canned(["uname", "-n"], b"a\\n")])`."""
    return tuple(argv), CommandResult(tuple(argv), exit_status, stdout, stderr)


def _cdrom_file(xml: str) -> str:
    """The medium of a CD-ROM `<disk>`'s XML; "" when it has none (ejected)."""
    disk = ET.fromstring(xml)
    if disk.tag != "disk" or disk.get("device") != "cdrom":
        raise ValueError(f"the fake attaches CD-ROMs only, not {xml!r}")
    source = disk.find("source")
    return source.get("file", "") if source is not None else ""
