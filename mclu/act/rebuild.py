"""`mclu rebuild` carried out: guests made again, in place, from the newest revision of their
template, as `mclu.decide.rebuild` planned (from what `mclu.read.rebuild` read beyond the
snapshot: which bases the hosts' caches hold); `execute` carries a plan out, one guest at a
time, each under the guest's lock on its host (`mclu.act.locks`), held for the whole of its
rebuild:

    under the lock: re-read the guest (it may have changed since the snapshot), its disk,
    and clear what a killed run left (`mclu.decide.rebuild.LOCK_CHECKS`)
    base of the newest revision → the host's cache (unless the plan found it cached there,
    or this run sent it for an earlier guest)
    new disk beside the old one: <disk>.mclu-rebuild, personalised (hostname = guest name)
    ── nothing of the guest was touched until here: any failure leaves it as it was ──
    stop the guest (ACPI, then destroy after --stop-timeout)
    <disk>.mclu-old: a hard link to the old disk; the new disk renamed over <disk>
    metadata: newest revision, new build time, state ready (the domain XML is not redefined:
    same UUID, MAC, devices)
    start; wait until it is ready by its rule (`mclu.decide.readiness`); a guest that was shut off
    is booted only for this check (unless --no-verify), then shut off again
    success → <disk>.mclu-old removed

Every step registers its undo (`build.Undo`); a failure or a cancellation (Ctrl-C, SIGTERM)
undoes, newest first: the new guest is powered off, the metadata goes back, the old disk is
renamed back over <disk>, the old guest is started again and waited ready. A new guest that
does not become ready is such a failure: the error quotes its console's last lines (read
before the old guest boots, as the log starts empty at each boot). The disk's path exists at
every moment. A base that arrived whole stays in the host's cache, and so does the base the
old disk was on (`mclu templates prune`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mclu import errors, hostpaths, model
from mclu.act import build, lifecycle, locks, waiting
from mclu.decide import build as plan
from mclu.decide import cloudinit, domxml, readiness
from mclu.decide.guests import guest_named
from mclu.decide.migrate import Disk
from mclu.decide.rebuild import (
    Rebuild,
    RebuildPlan,
    changed,
    new_disk,
    outcome,
)
from mclu.hosts import commands
from mclu.hosts.session import Session
from mclu.images import cache, customize
from mclu.read import addresses as guest_addresses
from mclu.read import migrate as read_migrate

Locker = Callable[[Session, model.HostSpec, str, str], AbstractAsyncContextManager[None]]
# A new disk made the guest's own: (its host's session, the disk's plan, the template, the
# inputs, what to tell the user) → what was found in it. Tests on fake hosts pass their own.
Personaliser = Callable[
    [Session, plan.GuestPlan, model.ResolvedTemplate, build.Inputs, Callable[[str], None]],
    Awaitable[model.GuestTraits],
]

PURPOSE = "rebuild"  # what the guest's lock says this run does
READY_STEP = build.READY_STEP  # the step whose failure rules a revision out for the others
_T = TypeVar("_T")


# --- carrying it out -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rebuilt:
    name: str
    host: str
    template: str
    revision: str
    previous: str  # the revision it was built from before
    running: bool
    seconds: float
    ready: str = ""  # the readiness rule the new disk passed; "" when it was not booted


@dataclass(frozen=True)
class Failed:
    name: str | None
    host: str | None
    error: errors.MCLUError


class _StepFailed(Exception):
    """A step of one guest's rebuild failed; carries the step's name."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


async def personalise(
    session: Session,
    work: plan.GuestPlan,
    template: model.ResolvedTemplate,
    inputs: build.Inputs,
    say: Callable[[str], None],
) -> model.GuestTraits:
    """The new disk personalised from this machine: libguestfs on the host's qemu-nbd export."""
    async with build.nbd_export(session, work) as socket:
        drive = customize.Drive(nbd_socket=socket)
        job = build.personalization(work, template, inputs)
        (traits,) = await build.personalize_in_thread([(drive, job)], say)
        return traits


