"""Planning `mclu delete` of one guest: power it off or not, undefine it, and which of its
disks are its own to remove.

Pure: the request and the snapshot in (plus the backing files of the other guests' disks,
read from the host beforehand: `backing_to_read` names those disks); a DeletePlan out, or the
refusal that stops the delete before anything is touched or even read. `mclu.act.lifecycle`
carries the plan out without asking the host anything more.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mclu import errors, hostpaths, model
from mclu.decide.guests import guest_named, is_file_path


@dataclass(frozen=True)
class DeleteRequest:
    """`mclu delete` of one guest, found on `host` by the read pass."""

    host: str
    name: str
    force: bool = False  # a running guest is powered off first, not refused
    # (host, guest) this run has deleted already: their disks share nothing any more
    deleted: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Kept:
    """A disk of the guest that delete leaves in place, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class DiskChoice:
    remove: tuple[str, ...]
    keep: tuple[Kept, ...]


@dataclass(frozen=True)
class DeletePlan:
    """What deleting one guest does, in this order."""

    host: str
    guest: str
    destroy: bool  # it is running: powered off (destroyed) first
    undefine: bool  # it is persistent (a transient guest is gone once destroyed)
    remove: tuple[str, ...]  # the files removed: its own disks, its seed and its console log
    keep: tuple[Kept, ...]  # its disks left in place, and why


def backing_to_read(request: DeleteRequest, snapshot: model.Snapshot) -> tuple[str, ...]:
    """The other guests' file disks, whose backing files (read on the host) `plan` needs.

    Raises the refusals first (GuestIsRunning), so that a refused delete asks the host
    nothing."""
    _refuse(request, _guest(request, snapshot))
    return file_disks(sharing_files(request, snapshot))


def file_disks(guests: Sequence[model.Guest]) -> tuple[str, ...]:
    """The guests' disks that are files (sorted, each once): those a backing file is read of."""
    return tuple(sorted({d for g in guests for d in g.disks if is_file_path(d)}))


def plan(request: DeleteRequest, snapshot: model.Snapshot, backing: Collection[str]) -> DeletePlan:
    """Delete the guest: powered off first when running and `force` (else GuestIsRunning),
    undefined, its own disks (see `disks_to_remove`) and console log removed."""
    guest = _guest(request, snapshot)
    _refuse(request, guest)
    spec = snapshot.ok[request.host].spec
    choice = disks_to_remove(
        guest, sharing_files(request, snapshot), hostpaths.cache_dir(spec.image_dir), backing
    )
    return DeletePlan(
        host=request.host,
        guest=guest.name,
        destroy=guest.state.active,
        undefine=guest.persistent,
        remove=(*choice.remove, *seeds(guest), hostpaths.console_log(guest.name)),
        keep=choice.keep,
    )


def seeds(guest: model.Guest) -> tuple[str, ...]:
    """The cloud-init seeds the guest holds in its CD-ROM drives (one kept for a look after a
    failed build, or a build that did not wait): its own, by their names."""
    return tuple(m for m in guest.cdroms if hostpaths.seed_owner(m) == guest.name)


def _guest(request: DeleteRequest, snapshot: model.Snapshot) -> model.Guest:
    host = snapshot.ok[request.host]
    found = guest_named(host.guests, request.name)
    if found is None:
        raise errors.GuestNotFound(name=request.name, host=request.host)
    return found


def _refuse(request: DeleteRequest, guest: model.Guest) -> None:
    if guest.state.active and not request.force:
        raise errors.GuestIsRunning(host=request.host, name=guest.name)


def sharing_files(request: DeleteRequest, snapshot: model.Snapshot) -> list[model.Guest]:
    """The other guests whose disks may be the guest's files: those of its host, and with
    shared storage those of every other host on shared storage (less those this run has
    deleted already)."""
    host = snapshot.ok[request.host]
    spec = host.spec
    others = [(spec.name, g) for g in host.guests if g.name != request.name]
    if spec.shared_storage:
        others += [
            (name, g)
            for name, snap in snapshot.ok.items()
            if name != spec.name and snap.spec.shared_storage
            for g in snap.guests
        ]
    return [g for name, g in others if (name, g.name) not in request.deleted]


def disks_to_remove(
    guest: model.Guest, others: Sequence[model.Guest], cache_dir: str, backing: Collection[str]
) -> DiskChoice:
    """Which of the guest's disks are its own to remove.

    Kept: anything in the host's template cache (`cache_dir`), a disk another guest also
    uses (`others`), the backing file of another guest's disk (`backing`: absolute paths),
    and what is not a plain file path.
    """
    users: dict[str, str] = {}
    for other in others:
        for disk in other.disks:
            users.setdefault(posixpath.normpath(disk), other.name)
    cache = posixpath.normpath(cache_dir)
    bases = {posixpath.normpath(b) for b in backing}
    remove: list[str] = []
    keep: list[Kept] = []
    for disk in dict.fromkeys(guest.disks):  # a disk listed twice is removed once
        reason = _why_kept(disk, users, cache, bases)
        if reason is None:
            remove.append(disk)
        else:
            keep.append(Kept(disk, reason))
    return DiskChoice(remove=tuple(remove), keep=tuple(keep))


def _why_kept(disk: str, users: dict[str, str], cache: str, bases: set[str]) -> str | None:
    if not is_file_path(disk):
        return "not a file (a device, a pool volume or a network disk)"
    path = posixpath.normpath(disk)
    if posixpath.commonpath([path, cache]) == cache:
        return "a cached template base"
    if path in users:
        return f"also a disk of {users[path]}"
    if path in bases:
        return "the backing file of another guest's disk"
    return None
