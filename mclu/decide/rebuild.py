"""Which guests `mclu rebuild` makes again, which it skips or refuses and why, and each one's
steps: pure functions from the request, one snapshot, the resolved templates, the hosts'
storage (which bases their caches hold) and the time, to a plan (`plan_rebuild`).

A guest's own mclu metadata is the only record of what it was built from (template, options,
build time), so that is what a rebuild reads. The executor (`mclu.act.rebuild`) asks the host
again only what holding the guest's lock makes necessary, and the plan names those steps
(`LOCK_CHECKS`): the guest re-read (it may have changed since the snapshot), its disk read
as qemu-img sees it, and the leftovers of a killed run cleared.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from mclu import errors, hostpaths, model
from mclu.decide import build as plan
from mclu.decide import cloudinit, placement
from mclu.decide.guests import find_guest, is_file_path, split_ref
from mclu.decide.migrate import Disk
from mclu.model import Snapshot, StorageFacts

# The steps after the guest's lock is taken that ask its host what the snapshot said already:
# another run may have changed the guest, its disk or left files beside it meanwhile.
LOCK_CHECKS = ("re-read the guest", "read disk", "clear leftovers")

# template name → its newest revision (or the one asked), or why it cannot be resolved
Templates = Mapping[str, model.ResolvedTemplate | errors.MCLUError]

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


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RebuildRequest:
    """`mclu rebuild` as the user asked it."""

    names: tuple[str, ...] = ()  # NAME or HOST:NAME
    all: bool = False  # every guest mclu built on the hosts asked
    older_than: float | None = None  # seconds: only guests built longer ago than this
    if_newer: bool = False  # only guests whose template has a newer revision than theirs
    exclude: tuple[str, ...] = ()  # guests left out, by name
    verify: bool = True  # boot a shut-off guest once to check its new disk


@dataclass(frozen=True)
class Rebuild:
    """One guest to rebuild, what from, and what its host's cache holds of it."""

    host: str
    guest: model.Guest
    meta: model.GuestMeta
    template: model.ResolvedTemplate  # the newest revision of the template meta names
    base_cached: bool = False  # it was there when the plan was read: not fetched, not sent
    verify: bool = True  # a shut-off guest is booted once to check its new disk

    @property
    def name(self) -> str:
        return self.guest.name

    @property
    def revision(self) -> str:
        return str(self.template.base.revision)

    @property
    def steps(self) -> tuple[str, ...]:
        """What the executor does, in order, as the plan knows the guest (the re-read under
        the lock decides whether it runs); a failure names its step."""
        running = self.guest.state.active
        seeded = cloudinit.uses_cloud_init(self.template)
        fetch = () if self.base_cached else ("download template", "send template")
        swap = ("keep the old disk", "put the new disk in place", "record")
        attach = ("attach seed",) if seeded else ()
        drop = ("remove seed",) if seeded else ()
        check = ("start", "ready", *drop, "record") if running or self.verify else ()
        return (
            "lock",
            *LOCK_CHECKS,
            *fetch,
            "create disk",
            "personalise",
            *(("stop",) if running else ()),
            *swap,
            *attach,
            *check,
            *(("stop",) if check and not running else ()),
            "remove the old disk",
        )


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
    # The bases fetched into the controller's cache: some host with a guest to rebuild lacks
    # them and the controller has not cached them. Nothing is downloaded for hosts that hold
    # them (in the order of the first guest that needs each).
    downloads: tuple[model.ResolvedTemplate, ...] = ()

    @property
    def bases_needed(self) -> tuple[model.ResolvedTemplate, ...]:
        """The bases some host with a guest to rebuild lacks, once each (by their cache
        name), in the order of the first guest that needs each: these are sent."""
        return _bases_lacking(self.rebuild)


