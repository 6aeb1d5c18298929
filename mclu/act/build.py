"""Carry out a build plan: define, base images to hosts, guest disks, personalisation, start.

Every step that makes something registers how to unmake it; a failure or a cancellation
(Ctrl-C, SIGTERM) anywhere unmakes, newest first, everything this build made: guest disks,
domains, partial cache files, NBD servers and forwarded sockets (the last two are owned
by context managers). A base image that arrived whole stays in the host's cache: it is
correct and the next build will want it. The plan is not revisited: if the world changed
since the snapshot, the failing step says so and the user runs the command again.

Killed outright (SIGKILL, a crash) no undo runs, so each guest is defined first, with mclu's
metadata state "building", and every partial file carries its guest's name: what is left is
marked, the guest's lock (`mclu.act.locks`) dies with the connection, and `mclu cleanup` knows
it for a leftover. qemu-nbd and its socket directory end with the connection too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import logging
import posixpath
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Protocol

from mclu import errors, hostpaths, images, model
from mclu.act import waiting
from mclu.cancellation import uninterrupted
from mclu.decide import build as plan
from mclu.decide import cloudinit, domxml, readiness
from mclu.hosts import commands
from mclu.hosts.session import Session
from mclu.images import cache, customize, nbd, seed
from mclu.read import addresses as guest_addresses

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Where a build says what it is doing; the CLI draws bars, prints lines or JSON."""

    def step(self, host: str | None, guest: str | None, text: str) -> None: ...

    def transfer(self, key: str, done: int, total: int) -> None: ...


@dataclass(frozen=True)
class Inputs:
    """What personalises every guest of a build, from the command line."""

    ssh_authorized_keys: tuple[str, ...] = ()
    root_password_file: str | None = None
    # The user's own cloud-config (--user-data, checked), merged into a cloud-init seed.
    user_data: Mapping[str, Any] = field(default_factory=dict)


READY_STEP = "ready"  # the step that waits for a started guest to be ready


@dataclass(frozen=True)
class Readiness:
    """Whether and how long a command waits for its new guests to be ready."""

    wait: bool = True  # False: done once QEMU started (state "ready", unchecked)
    timeout: float | None = None  # seconds; None: the template's, else readiness's default
    keep_failed: bool = False  # a guest not ready in time is kept for a look, not undone
    autostart: bool = True  # the guests start with their host


@dataclass(frozen=True)
class Built:
    name: str
    host: str
    seconds: float
    ready: str = ""  # the readiness rule it passed; "" when not waited for


