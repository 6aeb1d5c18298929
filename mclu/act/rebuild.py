"""`mclu rebuild`: guests made again, in place, from the newest revision of their template.

A guest's own mclu metadata is the only record of what it was built from (template, options,
build time), so that is what a rebuild reads. The decisions are pure (`parse_age`,
`plan_rebuild`, `new_disk`, `outcome`); `execute` carries a plan out, one guest at a time,
each under the guest's lock on its host (`mclu.act.locks`), held for the whole of its rebuild:

    under the lock: re-read the guest (it may have changed since the snapshot), its disk
    base of the newest revision → the host's cache (unless cached there)
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
import datetime
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mclu import errors, hostpaths, model
from mclu.act import build, lifecycle, locks, migrate, waiting
from mclu.decide import build as plan
from mclu.decide import readiness
from mclu.decide.migrate import Disk
from mclu.hosts.session import Session
from mclu.images import cache, customize
from mclu.model import Snapshot
from mclu.read import snapshot

Resolver = Callable[[str], model.ResolvedTemplate]  # template name → its newest revision
Locker = Callable[[Session, model.HostSpec, str, str], AbstractAsyncContextManager[None]]

NEW_SUFFIX = ".mclu-rebuild"  # the replacement disk while it is made
OLD_SUFFIX = ".mclu-old"  # the old disk while the new one is tried
PURPOSE = "rebuild"  # what the guest's lock says this run does
READY_STEP = build.READY_STEP  # the step whose failure rules a revision out for the others
_T = TypeVar("_T")

# --- AGE: how old a guest must be to be rebuilt ------------------------------------------------

AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_AGES = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")


def parse_age(text: str) -> float:
    """`7d`, `12h`, `30m`, `90s`, `2w`, or a sum such as `1d12h` → seconds.

    Raises ValueError for anything else (a bare number too: minutes or days?).
    """
    compact = text.strip().lower().replace(" ", "")
    if not _AGES.fullmatch(compact):
        raise ValueError(
            f"not an age: {text!r} (use a number and a unit s, m, h, d or w, e.g. 7d, 12h, 30m)"
        )
    return sum(float(n) * AGE_UNITS[unit] for n, unit in _AGE.findall(compact))


def age_text(seconds: float) -> str:
    """Seconds as people read an age: `45 s`, `12 min`, `5.5 h`, `3 d`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{round(seconds / 3600, 1):g} h"
    return f"{round(seconds / 86400, 1):g} d"


def parse_built(text: str) -> datetime.datetime | None:
    """The metadata's `built` time (ISO 8601, UTC), or None when missing or unreadable."""
    if not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


# --- planning (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RebuildRequest:
    """`mclu rebuild` as the user asked it."""

    names: tuple[str, ...] = ()  # NAME or HOST:NAME
    all: bool = False  # every guest mclu built on the hosts asked
    older_than: float | None = None  # seconds: only guests built longer ago than this
    if_newer: bool = False  # only guests whose template has a newer revision than theirs
    exclude: tuple[str, ...] = ()  # guests left out, by name


@dataclass(frozen=True)
class Rebuild:
    """One guest to rebuild, and what from."""

    host: str
    guest: model.Guest
    meta: model.GuestMeta
    template: model.ResolvedTemplate  # the newest revision of the template meta names

    @property
    def name(self) -> str:
        return self.guest.name

    @property
    def revision(self) -> str:
        return str(self.template.base.revision)


@dataclass(frozen=True)
class Skipped:
    """A guest (or with `host` only, a host's guests) left alone as asked, and why."""

    name: str | None
    host: str | None
    reason: str


@dataclass(frozen=True)
class Refused:
    """A guest that cannot be rebuilt, known before anything is touched: a failure."""

    name: str | None
    host: str | None
    error: errors.MCLUError


@dataclass(frozen=True)
class RebuildPlan:
    rebuild: tuple[Rebuild, ...]
    skipped: tuple[Skipped, ...]
    refused: tuple[Refused, ...]