@dataclass(frozen=True)
class Context:
    """What every guest's rebuild in one run shares: the open sessions and their hosts, what
    personalises the new disks, where bases come from, who is told, and how long to wait."""

    sessions: Mapping[str, Session]
    specs: Mapping[str, model.HostSpec]
    inputs: build.Inputs  # what personalises each new disk
    cache_dir: Path  # the controller's cache of template bases
    reporter: build.Reporter
    transport: str  # how a base is sent to a host
    stop_timeout: float = lifecycle.STOP_TIMEOUT
    ready_timeout: float | None = None  # None: the template's, else readiness's default
    lock: Locker = locks.guest
    personalise: Personaliser = personalise
    # (host, base file name) of the bases this run has sent: a later guest there needs none
    arrived: set[tuple[str, str]] = field(default_factory=set)


async def execute(chosen: RebuildPlan, run: Context) -> list[Rebuilt | Failed]:
    """Rebuild every guest of the plan, one after another; a guest that fails does not stop
    the others, except that a template revision that did not become ready on one guest is
    not used for the others. A cancellation undoes the guest under way and propagates."""
    results: list[Rebuilt | Failed] = []
    not_ready: dict[tuple[str, str], str] = {}  # (base template, revision) → the guest
    for item in chosen.rebuild:
        revision = (item.template.base.template, item.revision)
        if revision in not_ready:
            error = errors.RevisionNotReady(
                host=item.host,
                name=item.name,
                template=item.template.name,
                revision=item.revision,
                tried_on=not_ready[revision],
            )
            results.append(Failed(item.name, item.host, error))
            continue
        try:
            results.append(await rebuild_guest(item, run))
        except errors.MCLUError as e:
            if isinstance(e, errors.RebuildFailed) and e.step == READY_STEP:
                not_ready[revision] = item.name
            results.append(Failed(item.name, item.host, e))
    return results


async def rebuild_guest(item: Rebuild, run: Context) -> Rebuilt:
    """One guest, under its lock; raises GuestLocked, NotRebuildable or RebuildFailed."""
    started = time.monotonic()
    session, spec = run.sessions[item.host], run.specs[item.host]
    async with run.lock(session, spec, item.name, PURPOSE):
        guest = await _reread(session, item)
        one = _Run(
            item,
            session,
            spec,
            run,
            was_running=guest.state.active,
            boots=guest.state.active or item.verify,
            ready_timeout=readiness.timeout_for(item.template, run.ready_timeout),
        )
        ready: readiness.Rule | None = None
        try:
            disk = await one.step("read disk", _system_disk(session, guest))
            work = new_disk(item, spec, disk, build.now())
            await _clear_leftovers(session, item.host, item.name, disk.path, guest)
            rules, work = await one.prepare(work)
            await one.swap(disk.path, work)
            if one.boots:
                await one.until_ready(work, rules)
                ready = rules[-1]
        except BaseException as e:
            # Cancellation included: shielded so a second Ctrl-C cannot leave half the undo.
            await asyncio.shield(one.undo.run(run.reporter))
            if isinstance(e, _StepFailed):
                raise errors.RebuildFailed(
                    guest=item.name,
                    host=item.host,
                    step=e.step,
                    reason=e.reason,
                    outcome=outcome(
                        item.name,
                        stopped=one.stopped,
                        swapped=one.swapped,
                        was_running=one.was_running,
                        problems=one.problems,
                        old_disk=disk_path_of(guest),
                    ),
                ) from e
            raise
        await asyncio.shield(one.finish(disk.path))  # the guest is rebuilt: Ctrl-C waits for this
    return Rebuilt(
        name=item.name,
        host=item.host,
        template=item.meta.template,
        revision=item.revision,
        previous=item.meta.revision,
        running=one.was_running,
        seconds=time.monotonic() - started,
        ready=str(ready) if ready else "",
    )


