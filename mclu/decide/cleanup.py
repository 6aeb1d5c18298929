"""Planning `mclu cleanup`: what interrupted runs of mclu left on a host, and what of it goes.

A run that is stopped by Ctrl-C, SIGTERM or an error undoes what it made. One that is killed
outright (SIGKILL, a crash, the controller's power) cannot, so what it makes is marked from
the start (see `mclu.act.build`):

- a guest whose mclu metadata state is "building" (defined first, before its disk) or
  "started" (started, its run killed while it waited for the guest to be ready);
- partial files: `<base>.partial-XXXXXXXX-GUEST` (a base being sent), `<disk>.mclu-new` and
  `<disk>.mclu-rebuild` (a disk being made), `<base>.partial-XXXXXXXX` (a base copied for a
  migration: it names no guest);
- a guest's cloud-init seed, `IMAGE_DIR/GUEST.mclu-seed.iso`: a run removes it once the
  guest is ready, so one whose guest's lock no run holds is a killed run's (a guest still
  running from it names it on QEMU's command line: kept while that runs, unless the guest is
  itself an interrupted build's, removed first).

Each is a leftover only when no run is at it: a guest's, or a file's owner guest's, lock
(`mclu.act.locks`) is free (a run holds it through its ssh connection, so it ends with the run),
no process on the host names the file on its command line, and a file that names no guest
has not changed for `UNOWNED_MIN_AGE` seconds.

Pure: `plan` decides from one scan (the guests and `mclu.read.storage.scan_leftovers`). A run
may take a guest between the scan and cleanup's removal, so each item's `steps` name the
re-checks its lock makes necessary: the guest re-read once its lock is held (`removal`
decides from that read) and a file removed only if no process names it at that moment.
`mclu.act.cleanup` carries the steps out.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mclu import hostpaths, model
from mclu.decide.delete import seeds
from mclu.decide.guests import guest_named

# A partial file no guest's lock covers (a base copied for a migration) is left alone until
# it has not changed for this long: its run may be between two commands.
UNOWNED_MIN_AGE = 600.0
# A disk made by the build is never older than the build's start; this much is allowed for
# the controller's and the host's clocks disagreeing.
CLOCK_SLACK = 300.0

Kind = Literal["guest", "file"]
# What removing an item does, in order:
#   lock: take the lock of the guest (a file's owner guest); held by a run: kept, with the holder
#   reread_guest: under the lock, read the guest again; no longer an interrupted build: kept
#   remove_guest: power it off, undefine it, remove its own disks (see `removal`) and console log
#   remove_file: remove the file unless a process names it at that moment (else kept)
Step = Literal["lock", "reread_guest", "remove_guest", "remove_file"]


@dataclass(frozen=True)
class Item:
    """One leftover on one host: a guest (its name) or a partial file (its path)."""

    kind: Kind
    name: str  # the guest's name, or the file's path
    reason: str  # why it is a leftover, or why it is kept
    remove: bool  # False: kept (a run is at it, or it is too new)
    owner: str | None = None  # a file's guest, whose lock covers it

    def __str__(self) -> str:
        return f"guest {self.name}" if self.kind == "guest" else self.name

    @property
    def lock(self) -> str | None:
        """The guest whose lock removal takes: the guest itself, or a file's owner."""
        return self.name if self.kind == "guest" else self.owner

    @property
    def steps(self) -> tuple[Step, ...]:
        """What removing it does (none when kept)."""
        if not self.remove:
            return ()
        lock: tuple[Step, ...] = ("lock",) if self.lock is not None else ()
        if self.kind == "guest":
            return (*lock, "reread_guest", "remove_guest")
        return (*lock, "remove_file")

    def kept(self, reason: str) -> Item:
        """This item kept after all, for `reason` (a run took it meanwhile)."""
        return Item(self.kind, self.name, reason, remove=False, owner=self.owner)


@dataclass(frozen=True)
class CleanupPlan:
    """Every leftover candidate on one host, each to remove or kept with the reason."""

    items: tuple[Item, ...] = ()

    @property
    def removable(self) -> tuple[Item, ...]:
        return tuple(i for i in self.items if i.remove)

    @property
    def kept(self) -> tuple[Item, ...]:
        return tuple(i for i in self.items if not i.remove)


def plan(
    guests: Sequence[model.Guest], scan: model.LeftoverScan, min_age: float = UNOWNED_MIN_AGE
) -> CleanupPlan:
    """The guests still "building" or "started" and the scan's partial files, each to remove
    or kept with the reason (guests by name, then files by path)."""
    locked = set(scan.locked)
    items = [
        _guest_item(g, locked)
        for g in sorted(guests, key=lambda g: g.name)
        if g.mclu is not None and g.mclu.state in model.UNFINISHED
    ]
    # The guests removed before the files: their QEMU, which names a seed, is gone by then
    # (the file's removal looks at the processes again).
    going = {i.name for i in items if i.remove}
    items += [_file_item(_freed(f, going), locked, min_age) for f in scan.partial_files]
    return CleanupPlan(tuple(items))