@dataclass
class _Plan:
    """The plan while it is made, and what every guest's decision needs."""

    request: RebuildRequest
    templates: Templates
    storage: Mapping[str, StorageFacts]
    now: datetime.datetime
    hosts: Mapping[str, model.HostSnapshot] = dataclasses.field(default_factory=dict)
    local_cached: Collection[str] = ()  # the cache names of the controller's cached bases
    todo: list[Rebuild] = dataclasses.field(default_factory=list)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)
    refused: list[Refused] = dataclasses.field(default_factory=list)

    def done(self) -> RebuildPlan:
        todo = tuple(self.todo)
        downloads = tuple(
            t for t in _bases_lacking(todo) if t.base.cache_name not in self.local_cached
        )
        return RebuildPlan(todo, tuple(self.skipped), tuple(self.refused), downloads)


def _bases_lacking(todo: Sequence[Rebuild]) -> tuple[model.ResolvedTemplate, ...]:
    lacking: dict[str, model.ResolvedTemplate] = {}
    for item in todo:
        if not item.base_cached:
            lacking.setdefault(item.template.base.cache_name, item.template)
    return tuple(lacking.values())


def plan_rebuild(
    request: RebuildRequest,
    snap: Snapshot,
    templates: Templates,
    *,
    now: datetime.datetime,
    storage: Mapping[str, StorageFacts] | None = None,
    local_cached: Collection[str] = (),
) -> RebuildPlan:
    """Which guests are rebuilt, which are skipped and why, which cannot be.

    Named guests must be rebuildable: a guest mclu did not build (a pet), one whose build has
    not finished, a transient one, one that is not found or whose host did not answer, is
    refused (a failure). `--all` takes every guest of the hosts that answered and skips what
    it cannot rebuild, saying why; a host that is off is skipped, one that failed otherwise is
    refused (its guests are unknown). Either way a guest built less than `older_than` seconds
    before `now` is skipped, as asked. `templates` holds every template the guests' metadata
    names (`template_names`); `storage` the hosts' caches (a host not in it: its base is
    sent); `local_cached` the cache names of the bases the controller's cache holds (a base
    some host lacks is downloaded unless it is there). Raises UsageError for names with
    --all, or neither.
    """
    if request.all == bool(request.names):
        raise errors.UsageError("name the guests to rebuild, or give --all (not both)")
    _check_excluded(request, snap)
    made = _Plan(request, templates, storage or {}, now, snap.ok, local_cached=local_cached)
    if request.all:
        for host in snap.order:
            if host in snap.failed:
                error = snap.failed[host]
                if error.state == "off":
                    made.skipped.append(Skipped(None, host, f"host is off: {error}"))
                else:
                    made.refused.append(Refused(None, host, error))
                continue
            for guest in sorted(snap.ok[host].guests, key=lambda g: g.name):
                _decide(made, host, guest, named=False)
        return made.done()
    for text in dict.fromkeys(request.names):
        try:
            found = find_guest(snap, split_ref(text))
        except (errors.GuestNotFound, errors.GuestAmbiguous, errors.HostError) as e:
            made.refused.append(Refused(text, getattr(e, "host", None), e))
            continue
        host = found.host.spec.name
        if any(r.name == found.guest.name and r.host == host for r in made.todo):
            continue  # NAME and HOST:NAME of one guest
        _decide(made, host, found.guest, named=True)
    return made.done()


def template_names(snap: Snapshot) -> list[str]:
    """The templates the guests of the hosts that answered were built from (to resolve)."""
    names = {g.mclu.template for h in snap.ok.values() for g in h.guests if g.mclu is not None}
    return sorted(names)


def _check_excluded(request: RebuildRequest, snap: Snapshot) -> None:
    """A name to leave out that no host that answered has is a typo, unless a host did not
    answer (it may be there)."""
    if snap.failed:
        return
    known = {g.name for host in snap.ok.values() for g in host.guests}
    for name in request.exclude:
        if name not in known:
            raise errors.UsageError(f"--exclude {name}: no guest of that name on the hosts asked")