class Undo:
    """Undo actions of the steps done so far, run newest first when the build fails."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    def push(self, what: str, action: Callable[[], Awaitable[None]]) -> None:
        self._actions.append((what, action))

    async def run(self, reporter: Reporter) -> list[str]:
        """Undo everything, newest first; returns what could not be undone."""
        failed = []
        while self._actions:
            what, action = self._actions.pop()
            try:
                await action()
            except (errors.MCLUError, OSError) as e:  # keep undoing the rest
                failed.append(what)
                # Saying so must not stop the undo: after a hangup the terminal's writes fail
                # (EIO) until the SIGHUP handler has sent the output to /dev/null.
                with contextlib.suppress(OSError):
                    reporter.step(None, None, f"cleanup: could not {what}: {e}")
        return failed


def now() -> str:
    """The build time recorded in the guests' metadata: UTC, seconds, ISO 8601."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def execute(
    build: plan.BuildPlan,
    local: cache.LocalBase | None,
    sessions: Mapping[str, Session],
    inputs: Inputs,
    reporter: Reporter,
    wanted: Readiness = Readiness(),
) -> list[Built]:
    """Make every guest of the plan run and, unless told not to wait, become ready; all or
    nothing (with `keep_failed`, guests that did not become ready stay for a look). `local`:
    the base in the controller's cache, None when every host of the plan holds it."""
    started = time.monotonic()
    undo = Undo()
    try:
        await _each_host(
            build,
            lambda host, guests: _prepare_host(
                sessions[host], guests, build.transport, local, undo, reporter
            ),
        )
        if any(g.seed_path for g in build.guests):
            traits = await _write_seeds(build, sessions, inputs, reporter, undo)
        else:
            traits = await _personalize(build, sessions, inputs, reporter)
        # From here on every record of a guest carries its host keys and its ssh server.
        build = dataclasses.replace(
            build,
            guests=tuple(
                plan.with_traits(g, traits[g.name]) if g.name in traits else g for g in build.guests
            ),
        )
        # A template may keep its guests from starting with their host; so may the user.
        options = dataclasses.replace(
            wanted, autostart=wanted.autostart and build.template.autostart
        )
        await _each_host(
            build, lambda host, guests: _start(sessions[host], guests, options, reporter)
        )
        if not wanted.wait:
            return [Built(g.name, g.host, time.monotonic() - started) for g in build.guests]
        rules = {g.name: ready_rules(build.template, g, traits.get(g.name)) for g in build.guests}
        timeout = readiness.timeout_for(build.template, wanted.timeout)
        await _each_guest(
            build,
            lambda guest: _until_ready(
                sessions[guest.host], guest, rules[guest.name], timeout, reporter
            ),
        )
    except errors.BuildFailed as e:
        if wanted.keep_failed and e.step == READY_STEP:
            raise errors.BuildFailed(
                guest=e.guest,
                step=e.step,
                host=e.host,
                reason=(
                    f"{e.reason}; kept for a look, as asked (mclu delete {e.guest} removes it)"
                ),
            ) from e
        failed = await uninterrupted(undo.run(reporter))
        if failed:  # a host that stopped answering: what it holds is marked, say how it goes
            raise errors.BuildFailed(
                guest=e.guest,
                step=e.step,
                host=e.host,
                reason=(
                    f"{e.reason}; not undone: {'; '.join(failed)} (mclu cleanup removes it "
                    "once the host answers)"
                ),
            ) from e
        raise
    except BaseException:
        # Cancellation included: shielded so a second Ctrl-C cannot leave half the cleanup.
        await uninterrupted(undo.run(reporter))
        raise
    seconds = time.monotonic() - started
    return [Built(g.name, g.host, seconds, str(rules[g.name][-1])) for g in build.guests]


def ready_rules(
    template: model.ResolvedTemplate, guest: plan.GuestPlan, traits: model.GuestTraits | None
) -> tuple[readiness.Rule, ...]:
    """What the new guest must show, in order: cloud-init finished (then the template's own
    rule, if any) for a guest given a seed; else the template's rule or the strongest its
    disk supports."""
    if guest.seed_path:
        return cloudinit.rules(template.ready)
    return (readiness.choose(template.ready, traits, (guest.spec.network,)).rule,)


def by_host(build: plan.BuildPlan) -> dict[str, list[plan.GuestPlan]]:
    hosts: dict[str, list[plan.GuestPlan]] = {}
    for guest in build.guests:
        hosts.setdefault(guest.host, []).append(guest)
    return hosts


async def _each_host(
    build: plan.BuildPlan, work: Callable[[str, list[plan.GuestPlan]], Coroutine[Any, Any, None]]
) -> None:
    """`work` on every host of the plan at once; the first failure cancels the others."""
    await _at_once(work(host, guests) for host, guests in by_host(build).items())


async def _each_guest(
    build: plan.BuildPlan, work: Callable[[plan.GuestPlan], Coroutine[Any, Any, None]]
) -> None:
    """`work` for every guest of the plan at once; the first failure cancels the others."""
    await _at_once(work(guest) for guest in build.guests)