def disk_path_of(guest: model.Guest) -> str:
    return guest.disks[0] if guest.disks else "?"


async def _reread(session: Session, item: Rebuild) -> model.Guest:
    """The guest as it is now that this run holds its lock: still the one planned for?"""
    guest = guest_named(await session.guests(), item.name)
    if guest is None:
        raise errors.GuestNotFound(name=item.name, host=item.host)
    why_not = changed(item, guest)
    if why_not is not None:
        raise errors.NotRebuildable(host=item.host, name=item.name, reason=why_not)
    return guest


async def _system_disk(session: Session, guest: model.Guest) -> Disk:
    """The guest's first disk (the one its build made), as qemu-img on the host reads it."""
    single = dataclasses.replace(guest, disks=guest.disks[:1])
    try:
        (disk,) = await read_migrate.read_disks(session, single)
    except (ValueError, KeyError, TypeError) as e:  # output that is not qemu-img's JSON
        raise errors.HostError(
            host=session.host, detail=f"cannot read {single.disks[0]}: {e!r}"
        ) from None
    return disk


async def _clear_leftovers(
    session: Session, host: str, name: str, disk: str, guest: model.Guest
) -> None:
    """Remove what a killed run (one that could not undo) may have left: the half-made new
    disk and a seed (taken out of the guest first if it holds it) always; the old disk's link
    only while it is still the same file as the disk."""
    new, old = hostpaths.rebuild_disk(disk), hostpaths.old_disk(disk)
    await session.run(commands.remove(new, hostpaths.new_file(new)))
    seeds = [m for m in guest.cdroms if hostpaths.seed_owner(m) == name]
    if seeds:
        await build.remove_seed(session, name, seeds[0])
    if (await session.run(commands.exists(old), check=False)).exit_status != 0:
        return
    if (await session.run(commands.same_file(old, disk), check=False)).exit_status == 0:
        await session.run(commands.remove(old))
        return
    raise errors.NotRebuildable(
        host=host,
        name=name,
        reason=(
            f"{old} is left from an interrupted rebuild and is the disk from before it: "
            f"move it back over {disk} or remove it"
        ),
    )