def _decide(made: _Plan, host: str, guest: model.Guest, *, named: bool) -> None:
    request = made.request
    if guest.name in request.exclude:
        made.skipped.append(Skipped(guest.name, host, "left out (--exclude)"))
        return
    why_not = cannot_rebuild(guest)
    if why_not is not None:
        if named:
            made.refused.append(
                Refused(
                    guest.name,
                    host,
                    errors.NotRebuildable(host=host, name=guest.name, reason=why_not),
                )
            )
        else:
            made.skipped.append(Skipped(guest.name, host, why_not))
        return
    meta = guest.mclu
    assert meta is not None  # cannot_rebuild says so otherwise
    young = _too_young(meta, request.older_than, made.now)
    if young is not None:
        made.skipped.append(Skipped(guest.name, host, young))
        return
    template = made.templates.get(meta.template)
    if not isinstance(template, model.ResolvedTemplate):
        why = f"its template {meta.template!r} cannot be resolved: {template}"
        made.refused.append(
            Refused(guest.name, host, errors.NotRebuildable(host=host, name=guest.name, reason=why))
        )
        return
    if request.if_newer and not _is_newer(template, meta):
        why = f"built from {meta.template} r{meta.revision}, which is the newest (--if-newer)"
        made.skipped.append(Skipped(guest.name, host, why))
        return
    # Its NIC stays as it is: a host without its network could not start it on the new disk.
    missing = placement.networks_missing(guest.networks, made.hosts[host])
    if missing is not None:
        if named:
            made.refused.append(Refused(guest.name, host, missing))
        else:
            made.skipped.append(Skipped(guest.name, host, missing.lack))
        return
    made.todo.append(_rebuild(made, host, guest, meta, template))


def _rebuild(
    made: _Plan,
    host: str,
    guest: model.Guest,
    meta: model.GuestMeta,
    template: model.ResolvedTemplate,
) -> Rebuild:
    facts = made.storage.get(host)
    return Rebuild(
        host=host,
        guest=guest,
        meta=meta,
        template=template,
        base_cached=facts is not None and template.base.cache_name in facts.cached_bases,
        # A guest given a seed boots once whatever --no-verify says: its seed is applied and
        # taken out by that boot (left in, a migration could not carry it).
        verify=made.request.verify or cloudinit.uses_cloud_init(template),
    )


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
    if not is_file_path(guest.disks[0]):
        return f"its disk {guest.disks[0]} is not a file"
    return None


def changed(planned: Rebuild, guest: model.Guest) -> str | None:
    """Why the guest as re-read under its lock is not the one planned for (changed, or no
    longer rebuildable), or None."""
    why_not = cannot_rebuild(guest)
    if why_not is None and (guest.uuid != planned.guest.uuid or guest.mclu != planned.meta):
        why_not = "it changed since mclu read it (another run?); run the command again"
    return why_not


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
            host=item.host,
            name=item.name,
            reason=f"its disk {disk.path} is {disk.format}, not qcow2 or raw",
        )
    path = hostpaths.rebuild_disk(disk.path)
    seed = (
        hostpaths.seed_path(spec.image_dir, item.name)
        if cloudinit.uses_cloud_init(item.template)
        else None
    )
    meta = dataclasses.replace(
        item.meta, revision=item.revision, built=built, state=model.BuildState.READY
    )
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
        seed=seed,
    )
    return plan.GuestPlan(
        name=item.name,
        host=item.host,
        reason="rebuild",
        spec=guest_spec,
        base=base,
        base_cached=item.base_cached,
        base_path=hostpaths.base_path(spec.image_dir, base),
        disk_path=path,
        disk_size=max(disk.virtual_size, base.size),
        send_bytes=base.data_bytes,
        seed_path=seed,
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
            f"{hostpaths.old_disk(old_disk)}: check it"
        )
    if not stopped and not swapped:
        return f"{name} is unchanged" + (" and running" if was_running else "")
    if not swapped:
        return f"{name} is unchanged and was started again"
    if was_running:
        return f"the old disk is back and {name} runs again"
    return f"the old disk is back; {name} is shut off, as it was"