def plan_rebuild(
    request: RebuildRequest, snap: Snapshot, resolve: Resolver, *, now: datetime.datetime
) -> RebuildPlan:
    """Which guests are rebuilt, which are skipped and why, which cannot be.

    Named guests must be rebuildable: a guest mclu did not build (a pet), one whose build has
    not finished, a transient one, one that is not found or whose host did not answer, is
    refused (a failure). `--all` takes every guest of the hosts that answered and skips what
    it cannot rebuild, saying why; a host that is off is skipped, one that failed otherwise is
    refused (its guests are unknown). Either way a guest built less than `older_than` seconds
    before `now` is skipped, as asked. Raises UsageError for names with --all, or neither.
    """
    if request.all == bool(request.names):
        raise errors.UsageError("name the guests to rebuild, or give --all (not both)")
    _check_excluded(request, snap)
    todo: list[Rebuild] = []
    skipped: list[Skipped] = []
    refused: list[Refused] = []
    if request.all:
        for host in snap.order:
            if host in snap.failed:
                error = snap.failed[host]
                if error.state == "off":
                    skipped.append(Skipped(None, host, f"host is off: {error}"))
                else:
                    refused.append(Refused(None, host, error))
                continue
            for guest in sorted(snap.ok[host].guests, key=lambda g: g.name):
                _decide(
                    host, guest, request, resolve, now, named=False, into=(todo, skipped, refused)
                )
        return RebuildPlan(tuple(todo), tuple(skipped), tuple(refused))
    for text in dict.fromkeys(request.names):
        try:
            found = snapshot.find_guest(snap, snapshot.split_ref(text))
        except (errors.GuestNotFound, errors.GuestAmbiguous, errors.HostError) as e:
            refused.append(Refused(text, getattr(e, "host", None), e))
            continue
        if any(r.name == found.guest.name and r.host == found.host.spec.name for r in todo):
            continue  # NAME and HOST:NAME of one guest
        _decide(
            found.host.spec.name,
            found.guest,
            request,
            resolve,
            now,
            named=True,
            into=(todo, skipped, refused),
        )
    return RebuildPlan(tuple(todo), tuple(skipped), tuple(refused))


def _check_excluded(request: RebuildRequest, snap: Snapshot) -> None:
    """A name to leave out that no host that answered has is a typo, unless a host did not
    answer (it may be there)."""
    if snap.failed:
        return
    known = {g.name for host in snap.ok.values() for g in host.guests}
    for name in request.exclude:
        if name not in known:
            raise errors.UsageError(f"--exclude {name}: no guest of that name on the hosts asked")


def _decide(
    host: str,
    guest: model.Guest,
    request: RebuildRequest,
    resolve: Resolver,
    now: datetime.datetime,
    *,
    named: bool,
    into: tuple[list[Rebuild], list[Skipped], list[Refused]],
) -> None:
    todo, skipped, refused = into
    if guest.name in request.exclude:
        skipped.append(Skipped(guest.name, host, "left out (--exclude)"))
        return
    why_not = cannot_rebuild(guest)
    if why_not is not None:
        if named:
            refused.append(
                Refused(guest.name, host, errors.NotRebuildable(host, guest.name, why_not))
            )
        else:
            skipped.append(Skipped(guest.name, host, why_not))
        return
    meta = guest.mclu
    assert meta is not None  # cannot_rebuild says so otherwise
    young = _too_young(meta, request.older_than, now)
    if young is not None:
        skipped.append(Skipped(guest.name, host, young))
        return
    try:
        template = resolve(meta.template)
    except errors.MCLUError as e:
        refused.append(
            Refused(
                guest.name,
                host,
                errors.NotRebuildable(
                    host, guest.name, f"its template {meta.template!r} cannot be resolved: {e}"
                ),
            )
        )
        return
    if request.if_newer and not _is_newer(template, meta):
        skipped.append(
            Skipped(
                guest.name,
                host,
                (f"built from {meta.template} r{meta.revision}, which is the newest (--if-newer)"),
            )
        )
        return
    todo.append(Rebuild(host=host, guest=guest, meta=meta, template=template))


