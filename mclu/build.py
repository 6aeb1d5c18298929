"""Carry out a build plan: base images to hosts, guest disks, personalisation, define, start.

Every step that makes something registers how to unmake it; a failure or a cancellation
(Ctrl-C, SIGTERM) anywhere unmakes, newest first, everything this build made: domains,
guest disks, partial cache files, NBD servers and forwarded sockets (the last two are owned
by context managers). A base image that arrived whole stays in the host's cache: it is
correct and the next build will want it. The plan is not revisited: if the world changed
since the snapshot, the failing step says so and the user runs the command again.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mclu import domxml, errors, images, model, plan
from mclu.hosts.session import Session
from mclu.images import cache, customize

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


@dataclass(frozen=True)
class Built:
    name: str
    host: str
    seconds: float


class Undo:
    """Undo actions of the steps done so far, run newest first when the build fails."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    def push(self, what: str, action: Callable[[], Awaitable[None]]) -> None:
        self._actions.append((what, action))

    async def run(self, reporter: Reporter) -> None:
        while self._actions:
            what, action = self._actions.pop()
            try:
                await action()
            except (errors.MCLUError, OSError) as e:  # keep undoing the rest
                reporter.step(None, None, f"cleanup: could not {what}: {e}")


def now() -> str:
    """The build time recorded in the guests' metadata: UTC, seconds, ISO 8601."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def execute(build: plan.BuildPlan, local: cache.LocalBase, sessions: Mapping[str, Session],
                  inputs: Inputs, reporter: Reporter) -> list[Built]:
    """Make every guest of the plan run; all or nothing."""
    started = time.monotonic()
    undo = Undo()
    try:
        await _each_host(build, lambda host, guests: _prepare_host(
            sessions[host], guests, build.transport, local, undo, reporter))
        await _personalize(build, sessions, inputs, reporter)
        await _each_host(build, lambda host, guests: _define_and_start(
            sessions[host], guests, undo, reporter))
    except BaseException:
        # Cancellation included: shielded so a second Ctrl-C cannot leave half the cleanup.
        await asyncio.shield(undo.run(reporter))
        raise
    seconds = time.monotonic() - started
    return [Built(g.name, g.host, seconds) for g in build.guests]


def by_host(build: plan.BuildPlan) -> dict[str, list[plan.GuestPlan]]:
    hosts: dict[str, list[plan.GuestPlan]] = {}
    for guest in build.guests:
        hosts.setdefault(guest.host, []).append(guest)
    return hosts


async def _each_host(build: plan.BuildPlan,
                     work: Callable[[str, list[plan.GuestPlan]], Coroutine[Any, Any, None]]
                     ) -> None:
    """`work` on every host of the plan at once; the first failure cancels the others."""
    try:
        async with asyncio.TaskGroup() as group:
            for host, guests in by_host(build).items():
                group.create_task(work(host, guests))
    except BaseExceptionGroup as failed:
        # The first failure is the reason; the others' are its consequences or the same.
        raise failed.exceptions[0] from None


# --- step 1: the base image and the guests' disks ---------------------------------------------


async def _prepare_host(session: Session, guests: list[plan.GuestPlan], transport: str,
                        local: cache.LocalBase, undo: Undo, reporter: Reporter) -> None:
    first = guests[0]
    if any(g.send_bytes for g in guests):
        reporter.step(session.host, None,
                      f"sending {first.base.cache_name} ({transport})")
        await _step(session.host, first.name, "send template", _send_base(
            session, first, transport, local, reporter))
    for guest in guests:
        reporter.step(session.host, guest.name, "creating disk")
        await _step(session.host, guest.name, "create disk",
                    _create_disk(session, guest, undo))


async def _send_base(session: Session, guest: plan.GuestPlan, transport: str,
                     local: cache.LocalBase, reporter: Reporter) -> None:
    await session.run(["mkdir", "-p", posixpath.dirname(guest.base_path)])
    key = f"{session.host}:{guest.base.cache_name}"

    def progress(done: int) -> None:
        reporter.transfer(key, done, local.size)

    await images.send_atomically(images.get(transport), session, local.path, guest.base_path,
                                 local.size, progress=progress)


async def _create_disk(session: Session, guest: plan.GuestPlan, undo: Undo) -> None:
    """The guest's disk, made under a temporary name and linked into place.

    `ln` refuses to replace an existing file, so a disk of the same name (another build, a
    pet's disk) is never overwritten, even by a build that raced this one.
    """
    temp = f"{guest.disk_path}.mclu-new"
    if guest.spec.disk_format == "qcow2":
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", guest.base_path, "-F", "raw",
                temp, str(guest.disk_size)]
    else:
        argv = ["sh", "-c", 'cp --sparse=always -- "$1" "$2" && truncate -s "$3" -- "$2"',
                "sh", guest.base_path, temp, str(guest.disk_size)]
    try:
        await session.run(argv)
        await session.run(["ln", "--", temp, guest.disk_path])
    finally:
        await session.run(["rm", "-f", "--", temp], check=False)
    undo.push(f"remove {guest.disk_path} on {session.host}",
              functools.partial(_remove, session, guest.disk_path))


async def _remove(session: Session, path: str) -> None:
    await session.run(["rm", "-f", "--", path])


# --- step 2: personalisation, every guest in one libguestfs launch ----------------------------


async def _personalize(build: plan.BuildPlan, sessions: Mapping[str, Session], inputs: Inputs,
                       reporter: Reporter) -> None:
    reporter.step(None, None, f"personalising {len(build.guests)} guest(s)")
    async with contextlib.AsyncExitStack() as stack:
        drives = []
        for guest in build.guests:
            socket = await stack.enter_async_context(
                _nbd_export(sessions[guest.host], guest))
            drives.append((customize.Drive(nbd_socket=socket), _personalization(
                guest, build.template, inputs)))

        def say(text: str) -> None:
            reporter.step(None, None, text)

        try:
            await asyncio.to_thread(customize.personalize, drives, progress=say)
        except errors.PersonalizationFailed as e:
            raise errors.BuildFailed(e.guest, "personalise", _host_of(build, e.guest), str(e)
                                     ) from e


def _host_of(build: plan.BuildPlan, name: str) -> str:
    return next((g.host for g in build.guests if g.name == name), "controller")


def _personalization(guest: plan.GuestPlan, template: model.ResolvedTemplate,
                     inputs: Inputs) -> customize.Personalization:
    grow = template.base.expand if guest.disk_size > template.base.size else None
    return customize.Personalization(
        hostname=guest.name, ssh_authorized_keys=inputs.ssh_authorized_keys,
        root_password_file=inputs.root_password_file, grow_partition=grow,
        customization=template.customization)


@contextlib.asynccontextmanager
async def _nbd_export(session: Session, guest: plan.GuestPlan) -> AsyncIterator[str]:
    """The guest's disk served by qemu-nbd on its host, as a local unix socket."""
    tmp = (await session.run(["mktemp", "-d", "/tmp/mclu-nbd.XXXXXX"])).stdout.decode().strip()
    socket = posixpath.join(tmp, "nbd.sock")
    try:
        argv = ["qemu-nbd", "--socket", socket, "--format", guest.spec.disk_format,
                "--cache=unsafe", "--discard=unmap", "--shared=1", guest.disk_path]
        async with session.background(argv):
            await _wait_for_socket(session, socket)
            async with session.forward_socket(socket) as local:
                yield local
    finally:
        await session.run(["rm", "-rf", "--", tmp], check=False)


async def _wait_for_socket(session: Session, path: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while (await session.run(["test", "-S", path], check=False)).exit_status != 0:
        if time.monotonic() > deadline:
            raise errors.HostTimeout(session.host, f"qemu-nbd to listen on {path}", seconds)
        await asyncio.sleep(0.05)


# --- step 3: define and start ----------------------------------------------------------------


async def _define_and_start(session: Session, guests: list[plan.GuestPlan], undo: Undo,
                            reporter: Reporter) -> None:
    for guest in guests:
        reporter.step(session.host, guest.name, "defining and starting")
        await _step(session.host, guest.name, "define",
                    session.define(domxml.render(guest.spec)))
        undo.push(f"undefine {guest.name} on {session.host}",
                  functools.partial(_undefine, session, guest.name))
        await _step(session.host, guest.name, "start", session.start(guest.name))
        ready = dataclasses.replace(guest.spec.meta, state="ready")
        await _step(session.host, guest.name, "record", session.set_metadata(guest.name, ready))


async def _undefine(session: Session, name: str) -> None:
    with contextlib.suppress(errors.LibvirtCallFailed):  # not running: nothing to destroy
        await session.destroy(name)
    await session.undefine(name)


async def _step(host: str, guest: str, step: str, work: Awaitable[object]) -> None:
    """Run one step; a host's failure becomes a BuildFailed naming the step, host and guest."""
    try:
        await work
    except errors.BuildFailed:
        raise
    except errors.MCLUError as e:
        raise errors.BuildFailed(guest, step, host, str(e)) from e

