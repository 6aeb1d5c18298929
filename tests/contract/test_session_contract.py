"""The Session contract: what every implementation does, pinned once, run against all of them.

The fake passes exactly this suite, so tests above mclu.hosts may trust it in place of libvirt.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from mclu import errors
from mclu.hosts.session import MigrationProgress, MigrationTarget, Terminal
from mclu.model import Address, AddressSource, GuestMeta, GuestState
from tests.contract.targets import GUEST_MEMORY, MISSING, Target

META = GuestMeta(
    template="tiny",
    revision="7",
    built="2024-05-01T10:00:00Z",
    state="building",
    options=(("memory", "32M"), ("note", "a <b> & 'c'")),
)


# --- facts and listing ------------------------------------------------------------------------


async def test_facts(target: Target) -> None:
    facts = await target.session.facts()
    assert facts.hostname
    assert facts.arch in ("x86_64", "i686", "aarch64")
    assert facts.cpus >= 1
    assert 0 < facts.memory_free <= facts.memory_total
    assert target.domain_type in facts.domain_types
    assert re.fullmatch(r"\d+\.\d+\.\d+", facts.libvirt_version)


async def test_facts_name_active_networks_and_bridges(target: Target) -> None:
    # The test driver's network "default" is active and it has no bridge; the fake copies it;
    # a sandbox host answers from its libvirtd and udev. Every one of them can say.
    facts = await target.session.facts()
    assert facts.networks is not None and list(facts.networks) == sorted(facts.networks)
    assert facts.bridges is not None and list(facts.bridges) == sorted(facts.bridges)
    assert "lo" not in facts.bridges


async def test_guests_of_a_known_host(target: Target) -> None:
    if not target.preloaded:
        pytest.skip("the sandbox host's other guests are not this test's to know")
    guests = sorted(await target.session.guests(), key=lambda g: g.name)
    assert guests == sorted(target.preloaded, key=lambda g: g.name)


async def test_running_guests_hold_memory(target: Target) -> None:
    if not target.preloaded:
        pytest.skip("the sandbox hosts share the machine's memory with everything else")
    facts = await target.session.facts()
    running = sum(g.memory for g in target.preloaded if g.state.active)
    assert facts.memory_total - facts.memory_free == running


# --- define and undefine ----------------------------------------------------------------------


async def test_define(target: Target) -> None:
    guest = await target.define()
    assert (guest.state, guest.persistent, guest.vcpus) == (GuestState.SHUTOFF, True, 1)
    assert (guest.memory, guest.max_memory, guest.disks, guest.mclu) == (
        GUEST_MEMORY,
        GUEST_MEMORY,
        (),
        None,
    )
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", guest.uuid)
    assert await target.guest(guest.name) == guest


async def test_define_a_taken_name(target: Target) -> None:
    guest = await target.define()
    with pytest.raises(errors.GuestExists) as raised:
        await target.session.define(target.domain_xml(guest.name))
    assert (raised.value.host, raised.value.name) == (target.session.host, guest.name)
    # With the same uuid libvirt itself would silently replace the definition.
    with pytest.raises(errors.GuestExists):
        await target.session.define(target.domain_xml(guest.name, uuid=guest.uuid))


async def test_define_refuses_xml_that_is_not_a_domain(target: Target) -> None:
    with pytest.raises(errors.LibvirtCallFailed):
        await target.session.define("<network><name>x</name></network>")


async def test_undefine_a_shut_off_guest(target: Target) -> None:
    guest = await target.define()
    await target.session.undefine(guest.name)
    assert await target.guest(guest.name) is None


async def test_undefine_a_running_guest_leaves_it_running_until_stopped(target: Target) -> None:
    guest = await target.define()
    await target.session.start(guest.name)
    await target.session.undefine(guest.name)
    transient = await target.guest(guest.name)
    assert transient is not None
    assert (transient.state, transient.persistent) == (GuestState.RUNNING, False)
    await target.session.destroy(guest.name)
    assert await target.guest(guest.name) is None


# --- start, shutdown, destroy -----------------------------------------------------------------


async def test_start_and_destroy(target: Target) -> None:
    guest = await target.define()
    await target.session.start(guest.name)
    assert await target.state_of(guest.name) == GuestState.RUNNING
    await target.session.destroy(guest.name)
    assert await target.state_of(guest.name) == GuestState.SHUTOFF


async def test_start_a_running_guest(target: Target) -> None:
    guest = await target.define()
    await target.session.start(guest.name)
    with pytest.raises(errors.LibvirtCallFailed) as raised:
        await target.session.start(guest.name)
    assert not isinstance(raised.value, errors.GuestInactive)  # refused, but not as "off"
    assert raised.value.what == f"start {guest.name}"
    assert raised.value.host == target.session.host


async def test_shutdown_asks_and_returns(target: Target) -> None:
    guest = await target.define()
    await target.session.start(guest.name)
    await target.session.shutdown(guest.name)
    # The test driver and the fake obey at once; a real guest with no OS to hear ACPI runs on.
    assert await target.state_of(guest.name) in (
        GuestState.RUNNING,
        GuestState.SHUTDOWN,
        GuestState.SHUTOFF,
    )


async def test_reboot_asks_and_returns(target: Target) -> None:
    guest = await target.define()
    await target.session.start(guest.name)
    await target.session.reboot(guest.name)
    # The test driver and the fake restart at once; a real guest with no OS to hear ACPI
    # runs on: running either way.
    assert await target.state_of(guest.name) == GuestState.RUNNING


@pytest.mark.parametrize("verb", ["shutdown", "reboot", "destroy"])
async def test_stopping_a_shut_off_guest(target: Target, verb: str) -> None:
    guest = await target.define()
    # GuestInactive, a LibvirtCallFailed of its own; libvirt's test driver alone refuses a
    # shutdown with an internal error ("domain 'x' not running"), not the code qemu's uses.
    expected: type[errors.LibvirtCallFailed] = (
        errors.LibvirtCallFailed
        if target.domain_type == "test" and verb == "shutdown"
        else errors.GuestInactive
    )
    with pytest.raises(expected) as raised:
        await getattr(target.session, verb)(guest.name)
    assert raised.value.what == f"{verb} {guest.name}"
    assert await target.state_of(guest.name) == GuestState.SHUTOFF


@pytest.mark.parametrize(
    "verb", ["start", "shutdown", "reboot", "destroy", "undefine", "set_metadata"]
)
async def test_missing_guest(target: Target, verb: str) -> None:
    name = target.new_name()
    call = getattr(target.session, verb)
    with pytest.raises(errors.GuestNotFound) as raised:
        await (call(name, META) if verb == "set_metadata" else call(name))
    assert (raised.value.name, raised.value.host) == (name, target.session.host)


# --- mclu's metadata --------------------------------------------------------------------------


async def test_metadata_given_at_define(target: Target) -> None:
    guest = await target.define(META)
    assert guest.mclu == META
    listed = await target.guest(guest.name)
    assert listed is not None
    assert listed.mclu == META


async def test_set_metadata_replaces_it(target: Target) -> None:
    guest = await target.define(GuestMeta(template="old"))
    await target.session.set_metadata(guest.name, META)
    listed = await target.guest(guest.name)
    assert listed is not None
    assert listed.mclu == META


async def test_set_metadata_of_a_running_guest_shows_now_and_after_it_stops(target: Target) -> None:
    guest = await target.define()
    await target.session.start(guest.name)
    await target.session.set_metadata(guest.name, META)
    running = await target.guest(guest.name)
    await target.session.destroy(guest.name)
    stopped = await target.guest(guest.name)
    assert running is not None
    assert stopped is not None
    assert (running.mclu, stopped.mclu) == (META, META)


async def test_autostart_is_off_until_set_and_shows_in_the_listing(target: Target) -> None:
    guest = await target.define()
    assert guest.autostart is False
    await target.session.set_autostart(guest.name, True)
    listed = await target.guest(guest.name)
    assert listed is not None and listed.autostart is True
    await target.session.set_autostart(guest.name, False)
    listed = await target.guest(guest.name)
    assert listed is not None and listed.autostart is False


async def test_autostart_of_a_missing_guest(target: Target) -> None:
    with pytest.raises(errors.GuestNotFound):
        await target.session.set_autostart(MISSING, True)


async def test_a_guest_without_an_agent_does_not_answer_a_ping(target: Target) -> None:
    guest = await target.define()
    await target.session.start(guest.name)
    try:
        answered = await target.session.agent_ping(guest.name, 1)
    except errors.Unsupported:
        pytest.skip("no guest agents on this connection (libvirt's test driver)")
    finally:
        await target.session.destroy(guest.name)
    assert answered is False  # nothing runs qemu-ga in the contract's guests
    assert await target.session.agent_ping(guest.name, 1) is False  # not running


# --- commands ---------------------------------------------------------------------------------


async def test_run(target: Target) -> None:
    if not target.has_shell:
        with pytest.raises(errors.Unsupported):
            await target.session.run(["uname", "-n"])
        return
    result = await target.session.run(["uname", "-n"])
    assert (result.exit_status, result.stdout, result.argv) == (
        0,
        f"{target.session.host}\n".encode(),
        ("uname", "-n"),
    )


async def test_run_failing_command(target: Target) -> None:
    if not target.has_shell:
        pytest.skip("no shell on this session")
    argv = ["sh", "-c", "echo one >&2; echo two >&2; exit 3"]
    with pytest.raises(errors.HostCommandFailed) as raised:
        await target.session.run(argv)
    failed = raised.value
    assert (failed.host, failed.exit_status, failed.stderr) == (target.session.host, 3, "one / two")
    assert failed.command == "sh -c 'echo one >&2; echo two >&2; exit 3'"
    unchecked = await target.session.run(argv, check=False)
    assert (unchecked.exit_status, unchecked.stderr) == (3, b"one\ntwo\n")


async def test_run_with_input(target: Target) -> None:
    if not target.has_shell:
        pytest.skip("no shell on this session")
    result = await target.session.run(["cat"], input=b"hello")
    assert result.stdout == b"hello"


# --- closing ----------------------------------------------------------------------------------


async def test_close_is_idempotent_and_final(target: Target) -> None:
    await target.session.close()
    await target.session.close()
    with pytest.raises(errors.HostError):
        await target.session.guests()
    target.defined.clear()  # nothing defined, and the session can no longer clean up


# --- streamed input, missing programs, background commands, forwarded sockets ----------------


async def _chunks(*parts: bytes, then: BaseException | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if then is not None:
        raise then


async def test_run_with_streamed_input(target: Target) -> None:
    if not target.has_shell:
        with pytest.raises(errors.Unsupported):
            await target.session.run(["cat"], input=_chunks(b"he", b"llo"))
        return
    result = await target.session.run(["cat"], input=_chunks(b"he", b"llo"))
    assert result.stdout == b"hello"


async def test_an_error_of_the_streamed_input_propagates(target: Target) -> None:
    if not target.has_shell:
        pytest.skip("no shell on this session")
    with pytest.raises(OSError, match="source went away"):
        await target.session.run(["cat"], input=_chunks(b"he", then=OSError("source went away")))
    assert (await target.session.run(["uname", "-n"])).exit_status == 0  # the session lives on


async def test_a_missing_program(target: Target) -> None:
    if not target.has_shell:
        pytest.skip("no shell on this session")
    with pytest.raises(errors.ToolMissing) as raised:
        await target.session.run([MISSING])
    assert (raised.value.host, raised.value.tool, raised.value.exit_status) == (
        target.session.host,
        MISSING,
        127,
    )
    assert isinstance(raised.value, errors.HostCommandFailed)


def _sleeper() -> list[str]:
    """A command unique to the test, so that it can be found among the host's processes."""
    return ["sleep", f"3600.{uuid.uuid4().int % 10**9:09d}"]