def _freed(file: model.PartialFile, going: set[str]) -> model.PartialFile:
    """A seed of a guest this cleanup removes as not in use: its user is that guest."""
    if file.in_use and file.owner in going and file.path.endswith(hostpaths.SEED_SUFFIX):
        return dataclasses.replace(file, in_use=False)
    return file


def _guest_item(guest: model.Guest, locked: set[str]) -> Item:
    if guest.name in locked:
        return Item("guest", guest.name, "a build is under way (its lock is held)", remove=False)
    return Item("guest", guest.name, "left by an interrupted build", remove=True)


def _file_item(file: model.PartialFile, locked: set[str], min_age: float) -> Item:
    def item(reason: str, remove: bool) -> Item:
        return Item("file", file.path, reason, remove=remove, owner=file.owner)

    if file.in_use:
        return item("in use by a process on the host", remove=False)
    if file.owner is not None:
        if file.owner in locked:
            return item(f"its run is under way (the lock of {file.owner} is held)", False)
        return item(f"partial file of an interrupted run for {file.owner}", remove=True)
    if file.age < min_age:
        return item(f"changed {file.age:.0f} s ago: a run may still be writing it", False)
    return item("partial file of an interrupted run", remove=True)


def count(
    snapshot: model.HostResults[model.HostSnapshot],
    scans: Mapping[str, model.LeftoverScan | None] | None = None,
) -> dict[str, int]:
    """Host → how many leftovers `mclu cleanup` would remove there (hosts with none left out).

    The scan is the host snapshot's own, unless `scans` has one for the host (a build reads
    it with the storage facts).
    """
    found = {}
    for name, host in snapshot.ok.items():
        scan = (scans or {}).get(name) or host.leftovers
        if scan is None:
            continue
        n = len(plan(host.guests, scan).removable)
        if n:
            found[name] = n
    return found


def note(counts: Mapping[str, int]) -> str | None:
    """The one line read and write commands print when leftovers exist, else None."""
    if not counts:
        return None
    total = sum(counts.values())
    if len(counts) == 1:
        where = next(iter(counts))
    else:
        where = ", ".join(f"{host} ({n})" for host, n in counts.items())
    noun = "leftover" if total == 1 else "leftovers"
    them = "it" if total == 1 else "them"
    return f"note: {total} {noun} of interrupted runs on {where} (mclu cleanup removes {them})"


# --- under the guest's lock: the "reread_guest" and "remove_guest" steps -----------------------


@dataclass(frozen=True)
class GuestRemoval:
    """Removing an interrupted build's guest, decided under its lock from a fresh read."""

    name: str
    destroy: bool  # it runs: powered off first
    undefine: bool  # it is persistent (a transient guest is gone once destroyed)
    disks: tuple[str, ...]  # its own disks that its build made
    files: tuple[str, ...]  # removed: those disks, its seed and its console log


def unfinished(guests: Sequence[model.Guest], name: str) -> model.Guest | None:
    """The guest `name` among `guests` (read under its lock) while it is still an interrupted
    build; None when it is gone or a run has finished it meanwhile."""
    guest = guest_named(guests, name)
    if guest is None or guest.mclu is None or guest.mclu.state not in model.UNFINISHED:
        return None
    return guest


def removal(
    guest: model.Guest, candidates: Sequence[str], ctimes: Mapping[str, float]
) -> GuestRemoval:
    """What removing the guest does: of `candidates` (its disks that are its own, see
    `mclu.decide.delete.disks_to_remove`), those that exist (`ctimes`: their inode change
    times, host clock) and are no older than its build (a file of the same name that was there
    before it, which its `ln` refused to replace, is not the build's to remove)."""
    built = guest.mclu.built if guest.mclu is not None else ""
    disks = tuple(d for d in candidates if d in ctimes and disk_made_by_build(ctimes[d], built))
    return GuestRemoval(
        name=guest.name,
        destroy=guest.state.active,
        undefine=guest.persistent,
        disks=disks,
        files=(*disks, *seeds(guest), hostpaths.console_log(guest.name)),
    )


def disk_made_by_build(ctime: float, built: str) -> bool:
    """Whether a disk whose inode changed at `ctime` (host clock) may be the build's own:
    not older than the build's start (its metadata's `built`), give or take CLOCK_SLACK."""
    try:
        started = (
            datetime.datetime.strptime(built, "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=datetime.UTC)
            .timestamp()
        )
    except ValueError:
        return False  # no build time: keep the disk rather than guess
    return ctime >= started - CLOCK_SLACK
