"""What interrupted runs of mclu left on a host, and removing it (`mclu cleanup`).

A run that is stopped by Ctrl-C, SIGTERM or an error undoes what it made. One that is killed
outright (SIGKILL, a crash, the controller's power) cannot, so what it makes is marked from
the start (see `mclu.act.build`):

- a guest whose mclu metadata state is "building" (defined first, before its disk) or
  "started" (started, its run killed while it waited for the guest to be ready);
- partial files: `<base>.partial-XXXXXXXX-GUEST` (a base being sent), `<disk>.mclu-new` and
  `<disk>.mclu-rebuild` (a disk being made), `<base>.partial-XXXXXXXX` (a base copied for a
  migration: it names no guest).

Each is a leftover only when no run is at it: a guest's, or a file's owner guest's, lock
(`mclu.act.locks`) is free (a run holds it through its ssh connection, so it ends with the run),
no process on the host names the file on its command line, and a file that names no guest
has not changed for `UNOWNED_MIN_AGE` seconds. `plan` decides from one scan (pure);
`execute` takes each guest's lock before it touches anything, re-reads the guest under it,
and skips, with the holder, what a run has meanwhile taken.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mclu import errors, hostpaths, model
from mclu.act import locks
from mclu.decide import delete as delete_plan
from mclu.decide.guests import is_file_path
from mclu.hosts.session import Session
from mclu.read import storage

# A partial file no guest's lock covers (a base copied for a migration) is left alone until
# it has not changed for this long: its run may be between two commands.
UNOWNED_MIN_AGE = 600.0
# A disk made by the build is never older than the build's start; this much is allowed for
# the controller's and the host's clocks disagreeing.
CLOCK_SLACK = 300.0

Kind = Literal["guest", "file"]


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


@dataclass(frozen=True)
class Done:
    """What cleanup did (or, with --dry-run, would do) on one host."""

    removed: tuple[Item, ...] = ()
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # guest → its files
    kept: tuple[Item, ...] = ()
    failed: tuple[tuple[Item, str], ...] = ()  # items whose removal failed, and why


# --- deciding (pure) -----------------------------------------------------------------------------


def plan(
    guests: Sequence[model.Guest], scan: model.LeftoverScan, min_age: float = UNOWNED_MIN_AGE
) -> list[Item]:
    """Every leftover candidate on a host, each to remove or kept with the reason."""
    locked = set(scan.locked)
    items = [
        _guest_item(g, locked)
        for g in sorted(guests, key=lambda g: g.name)
        if g.mclu is not None and g.mclu.state in model.UNFINISHED
    ]
    items += [_file_item(f, locked, min_age) for f in scan.partial_files]
    return items


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


def removable(items: Sequence[Item]) -> list[Item]:
    return [i for i in items if i.remove]


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
        n = len(removable(plan(host.guests, scan)))
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


# --- carrying it out ---------------------------------------------------------------------------


async def execute(session: Session, spec: model.HostSpec, items: Sequence[Item]) -> Done:
    """Remove the removable items on the host, each under its guest's lock; what a run has
    meanwhile taken (lock held, file in use, guest no longer building) is kept and said so."""
    removed: list[Item] = []
    files: dict[str, tuple[str, ...]] = {}
    kept = [i for i in items if not i.remove]
    failed: list[tuple[Item, str]] = []
    for item in removable(items):
        lock_name = item.name if item.kind == "guest" else item.owner
        try:
            async with _locked(session, spec, lock_name):
                if item.kind == "guest":
                    gone = await _remove_guest(session, spec, item.name)
                    if gone is None:
                        kept.append(_kept(item, "no longer an interrupted build"))
                        continue
                    files[item.name] = gone
                elif not await _remove_unused(session, item.name):
                    kept.append(_kept(item, "in use by a process on the host"))
                    continue
            removed.append(item)
        except errors.GuestLocked as e:
            kept.append(_kept(item, f"a run is at it: locked by {e.holder}"))
        except errors.MCLUError as e:
            failed.append((item, str(e)))
    return Done(removed=tuple(removed), files=files, kept=tuple(kept), failed=tuple(failed))


def _kept(item: Item, reason: str) -> Item:
    return Item(item.kind, item.name, reason, remove=False, owner=item.owner)


@contextlib.asynccontextmanager
async def _locked(session: Session, spec: model.HostSpec, name: str | None) -> AsyncIterator[None]:
    if name is None:
        yield
        return
    async with locks.guest(session, spec, name, "cleanup"):
        yield


async def _remove_guest(
    session: Session, spec: model.HostSpec, name: str
) -> tuple[str, ...] | None:
    """Under the guest's lock: power it off, undefine it, remove its own disks (made since its
    build began) and console log. None when it is no longer an interrupted build."""
    guests = await session.guests()
    guest = next((g for g in guests if g.name == name), None)
    if guest is None or guest.mclu is None or guest.mclu.state not in model.UNFINISHED:
        return None
    others = [g for g in guests if g.name != name]
    other_files = sorted({d for g in others for d in g.disks if is_file_path(d)})
    backing = await storage.backing_files(session, other_files)
    choice = delete_plan.disks_to_remove(
        guest, others, hostpaths.cache_dir(spec.image_dir), backing
    )
    disks = await _made_by_build(session, choice.remove, guest.mclu.built)
    if guest.state.active:
        with contextlib.suppress(errors.LibvirtCallFailed):  # stopped meanwhile
            await session.destroy(name)
    if guest.persistent:
        with contextlib.suppress(errors.GuestNotFound):
            await session.undefine(name)
    files = (*disks, hostpaths.console_log(name))
    await session.run(["rm", "-f", "--", *files])
    return tuple(disks)


async def _made_by_build(session: Session, disks: Sequence[str], built: str) -> list[str]:
    """The disks that exist and are no older than the build (a file of the same name that
    was there before it, which its `ln` refused to replace, is not the build's to remove)."""
    if not disks:
        return []
    done = await session.run(
        ["sh", "-c", 'for f; do [ -e "$f" ] && stat -c "%Z %n" -- "$f"; done; true', "sh", *disks]
    )
    own = []
    for line in done.stdout.decode(errors="replace").splitlines():
        ctime, _, path = line.partition(" ")
        if ctime.isdigit() and path in disks and disk_made_by_build(float(ctime), built):
            own.append(path)
    return own


# Removes each path read from stdin that no process names on its command line (the paths come
# on stdin so that this script's own command line does not name them); prints those removed.
REMOVE_UNUSED = r"""while IFS= read -r f; do
  [ -e "$f" ] || continue
  if printf '%s\n' "$f" | grep -qaF -f - /proc/[0-9]*/cmdline 2>/dev/null; then continue; fi
  rm -f -- "$f" && printf '%s\n' "$f"
done
true
"""


async def _remove_unused(session: Session, path: str) -> bool:
    """Remove the partial file unless a process names it now; whether it is gone."""
    done = await session.run(["sh", "-c", REMOVE_UNUSED], input=f"{path}\n".encode())
    gone = done.stdout.decode(errors="replace").splitlines()
    if path in gone:
        return True
    exists = await session.run(["test", "-e", path], check=False)
    return exists.exit_status != 0  # gone already (its run renamed or removed it): fine


def item_json(item: Item, files: Mapping[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    key = "name" if item.kind == "guest" else "path"
    found: dict[str, Any] = {"kind": item.kind, key: item.name, "reason": item.reason}
    if item.kind == "guest" and files is not None:
        found["files"] = list(files.get(item.name, ()))
    return found


def describe_removed(host: str, item: Item, files: Mapping[str, tuple[str, ...]], verb: str) -> str:
    extra = ""
    if item.kind == "guest" and files.get(item.name):
        extra = f" and {', '.join(files[item.name])}"
    return f"{host}: {verb} {item}{extra} ({item.reason})"