def _is_newer(template: model.ResolvedTemplate, meta: model.GuestMeta) -> bool:
    """Whether the template's revision is newer than the guest's (unknown: newer)."""
    return not meta.revision.isdigit() or template.base.revision > int(meta.revision)


def cannot_rebuild(guest: model.Guest) -> str | None:
    """Why the guest cannot be rebuilt at all, or None."""
    if guest.mclu is None:
        return "not built by mclu (no mclu metadata): a pet, never rebuilt"
    if guest.mclu.state != model.BuildState.READY:
        return f"its build has not finished (mclu state {guest.mclu.state!r})"
    if not guest.persistent:
        return "transient (not defined): stopping it would remove it"
    if not guest.disks:
        return "it has no disk"
    if not lifecycle.is_file_path(guest.disks[0]):
        return f"its disk {guest.disks[0]} is not a file"
    return None


def _too_young(
    meta: model.GuestMeta, older_than: float | None, now: datetime.datetime
) -> str | None:
    """Why the guest is skipped under --if-older-than, or None (unknown build time: old)."""
    if older_than is None:
        return None
    built = parse_built(meta.built)
    if built is None:
        return None
    age = (now - built).total_seconds()
    if age >= older_than:
        return None
    return (
        f"built {age_text(max(age, 0))} ago ({meta.built}), not older than {age_text(older_than)}"
    )


def new_disk(item: Rebuild, spec: model.HostSpec, disk: Disk, built: str) -> plan.GuestPlan:
    """The replacement disk as a build step sees a guest's disk: made at `<disk>.mclu-rebuild`
    next to the old one, in the old one's format (qcow2: an overlay on the newest base in the
    host's cache; raw: a full copy of it), at least as large as the old one."""
    base = item.template.base
    if disk.format not in ("qcow2", "raw"):
        raise errors.NotRebuildable(
            item.host, item.name, f"its disk {disk.path} is {disk.format}, not qcow2 or raw"
        )
    path = disk.path + NEW_SUFFIX
    meta = dataclasses.replace(item.meta, revision=item.revision, built=built, state="ready")
    guest_spec = model.GuestSpec(
        name=item.name,
        domain_type=spec.domain_type,
        memory=item.guest.memory,
        vcpus=item.guest.vcpus,
        disk_path=path,
        meta=meta,
        disk_format=disk.format,
        disk_bus=item.template.disk_bus,
        arch=base.arch,
    )
    return plan.GuestPlan(
        name=item.name,
        host=item.host,
        reason="rebuild",
        spec=guest_spec,
        base=base,
        base_cached=False,
        base_path=hostpaths.base_path(spec.image_dir, base),
        disk_path=path,
        disk_size=max(disk.virtual_size, base.size),
        send_bytes=base.data_bytes,
    )


def outcome(
    name: str,
    *,
    stopped: bool,
    swapped: bool,
    was_running: bool,
    problems: Sequence[str],
    old_disk: str,
) -> str:
    """What a failed rebuild left (after its undo), for the end of its error line.

    `stopped`: the old guest was stopped; `swapped`: its disk was moved aside; `problems`:
    undo steps that failed.
    """
    if problems:
        return (
            f"restoring {name} failed ({'; '.join(problems)}); its old disk may be "
            f"{old_disk}{OLD_SUFFIX}: check it"
        )
    if not stopped and not swapped:
        return f"{name} is unchanged" + (" and running" if was_running else "")
    if not swapped:
        return f"{name} is unchanged and was started again"
    if was_running:
        return f"the old disk is back and {name} runs again"
    return f"the old disk is back; {name} is shut off, as it was"


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