async def _at_once(works: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the coroutines as tasks of one group; the first failure cancels the others and is
    raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for work in works:
                group.create_task(work)
    except BaseExceptionGroup as failed:
        # The first failure is the reason; the others' are its consequences or the same.
        raise failed.exceptions[0] from None


# --- step 1: the base image and the guests' disks ---------------------------------------------


async def _prepare_host(
    session: Session,
    guests: list[plan.GuestPlan],
    transport: str,
    local: cache.LocalBase | None,
    undo: Undo,
    reporter: Reporter,
) -> None:
    """Define each guest (marked "building"), send the base, make each guest's disk.

    The definitions come first so that whatever this build leaves if it is killed outright
    (SIGKILL, a crash: no undo runs) is marked: a guest in state "building" whose lock no run
    holds, its disk, and partial files named after it (`mclu cleanup` removes them).
    """
    for guest in guests:
        reporter.step(session.host, guest.name, "defining")
        await _step(session.host, guest.name, "define", _define(session, guest, undo))
    first = guests[0]
    if any(g.send_bytes for g in guests):
        if local is None:
            raise ValueError(f"{session.host} lacks the base, and none was fetched")
        reporter.step(session.host, None, f"sending {first.base.cache_name} ({transport})")
        await _step(
            session.host,
            first.name,
            "send template",
            _send_base(session, first, transport, local, reporter),
        )
    for guest in guests:
        reporter.step(session.host, guest.name, "creating disk")
        await _step(session.host, guest.name, "create disk", _create_disk(session, guest, undo))


async def _send_base(
    session: Session,
    guest: plan.GuestPlan,
    transport: str,
    local: cache.LocalBase,
    reporter: Reporter,
) -> None:
    # 0711: qemu's user may reach a base it is given, no one else may list the cache.
    await session.run(commands.make_directory(posixpath.dirname(guest.base_path), "0711"))
    key = f"{session.host}:{guest.base.cache_name}"

    def progress(done: int) -> None:
        reporter.transfer(key, done, local.size)

    # The partial file is named after the guest: its lock covers it (mclu cleanup).
    await images.send_atomically(
        images.get(transport),
        session,
        local.path,
        guest.base_path,
        local.size,
        progress=progress,
        owner=guest.name,
    )


async def _create_disk(session: Session, guest: plan.GuestPlan, undo: Undo) -> None:
    """The guest's disk, made under a temporary name and linked into place.

    `ln` refuses to replace an existing file, so a disk of the same name (another build, a
    pet's disk) is never overwritten, even by a build that raced this one.
    """
    temp = hostpaths.new_file(guest.disk_path)
    if guest.spec.disk_format == "qcow2":
        argv = commands.image_create(temp, "qcow2", guest.disk_size, guest.base_path, "raw")
    else:
        argv = commands.sparse_copy(guest.base_path, temp, guest.disk_size)
    try:
        # Not interrupted: a command cancelled here runs on, on the host, and would make its
        # file after the `rm` below (a full copy's `cp` takes seconds; an overlay, none).
        await uninterrupted(session.run(argv))
        # Private before personalisation writes root's password hash and host keys into it.
        await session.run(commands.make_private(temp))
        await uninterrupted(_link(session, temp, guest, undo))
    finally:
        await session.run(commands.remove(temp), check=False)


async def _link(session: Session, temp: str, guest: plan.GuestPlan, undo: Undo) -> None:
    """The disk in place, and its undo registered: never one without the other."""
    await session.run(commands.link(temp, guest.disk_path))
    undo.push(
        f"remove {guest.disk_path} on {session.host}",
        functools.partial(remove_file, session, guest.disk_path),
    )


async def remove_file(session: Session, path: str) -> None:
    """Delete the file `path` on the host (none there is no error): an undo step."""
    await session.run(commands.remove(path))


# --- step 2: personalisation, every guest in one libguestfs launch ----------------------------


async def _personalize(
    build: plan.BuildPlan, sessions: Mapping[str, Session], inputs: Inputs, reporter: Reporter
) -> dict[str, model.GuestTraits]:
    """Every guest's disk in one appliance; what each guest supports to show it booted."""
    reporter.step(None, None, f"personalising {len(build.guests)} guest(s)")
    async with contextlib.AsyncExitStack() as stack:
        drives = []
        for guest in build.guests:
            socket = await stack.enter_async_context(_nbd_export(sessions[guest.host], guest))
            drives.append(
                (
                    customize.Drive(nbd_socket=socket),
                    _personalization(guest, build.template, inputs),
                )
            )

        def say(text: str) -> None:
            reporter.step(None, None, text)

        try:
            traits = await personalize_in_thread(drives, say)
        except errors.PersonalizationFailed as e:
            raise errors.BuildFailed(
                guest=e.guest, step="personalise", host=_host_of(build, e.guest), reason=str(e)
            ) from e
    return {g.name: t for g, t in zip(build.guests, traits, strict=True)}


async def personalize_in_thread(
    drives: Sequence[tuple[customize.Drive, customize.Personalization]],
    progress: customize.Progress,
) -> list[model.GuestTraits]:
    """`customize.personalize` on a worker thread. A cancelled build kills the appliance:
    the thread cannot be cancelled, and would otherwise hold the exit until the appliance
    noticed its disks were gone."""
    watchdog = customize.Watchdog()
    try:
        return await asyncio.to_thread(
            customize.personalize, drives, progress=progress, watchdog=watchdog
        )
    except asyncio.CancelledError:
        watchdog.kill("the build was interrupted")
        raise


# --- step 2, cloud-init: a NoCloud seed per guest instead of the appliance ---------------------


async def _write_seeds(
    build: plan.BuildPlan,
    sessions: Mapping[str, Session],
    inputs: Inputs,
    reporter: Reporter,
    undo: Undo,
) -> dict[str, model.GuestTraits]:
    """Every guest's seed made here and put beside its disk, all at once."""
    traits: dict[str, model.GuestTraits] = {}

    async def one(guest: plan.GuestPlan) -> None:
        session = sessions[guest.host]

        def say(text: str) -> None:
            reporter.step(session.host, guest.name, text)

        async def made() -> None:
            traits[guest.name] = await write_seed(session, guest, build.template, inputs, undo, say)

        await _step(session.host, guest.name, "personalise", made())

    await _each_guest(build, one)
    return traits


async def write_seed(
    session: Session,
    guest: plan.GuestPlan,
    template: model.ResolvedTemplate,
    inputs: Inputs,
    undo: Undo,
    say: Callable[[str], None],
) -> model.GuestTraits:
    """The guest's NoCloud seed (new host keys, root's keys and password, the template's
    packages, files and commands, the user's cloud-config) made here and written to its host
    as a new private file at `guest.seed_path`, its removal registered in `undo`. Returns the
    host keys it gives the guest, as personalisation's traits.

    Raises PersonalizationFailed (keys, password), or the host's error writing it.
    """
    assert guest.seed_path is not None
    say("writing its cloud-init seed")
    data, keys = await asyncio.to_thread(_seed_iso, guest, template, inputs)
    await uninterrupted(put_private_file(session, guest.seed_path, data, undo))
    return model.GuestTraits(host_keys=cloudinit.public_host_keys(keys))


def _seed_iso(
    guest: plan.GuestPlan, template: model.ResolvedTemplate, inputs: Inputs
) -> tuple[bytes, tuple[cloudinit.HostKey, ...]]:
    keys = seed.host_keys(guest.name)
    password = inputs.root_password_file
    made = cloudinit.Seed(
        hostname=guest.name,
        # New for every disk, so cloud-init applies the seed to it (a rebuild's new disk too).
        instance_id=str(uuid.uuid4()),
        authorized_keys=inputs.ssh_authorized_keys,
        password_hash=seed.password_hash(password, guest.name) if password else None,
        host_keys=keys,
        customization=template.customization,
        user_data=inputs.user_data,
    )
    return seed.iso_bytes(made), keys


async def put_private_file(session: Session, path: str, data: bytes, undo: Undo) -> None:
    """A new file only its owner may read (a seed: it holds private host keys) on the host,
    and its removal registered: never one without the other (run it uninterrupted). An
    existing file of its name is refused, never replaced."""
    await session.run(commands.write_new_file(path), input=data)
    undo.push(f"remove {path} on {session.host}", functools.partial(remove_file, session, path))


async def drop_seed(session: Session, guest: plan.GuestPlan) -> None:
    """The guest's seed out: its medium ejected (the running guest keeps an empty drive until
    it stops: SATA cannot be unplugged live), the drive out of its definition, the file gone."""
    assert guest.seed_path is not None
    await remove_seed(session, guest.name, guest.seed_path)


async def remove_seed(session: Session, name: str, path: str) -> None:
    """`drop_seed` for guest `name` whose seed is at `path`."""
    await session.update_device(name, domxml.cdrom(None))
    await session.detach_device(name, domxml.cdrom(None))
    await session.run(commands.remove(path))


def _host_of(build: plan.BuildPlan, name: str) -> str:
    return next((g.host for g in build.guests if g.name == name), "controller")


def _personalization(
    guest: plan.GuestPlan, template: model.ResolvedTemplate, inputs: Inputs
) -> customize.Personalization:
    grow = template.base.expand if guest.disk_size > template.base.size else None
    return customize.Personalization(
        hostname=guest.name,
        ssh_authorized_keys=inputs.ssh_authorized_keys,
        root_password_file=inputs.root_password_file,
        grow_partition=grow,
        customization=template.customization,
    )


@contextlib.asynccontextmanager
async def _nbd_export(session: Session, guest: plan.GuestPlan) -> AsyncIterator[str]:
    """The guest's disk served by qemu-nbd on its host, as a local unix socket."""
    options = [
        "--format",
        guest.spec.disk_format,
        "--cache=unsafe",
        "--discard=unmap",
        "--shared=1",
    ]
    async with nbd.serve(session, guest.disk_path, options, owner=guest.name) as served:
        yield served.socket


# --- define (first of all) and start (last) ---------------------------------------------------


async def _define(session: Session, guest: plan.GuestPlan, undo: Undo) -> None:
    """The guest defined, shut off, its metadata state "building"; its disk need not exist yet.

    Not interrupted half-way: a definition made while Ctrl-C arrives still gets its undo.
    """
    assert guest.spec.meta.state == model.BuildState.BUILDING

    async def define() -> None:
        await session.define(domxml.render(guest.spec))
        undo.push(
            f"undefine {guest.name} on {session.host}",
            functools.partial(_undefine, session, guest.name),
        )

    await uninterrupted(define())


async def _start(
    session: Session, guests: list[plan.GuestPlan], options: Readiness, reporter: Reporter
) -> None:
    """Start each guest, marked "started" (or "ready", unchecked, when not waiting for it)."""
    for guest in guests:
        reporter.step(session.host, guest.name, "starting")
        await _step(session.host, guest.name, "start", session.start(guest.name))
        if options.autostart:
            await _step(
                session.host, guest.name, "autostart", session.set_autostart(guest.name, True)
            )
        state = model.BuildState.STARTED if options.wait else model.BuildState.READY
        meta = dataclasses.replace(guest.spec.meta, state=state)
        await _step(session.host, guest.name, "record", session.set_metadata(guest.name, meta))


async def _until_ready(
    session: Session,
    guest: plan.GuestPlan,
    rules: Sequence[readiness.Rule],
    timeout: float,
    reporter: Reporter,
) -> None:
    """Wait for the guest to be ready by each rule in turn, take its seed out (cloud-init is
    done with it), then record it ready; a NotReady fails the build. `timeout` bounds the
    whole wait, every rule's included."""
    deadline = time.monotonic() + timeout
    for rule in rules:
        reporter.step(session.host, guest.name, f"waiting until ready ({rule.describe()})")
        left = timeout if rule is rules[0] else max(deadline - time.monotonic(), 0.0)
        await _step(
            session.host,
            guest.name,
            READY_STEP,
            waiting.wait(session, guest.name, rule, left, host_keys=guest.spec.meta.host_keys),
        )
    if guest.seed_path:
        # Before "ready" is recorded: a guest recorded ready has no seed (`mclu cleanup`), and
        # libvirt's storage migration would not carry a CD-ROM's medium.
        reporter.step(session.host, guest.name, "removing its cloud-init seed")
        await _step(session.host, guest.name, "remove seed", drop_seed(session, guest))
    rule = rules[-1]
    # Its addresses as they are now, recorded (source "ready" in list and info); a bounded
    # read that never fails the build.
    known = await guest_addresses.of_running(session, guest.name)
    meta = dataclasses.replace(
        guest.spec.meta,
        state=model.BuildState.READY,
        ready=str(rule),
        addresses=tuple(a.ip for a in known),
    )
    await _step(session.host, guest.name, "record", session.set_metadata(guest.name, meta))


async def _undefine(session: Session, name: str) -> None:
    with contextlib.suppress(errors.GuestInactive):  # not running: nothing to destroy
        await session.destroy(name)
    await session.undefine(name)


async def _step(host: str, guest: str, step: str, work: Awaitable[object]) -> None:
    """Run one step; a host's failure becomes a BuildFailed naming the step, host and guest."""
    try:
        await work
    except errors.BuildFailed:
        raise
    except errors.MCLUError as e:
        raise errors.BuildFailed(guest=guest, step=step, host=host, reason=str(e)) from e


# --- the steps other commands reuse (mclu rebuild makes a guest's new disk with them) ----------

send_base = _send_base
create_disk = _create_disk
nbd_export = _nbd_export
personalization = _personalization