async def test_background_runs_for_the_block(target: Target) -> None:
    argv = _sleeper()
    if not target.has_shell:
        with pytest.raises(errors.Unsupported):
            async with target.session.background(argv):
                pass
        return
    async with target.session.background(argv) as running:
        assert running.argv == tuple(argv)
        await _until(lambda: target.is_running(argv))
        assert running.result() is None
        running.check()
    assert not await target.is_running(argv)
    result = running.result()
    assert result is not None
    running.check()  # stopped by the block: not a failure


@pytest.mark.parametrize("how", ["error", "cancel"])
async def test_background_stops_when_the_block_fails(target: Target, how: str) -> None:
    if not target.has_shell:
        pytest.skip("no shell on this session")
    argv = _sleeper()
    started = asyncio.Event()

    async def hold() -> None:
        async with target.session.background(argv):
            await _until(lambda: target.is_running(argv))
            started.set()
            if how == "error":
                raise RuntimeError("the block failed")
            await asyncio.sleep(3600)

    task = asyncio.create_task(hold())
    if how == "cancel":
        await started.wait()
        task.cancel()
    with pytest.raises(RuntimeError if how == "error" else asyncio.CancelledError):
        await task
    assert started.is_set()
    assert not await target.is_running(argv)


async def test_background_command_that_fails(target: Target) -> None:
    if not target.has_shell:
        pytest.skip("no shell on this session")
    argv = ["sh", "-c", "echo one >&2; echo two >&2; exit 3"]
    async with target.session.background(argv) as running:
        await _until(lambda: _true(running.result() is not None))
        with pytest.raises(errors.HostCommandFailed) as raised:
            running.check()
    assert (raised.value.host, raised.value.exit_status, raised.value.stderr) == (
        target.session.host,
        3,
        "one / two",
    )