@dataclass(frozen=True)
class Checks:
    """How a rebuilt guest is checked: booted until ready, within how long."""

    ready_timeout: float | None = None  # None: the template's, else readiness's default
    verify: bool = True  # boot a shut-off guest once to check its new disk


async def execute(
    chosen: RebuildPlan,
    sessions: Mapping[str, Session],
    specs: Mapping[str, model.HostSpec],
    inputs: build.Inputs,
    cache_dir: Path,
    reporter: build.Reporter,
    *,
    transport: str,
    stop_timeout: float = lifecycle.STOP_TIMEOUT,
    checks: Checks = Checks(),
    lock: Locker = locks.guest,
) -> list[Rebuilt | Failed]:
    """Rebuild every guest of the plan, one after another; a guest that fails does not stop
    the others, except that a template revision that did not become ready on one guest is
    not used for the others. A cancellation undoes the guest under way and propagates."""
    results: list[Rebuilt | Failed] = []
    not_ready: dict[tuple[str, str], str] = {}  # (base template, revision) → the guest
    for item in chosen.rebuild:
        revision = (item.template.base.template, item.revision)
        if revision in not_ready:
            results.append(
                Failed(
                    item.name,
                    item.host,
                    errors.RevisionNotReady(
                        host=item.host,
                        name=item.name,
                        template=item.template.name,
                        revision=item.revision,
                        tried_on=not_ready[revision],
                    ),
                )
            )
            continue
        try:
            results.append(
                await rebuild_guest(
                    item,
                    sessions[item.host],
                    specs[item.host],
                    inputs,
                    cache_dir,
                    reporter,
                    transport=transport,
                    stop_timeout=stop_timeout,
                    checks=checks,
                    lock=lock,
                )
            )
        except errors.MCLUError as e:
            if isinstance(e, errors.RebuildFailed) and e.step == READY_STEP:
                not_ready[revision] = item.name
            results.append(Failed(item.name, item.host, e))
    return results


async def rebuild_guest(
    item: Rebuild,
    session: Session,
    spec: model.HostSpec,
    inputs: build.Inputs,
    cache_dir: Path,
    reporter: build.Reporter,
    *,
    transport: str,
    stop_timeout: float = lifecycle.STOP_TIMEOUT,
    checks: Checks = Checks(),
    lock: Locker = locks.guest,
) -> Rebuilt:
    """One guest, under its lock; raises GuestLocked, NotRebuildable or RebuildFailed."""
    started = time.monotonic()
    timeout = build.ready_timeout(item.template, checks.ready_timeout)
    async with lock(session, spec, item.name, PURPOSE):
        guest = await _reread(session, item)
        run = _Run(
            item,
            session,
            spec,
            reporter,
            was_running=guest.state.active,
            boots=guest.state.active or checks.verify,
            stop_timeout=stop_timeout,
            ready_timeout=timeout,
        )
        ready: readiness.Rule | None = None
        try:
            disk = await run.step("read disk", _system_disk(session, guest))
            work = new_disk(item, spec, disk, build.now())
            await _clear_leftovers(session, item.host, item.name, disk.path)
            rule = await run.prepare(work, inputs, cache_dir, transport)
            await run.swap(disk.path, work)
            if run.boots:
                await run.until_ready(work, rule)
                ready = rule
        except BaseException as e:
            # Cancellation included: shielded so a second Ctrl-C cannot leave half the undo.
            await asyncio.shield(run.undo.run(reporter))
            if isinstance(e, _StepFailed):
                raise errors.RebuildFailed(
                    item.name,
                    item.host,
                    e.step,
                    e.reason,
                    outcome(
                        item.name,
                        stopped=run.stopped,
                        swapped=run.swapped,
                        was_running=run.was_running,
                        problems=run.problems,
                        old_disk=disk_path_of(guest),
                    ),
                ) from e
            raise
        await asyncio.shield(run.finish(disk.path))  # the guest is rebuilt: Ctrl-C waits for this
    return Rebuilt(
        name=item.name,
        host=item.host,
        template=item.meta.template,
        revision=item.revision,
        previous=item.meta.revision,
        running=run.was_running,
        seconds=time.monotonic() - started,
        ready=str(ready) if ready else "",
    )