@dataclass
class _Run:
    """One guest's rebuild under way: what it has done, and how to undo it."""

    item: Rebuild
    session: Session
    spec: model.HostSpec
    run: Context
    was_running: bool
    boots: bool  # the new guest is started: it was running, or it is booted once to check it
    ready_timeout: float
    stopped: bool = False  # the old guest has been stopped
    swapped: bool = False  # its disk has been moved aside
    undo: build.Undo = dataclasses.field(default_factory=build.Undo)
    problems: list[str] = dataclasses.field(default_factory=list)  # undo steps that failed

    @property
    def stop_timeout(self) -> float:
        return self.run.stop_timeout

    def say(self, text: str) -> None:
        self.run.reporter.step(self.item.host, self.item.name, text)

    async def step(self, step: str, work: Awaitable[_T]) -> _T:
        try:
            return await work
        except errors.MCLUError as e:
            raise _StepFailed(step, str(e)) from e

    def on_undo(
        self, what: str, action: Callable[[], Awaitable[None]], *, restores: bool = False
    ) -> None:
        """Register an undo; one that `restores` the old guest is tracked if it fails."""

        async def tracked() -> None:
            try:
                await action()
            except (errors.MCLUError, OSError) as e:
                self.problems.append(f"could not {what}: {e}")
                raise

        self.undo.push(what, tracked if restores else action)

    # -- before the swap: the old guest is not touched ------------------------------------------

    async def prepare(
        self, work: plan.GuestPlan
    ) -> tuple[tuple[readiness.Rule, ...], plan.GuestPlan]:
        """The new disk, made and personalised (or its seed written); returns the rules it
        will be checked by, in order, and the plan with the host keys it was given and the
        ssh server it has."""
        template, run = self.item.template, self.run
        here = (self.item.host, template.base.cache_name)
        if not (self.item.base_cached or here in run.arrived):
            self.say(f"fetching {template.base.cache_name}")
            local = await self.step(
                "download template",
                asyncio.to_thread(
                    cache.ensure,
                    template,
                    run.cache_dir,
                    lambda done, total: run.reporter.transfer(
                        f"download {template.name}", done, total
                    ),
                ),
            )
            self.say(f"sending {template.base.cache_name} ({run.transport})")
            await self.step(
                "send template",
                build.send_base(self.session, work, run.transport, local, run.reporter),
            )
            run.arrived.add(here)
        self.say(f"creating the new disk {work.disk_path}")
        await self.step("create disk", build.create_disk(self.session, work, self.undo))
        personalised: Awaitable[model.GuestTraits]
        if work.seed_path:
            personalised = self._write_seed(work)
        else:
            self.say("personalising the new disk")
            personalised = run.personalise(self.session, work, template, run.inputs, self.say)
        traits = await self.step("personalise", personalised)
        # The new disk's host keys go into the metadata recorded at the swap.
        # Its NICs stay as they are: the default rule is ssh when they give it an address.
        work = plan.with_traits(work, traits)
        if work.seed_path:
            return build.ready_rules(template, work, traits), work
        rule = readiness.choose(template.ready, traits, self.item.guest.networks).rule
        return (rule,), work

    async def _write_seed(self, work: plan.GuestPlan) -> model.GuestTraits:
        """The new disk's seed beside it (one a killed run left there removed first)."""
        assert work.seed_path is not None
        await self.session.run(commands.remove(work.seed_path))
        return await build.write_seed(
            self.session, work, self.item.template, self.run.inputs, self.undo, self.say
        )

    # -- the swap ---------------------------------------------------------------------------

    async def swap(self, disk: str, work: plan.GuestPlan) -> None:
        """Stop, swap the disks, record, start. Each undo is registered before its step and
        is right whether the step happened or not, so a cancellation at any point (even in
        the middle of a step) is undone correctly."""
        session, name, stop_timeout = self.session, self.item.name, self.stop_timeout
        old = hostpaths.old_disk(disk)
        if self.was_running:
            self.say("stopping the old guest")
            self.stopped = True
            # The old guest back up, and ready by the rule it passed when it was built.
            rule = cloudinit.again(readiness.recorded(self.item.meta.ready))
            # The template's timeout judges the new revision; the old guest, which booted
            # before, gets at least mclu's default (a busy host's ssh can take longer than a
            # short `ready_timeout` meant for the new disk's console).
            restart_timeout = max(self.ready_timeout, readiness.DEFAULT_TIMEOUT)
            self.on_undo(
                f"start {name} again on {session.host}",
                lambda: _restart_old(
                    session, name, stop_timeout, rule, restart_timeout, self.item.meta.host_keys
                ),
                restores=True,
            )
            await self.step("stop", lifecycle.stop(session, name, timeout=stop_timeout, force=True))
        self.swapped = True
        self.on_undo(
            f"put the old disk back at {disk} on {session.host}",
            lambda: _restore_disk(session, old, disk),
            restores=True,
        )
        await self.step("keep the old disk", session.run(commands.link(disk, old)))
        await self.step(
            "put the new disk in place", session.run(commands.move_over(work.disk_path, disk))
        )
        self.on_undo(
            f"restore {name}'s metadata on {session.host}",
            lambda: session.set_metadata(name, self.item.meta),
            restores=True,
        )
        await self.step("record", session.set_metadata(name, work.spec.meta))
        if work.seed_path:
            seed = work.seed_path
            self.on_undo(
                f"detach {seed} from {name} on {session.host}",
                lambda: session.detach_device(name, domxml.cdrom(seed)),
                restores=True,
            )
            await self.step("attach seed", session.attach_device(name, domxml.cdrom(seed)))
        if self.boots:
            self.say(
                "starting the new guest"
                if self.was_running
                else "booting the new guest once, to check it"
            )
            # A start cancelled while libvirt carries it out may have started it: off first.
            self.on_undo(
                f"power off the new {name} on {session.host}",
                lambda: _destroy_if_running(session, name),
                restores=True,
            )
            await self.step("start", session.start(name))

    async def until_ready(self, work: plan.GuestPlan, rules: Sequence[readiness.Rule]) -> None:
        """Wait for the new guest to be ready by each rule in turn; take its seed out, if it
        has one; record the rule it passed last and its addresses then. A guest that was shut
        off is shut off again once it has shown it boots."""
        session, name = self.session, self.item.name
        deadline = time.monotonic() + self.ready_timeout
        try:
            for rule in rules:
                self.say(f"waiting until ready ({rule.describe()})")
                left = (
                    self.ready_timeout
                    if rule is rules[0]
                    else max(deadline - time.monotonic(), 0.0)
                )
                await waiting.wait(session, name, rule, left, host_keys=work.spec.meta.host_keys)
        except errors.NotReady as e:
            raise _StepFailed(
                READY_STEP,
                (
                    f"{self.item.template.name} r{self.item.revision} did not become ready "
                    f"({e.rule}): {e.reason}{e.quoted}"
                ),
            ) from e
        except errors.MCLUError as e:
            raise _StepFailed(READY_STEP, str(e)) from e
        if work.seed_path:
            self.say("removing its cloud-init seed")
            await self.step("remove seed", build.drop_seed(session, work))
        # Its addresses as they are now, recorded as build records them (source "ready" in
        # list and info); a bounded read that never fails the rebuild.
        known = await guest_addresses.of_running(session, name)
        meta = dataclasses.replace(
            work.spec.meta, ready=str(rule), addresses=tuple(a.ip for a in known)
        )
        await self.step("record", session.set_metadata(name, meta))
        if not self.was_running:
            self.say("shutting the checked guest off again")
            await self.step(
                "stop", lifecycle.stop(session, name, timeout=self.stop_timeout, force=True)
            )

    async def finish(self, disk: str) -> None:
        """The new guest is in place: the old disk goes; failing that is only reported."""
        old = hostpaths.old_disk(disk)
        try:
            await self.session.run(commands.remove(old))
        except errors.MCLUError as e:
            self.say(f"could not remove {old}: {e}")