async def test_background_of_a_missing_program(target: Target) -> None:
    if not target.has_shell:
        pytest.skip("no shell on this session")
    async with target.session.background([MISSING]) as running:
        await _until(lambda: _true(running.result() is not None))
        with pytest.raises(errors.ToolMissing) as raised:
            running.check()
    assert (raised.value.host, raised.value.tool) == (target.session.host, MISSING)


async def test_forward_socket(target: Target) -> None:
    remote = "/var/run/libvirt/libvirt-sock-ro"
    if target.fake_host is not None or not target.has_shell:
        with pytest.raises(errors.Unsupported):
            async with target.session.forward_socket(remote):
                pass
        return
    async with target.session.forward_socket(remote) as local:
        assert stat.S_ISSOCK(os.stat(local).st_mode)
        _reader, writer = await asyncio.open_unix_connection(local)
        writer.close()
        await writer.wait_closed()
    assert not os.path.exists(local)


async def _true(value: bool) -> bool:
    return value


async def _until(condition: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Wait until condition() holds (a remote process takes a moment to start or end)."""
    async with asyncio.timeout(seconds):
        while not await condition():
            await asyncio.sleep(0.02)


# --- interactive terminals --------------------------------------------------------------------


async def _read_until(terminal: Terminal, text: bytes, seconds: float = 10.0) -> bytes:
    """The terminal's output up to and including `text` (a pty echoes and adds CRs)."""
    seen = b""
    async with asyncio.timeout(seconds):
        while text not in seen:
            chunk = await terminal.read()
            assert chunk, f"the command ended; it printed {seen!r}"
            seen += chunk
    return seen


async def test_open_terminal(target: Target) -> None:
    argv = [
        "sh",
        "-c",
        'echo "$TERM $(stty size)"; read line; echo "got $line"; read line; stty size; exit 7',
    ]
    if target.fake_host is not None or not target.has_shell:
        with pytest.raises(errors.Unsupported):
            async with target.session.open_terminal(argv, term="vt100", size=(100, 30)):
                pass
        return
    async with target.session.open_terminal(argv, term="vt100", size=(100, 30)) as terminal:
        assert b"vt100 30 100" in await _read_until(terminal, b"30 100")
        terminal.write(b"hello\r")
        assert b"got hello" in await _read_until(terminal, b"got hello")
        terminal.resize(120, 40)
        terminal.write(b"\r")
        await _read_until(terminal, b"40 120")
        while await terminal.read():  # to its end
            pass
    assert terminal.exit_status() == 7


async def test_leaving_a_terminal_block_ends_the_command(target: Target) -> None:
    if target.fake_host is not None or not target.has_shell:
        pytest.skip("no terminals on this session")
    argv = _sleeper()
    async with target.session.open_terminal(argv, term="vt100", size=(80, 24)):
        await _until(lambda: target.is_running(argv))
    await _until(lambda: _not(target.is_running(argv)))


async def _not(condition: Awaitable[bool]) -> bool:
    return not await condition


# --- migration (moving a guest between two hosts: tests/contract/test_fake_cluster.py and
# tests/integration/test_migrate.py) ----------------------------------------------------------

NOWHERE = MigrationTarget(host="nowhere", uri="qemu+ssh://root@127.0.0.1:1/system")


async def test_migrate_a_missing_guest(target: Target) -> None:
    name = target.new_name()
    with pytest.raises(errors.GuestNotFound) as raised:
        await target.session.migrate(name, NOWHERE)
    assert (raised.value.name, raised.value.host) == (name, target.session.host)


async def test_migrate_a_shut_off_guest(target: Target) -> None:
    guest = await target.define()
    with pytest.raises(errors.GuestInactive) as raised:
        await target.session.migrate(guest.name, NOWHERE)
    assert raised.value.what == f"migrate {guest.name}"
    assert "not running" in raised.value.reason
    assert await target.state_of(guest.name) == GuestState.SHUTOFF


async def test_a_failed_migration_leaves_the_guest_running_here(target: Target) -> None:
    guest = await target.define()
    await target.session.start(guest.name)
    seen: list[MigrationProgress] = []
    expected: type[errors.HostError] = (
        errors.Unsupported if target.domain_type == "test" else errors.LibvirtCallFailed
    )
    with pytest.raises(expected) as raised:
        await target.session.migrate(guest.name, NOWHERE, progress=seen.append, timeout=60)
    assert raised.value.host == target.session.host
    listed = await target.guest(guest.name)
    assert listed is not None
    assert (listed.state, listed.persistent) == (GuestState.RUNNING, True)


# --- locks ------------------------------------------------------------------------------------


def _lock_path() -> str:
    return f"/tmp/mclu-contract-{uuid.uuid4().hex[:8]}/guest.lock"


async def test_a_held_lock_refuses_another_session_and_names_its_holder(target: Target) -> None:
    assert target.reopen is not None
    path = _lock_path()
    async with target.session.lock(path, "run one"), target.reopen() as other:
        with pytest.raises(errors.LockHeld) as raised:
            async with other.lock(path, "run two"):
                pytest.fail("two sessions held one lock")
        assert (raised.value.host, raised.value.path, raised.value.holder) == (
            target.session.host,
            path,
            "run one",
        )
        assert raised.value.exit_code == errors.EXIT_LOCKED


async def test_a_released_lock_can_be_taken_again(target: Target) -> None:
    assert target.reopen is not None
    path = _lock_path()
    async with target.session.lock(path, "run one"):
        pass
    async with target.reopen() as other, other.lock(path, "run two"):
        with pytest.raises(errors.LockHeld) as raised:
            async with target.session.lock(path, "run three"):
                pytest.fail("the lock was taken twice")
        assert raised.value.holder == "run two"


async def test_a_lock_is_released_when_its_block_fails(target: Target) -> None:
    path = _lock_path()
    with pytest.raises(RuntimeError):
        async with target.session.lock(path, "run one"):
            raise RuntimeError("the work failed")
    async with target.session.lock(path, "run two"):
        pass


async def test_locks_on_different_paths_are_independent(target: Target) -> None:
    async with target.session.lock(_lock_path(), "a"), target.session.lock(_lock_path(), "b"):
        pass


async def test_a_lock_dies_with_its_session(target: Target) -> None:
    assert target.reopen is not None
    path = _lock_path()
    async with target.reopen() as first:
        holding = first.lock(path, "a killed run")
        await holding.__aenter__()
        await first.close()  # the connection ends without the block ending: a killed mclu
    async with target.session.lock(path, "the next run"):
        pass


# --- addresses --------------------------------------------------------------------------------

ADDRESS_SOURCES = list(AddressSource)


@pytest.mark.parametrize("source", ADDRESS_SOURCES)
async def test_addresses_of_a_missing_guest(target: Target, source: AddressSource) -> None:
    with pytest.raises(errors.GuestNotFound):
        await target.session.addresses(MISSING, source)


@pytest.mark.parametrize("source", ADDRESS_SOURCES)
async def test_a_shut_off_guest_has_no_address(target: Target, source: AddressSource) -> None:
    guest = await target.define()
    assert await target.session.addresses(guest.name, source) == ()


async def test_a_running_guest_without_a_nic_or_agent_has_no_address(target: Target) -> None:
    guest = await target.define()
    await target.session.start(guest.name)
    try:
        assert await target.session.addresses(guest.name, AddressSource.LEASE) == ()
        assert await target.session.addresses(guest.name, AddressSource.ARP) == ()
        try:  # no agent: nothing, at once (libvirt's agent timeout is set short)
            assert await target.session.addresses(guest.name, AddressSource.AGENT) == ()
        except errors.Unsupported:
            assert target.domain_type == "test"  # libvirt's test driver has no agents
    finally:
        await target.session.destroy(guest.name)


async def test_addresses_name_their_source_and_the_nic_mac(target: Target) -> None:
    if target.domain_type not in ("test",) and target.fake_host is None:
        pytest.skip("a real host's guest gets an address from a real DHCP server (integration)")
    name, mac = target.new_name(), "52:54:00:aa:bb:01"
    nic = f"<devices><interface type='bridge'><mac address='{mac}'/><source bridge='br0'/>"
    xml = target.domain_xml(name).replace("</domain>", f"{nic}</interface></devices></domain>")
    await target.session.define(xml)
    await target.session.start(name)
    if target.fake_host is not None:  # what the test driver answers for any source
        target.fake_host.addresses[name] = (
            Address("192.168.0.1", 4, AddressSource.LEASE, mac, 24),
        )
    found = await target.session.addresses(name, AddressSource.LEASE)
    assert [(a.ip, a.family, a.source, a.mac) for a in found] == [
        ("192.168.0.1", 4, AddressSource.LEASE, mac)
    ]
    await target.session.destroy(name)
    assert await target.session.addresses(name, AddressSource.LEASE) == ()


async def test_the_leases_of_a_network_the_host_lacks_are_none(target: Target) -> None:
    assert await target.session.network_leases("mclu-contract-no-such-network") == ()


async def test_a_networks_leases_are_read_in_one_call_or_unsupported(target: Target) -> None:
    # Every session answers for a network it has: its leases (source LEASE, each with the
    # leasing NIC's MAC), or Unsupported (libvirt's test driver cannot read leases).
    facts = await target.session.facts()
    if not facts.networks:
        pytest.skip("no active libvirt network on this host")
    try:
        leases = await target.session.network_leases(facts.networks[0])
    except errors.Unsupported:
        assert target.domain_type == "test"
        return
    assert all(a.source == AddressSource.LEASE and a.mac for a in leases)