def disk_path_of(guest: model.Guest) -> str:
    return guest.disks[0] if guest.disks else "?"


async def _reread(session: Session, item: Rebuild) -> model.Guest:
    """The guest as it is now that this run holds its lock: still the one planned for?"""
    guest = next((g for g in await session.guests() if g.name == item.name), None)
    if guest is None:
        raise errors.GuestNotFound(item.name, host=item.host)
    why_not = cannot_rebuild(guest)
    if why_not is None and (guest.uuid != item.guest.uuid or guest.mclu != item.meta):
        why_not = "it changed since mclu read it (another run?); run the command again"
    if why_not is not None:
        raise errors.NotRebuildable(item.host, item.name, why_not)
    return guest


async def _system_disk(session: Session, guest: model.Guest) -> Disk:
    """The guest's first disk (the one its build made), as qemu-img on the host reads it."""
    single = dataclasses.replace(guest, disks=guest.disks[:1])
    try:
        (disk,) = await migrate.read_disks(session, single)
    except (ValueError, KeyError, TypeError) as e:  # output that is not qemu-img's JSON
        raise errors.HostError(session.host, f"cannot read {single.disks[0]}: {e!r}") from None
    return disk


async def _clear_leftovers(session: Session, host: str, name: str, disk: str) -> None:
    """Remove what a killed run (one that could not undo) may have left: the half-made new
    disk always; the old disk's link only while it is still the same file as the disk."""
    new, old = disk + NEW_SUFFIX, disk + OLD_SUFFIX
    await session.run(["rm", "-f", "--", new, f"{new}.mclu-new"])
    if (await session.run(["test", "-e", old], check=False)).exit_status != 0:
        return
    if (await session.run(["test", old, "-ef", disk], check=False)).exit_status == 0:
        await session.run(["rm", "-f", "--", old])
        return
    raise errors.NotRebuildable(
        host,
        name,
        (
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
    reporter: build.Reporter
    was_running: bool
    boots: bool  # the new guest is started: it was running, or it is booted once to check it
    stop_timeout: float
    ready_timeout: float
    stopped: bool = False  # the old guest has been stopped
    swapped: bool = False  # its disk has been moved aside
    undo: build.Undo = dataclasses.field(default_factory=build.Undo)
    problems: list[str] = dataclasses.field(default_factory=list)  # undo steps that failed

    def say(self, text: str) -> None:
        self.reporter.step(self.item.host, self.item.name, text)

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
        self, work: plan.GuestPlan, inputs: build.Inputs, cache_dir: Path, transport: str
    ) -> readiness.Rule:
        """The new disk, made and personalised; returns the rule it will be checked by."""
        template = self.item.template
        cached = await self.session.run(["test", "-f", work.base_path], check=False)
        if cached.exit_status != 0:
            self.say(f"fetching {template.base.cache_name}")
            local = await self.step(
                "download template",
                asyncio.to_thread(
                    cache.ensure,
                    template,
                    cache_dir,
                    lambda done, total: self.reporter.transfer(
                        f"download {template.name}", done, total
                    ),
                ),
            )
            self.say(f"sending {template.base.cache_name} ({transport})")
            await self.step(
                "send template",
                build.send_base(self.session, work, transport, local, self.reporter),
            )
        self.say(f"creating the new disk {work.disk_path}")
        await self.step("create disk", build.create_disk(self.session, work, self.undo))
        self.say("personalising the new disk")
        traits = await self.step("personalise", self._personalize(work, inputs))
        return readiness.choose(template.ready, traits).rule

    async def _personalize(self, work: plan.GuestPlan, inputs: build.Inputs) -> model.GuestTraits:
        async with build.nbd_export(self.session, work) as socket:
            drive = customize.Drive(nbd_socket=socket)
            job = build.personalization(work, self.item.template, inputs)
            (traits,) = await build.personalize_in_thread([(drive, job)], self.say)
            return traits

    # -- the swap ---------------------------------------------------------------------------

    async def swap(self, disk: str, work: plan.GuestPlan) -> None:
        """Stop, swap the disks, record, start. Each undo is registered before its step and
        is right whether the step happened or not, so a cancellation at any point (even in
        the middle of a step) is undone correctly."""
        session, name, stop_timeout = self.session, self.item.name, self.stop_timeout
        old = disk + OLD_SUFFIX
        if self.was_running:
            self.say("stopping the old guest")
            self.stopped = True
            # The old guest back up, and ready by the rule it passed when it was built.
            rule = readiness.recorded(self.item.meta.ready)
            self.on_undo(
                f"start {name} again on {session.host}",
                lambda: _restart_old(session, name, stop_timeout, rule, self.ready_timeout),
                restores=True,
            )
            await self.step("stop", lifecycle.stop(session, name, timeout=stop_timeout, force=True))
        self.swapped = True
        self.on_undo(
            f"put the old disk back at {disk} on {session.host}",
            lambda: _restore_disk(session, old, disk),
            restores=True,
        )
        await self.step("keep the old disk", session.run(["ln", "--", disk, old]))
        await self.step(
            "put the new disk in place", session.run(["mv", "-f", "-T", "--", work.disk_path, disk])
        )
        self.on_undo(
            f"restore {name}'s metadata on {session.host}",
            lambda: session.set_metadata(name, self.item.meta),
            restores=True,
        )
        await self.step("record", session.set_metadata(name, work.spec.meta))
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

    async def until_ready(self, work: plan.GuestPlan, rule: readiness.Rule) -> None:
        """Wait for the new guest to be ready; record the rule it passed. A guest that was
        shut off is shut off again once it has shown it boots."""
        session, name = self.session, self.item.name
        self.say(f"waiting until ready ({rule.describe()})")
        try:
            await waiting.wait(session, name, rule, self.ready_timeout)
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
        meta = dataclasses.replace(work.spec.meta, ready=str(rule))
        await self.step("record", session.set_metadata(name, meta))
        if not self.was_running:
            self.say("shutting the checked guest off again")
            await self.step(
                "stop", lifecycle.stop(session, name, timeout=self.stop_timeout, force=True)
            )

    async def finish(self, disk: str) -> None:
        """The new guest is in place: the old disk goes; failing that is only reported."""
        old = disk + OLD_SUFFIX
        try:
            await self.session.run(["rm", "-f", "--", old])
        except errors.MCLUError as e:
            self.say(f"could not remove {old}: {e}")


async def _restart_old(
    session: Session, name: str, stop_timeout: float, rule: readiness.Rule, ready_timeout: float
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
    await waiting.wait(session, name, rule, ready_timeout)


_OFF_STATES = tuple(s for s in model.GuestState if not s.active)


async def _start_if_off(session: Session, name: str) -> None:
    state = await lifecycle.state_of(session, name)
    if state is not None and not state.active:
        await session.start(name)


async def _destroy_if_running(session: Session, name: str) -> None:
    state = await lifecycle.state_of(session, name)
    if state is not None and state.active:
        await session.destroy(name)


# The old disk back in place, whatever the swap had done: nothing yet (no link), the link
# made (the same file as the disk: the link goes), or the new disk moved in (the link is the
# old disk's only name: renamed back over the disk).
_RESTORE = (
    'if [ -e "$1" ]; then if [ "$1" -ef "$2" ]; then rm -f -- "$1"; '
    'else mv -f -T -- "$1" "$2"; fi; fi'
)


async def _restore_disk(session: Session, old: str, disk: str) -> None:
    await session.run(["sh", "-c", _RESTORE, "sh", old, disk])