async def _restart_old(
    session: Session,
    name: str,
    stop_timeout: float,
    rule: readiness.Rule,
    ready_timeout: float,
    host_keys: tuple[str, ...] = (),
) -> None:
    """The old guest running again, whatever the interrupted stop had done, and ready by
    `rule`. A shutdown it had already requested takes the guest down moments later, so a
    guest still running is first stopped for good (ACPI, forced after the timeout), then
    started."""
    state = await lifecycle.state_of(session, name)
    if state is not None and state.active:
        try:
            await lifecycle.stop(session, name, timeout=stop_timeout, force=True)
        except errors.LibvirtCallFailed:  # it went off between the look and the request
            if await lifecycle.state_of(session, name) not in (None, *_OFF_STATES):
                raise
    await _start_if_off(session, name)
    await waiting.wait(session, name, rule, ready_timeout, host_keys=host_keys)


_OFF_STATES = tuple(s for s in model.GuestState if not s.active)


async def _start_if_off(session: Session, name: str) -> None:
    state = await lifecycle.state_of(session, name)
    if state is not None and not state.active:
        await session.start(name)


async def _destroy_if_running(session: Session, name: str) -> None:
    state = await lifecycle.state_of(session, name)
    if state is not None and state.active:
        await session.destroy(name)


async def _restore_disk(session: Session, old: str, disk: str) -> None:
    await session.run(commands.restore_disk(old, disk))
