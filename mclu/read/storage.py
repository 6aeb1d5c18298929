"""A host's image directory as a build sees it: free bytes, the template bases cached there,
and what interrupted runs of mclu may have left (partial files, locks held).

`read` and `scan_leftovers` ask the host, one command each (its command lines are in
`mclu.hosts.commands`); `cache_use` reads what `templates prune` decides on. The parsers are
pure.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from collections.abc import Mapping, Sequence

from mclu import errors, hostpaths, model
from mclu.config import fields
from mclu.decide import prune
from mclu.hosts import commands
from mclu.hosts.session import Session

log = logging.getLogger(__name__)


async def read(session: Session, spec: model.HostSpec) -> model.StorageFacts:
    """Free space of the host's image directory, the bases in its cache, and the leftovers
    of interrupted runs (see `scan_leftovers`), all in one command."""
    done = await session.run(commands.storage_scan(spec.image_dir), check=False)
    sections = parse_sections(done.stdout.decode(errors="replace"))
    status = sections.get("dfstatus", ["1"])
    df = "\n".join(sections.get("df", []))
    if done.exit_status != 0 or status != ["0"]:
        raise errors.HostCommandFailed(
            host=spec.name,
            command=f"df --output=avail -B1 {spec.image_dir}",
            exit_status=int(status[0]) if status and status[0].isdigit() else done.exit_status,
            stderr=df + done.stderr.decode(errors="replace"),
        )
    return model.StorageFacts(
        image_dir=spec.image_dir,
        free=parse_df_avail(df),
        cached_bases=parse_names("\n".join(sections.get("cache", []))),
        leftovers=parse_scan(sections),
        files=tuple(sorted(sections["files"])) if "files" in sections else None,
    )


# --- leftovers of interrupted runs -------------------------------------------------------------


async def scan_leftovers(session: Session, spec: model.HostSpec) -> model.LeftoverScan:
    """What interrupted runs may have left on the host, in one command (raises HostError)."""
    done = await session.run(commands.leftover_scan(spec.image_dir), check=False)
    if done.exit_status != 0:
        raise errors.HostCommandFailed(
            host=spec.name,
            command="scan for leftovers",
            exit_status=done.exit_status,
            stderr=done.stderr.decode(errors="replace"),
        )
    return parse_scan(parse_sections(done.stdout.decode(errors="replace")))


async def scan_quietly(session: Session, spec: model.HostSpec) -> model.LeftoverScan | None:
    """`scan_leftovers` for read commands: None when the host cannot say (no shell, an error);
    the command's answer does not depend on it."""
    try:
        return await scan_leftovers(session, spec)
    except errors.HostError as e:
        log.debug("%s: no scan for leftovers: %s", spec.name, e)
        return None


def parse_sections(text: str) -> dict[str, list[str]]:
    """`@name [value]` lines start a section; `@now 5` is the section "now" holding "5"."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            name, _, value = line[1:].partition(" ")
            current = sections.setdefault(name, [])
            if value:
                current.append(value)
        elif current is not None and line.strip():
            current.append(line)
    return sections


def parse_scan(sections: Mapping[str, list[str]]) -> model.LeftoverScan:
    """The scan's sections (see `commands.SCAN_SCRIPT`) → LeftoverScan: ages by the host's clock."""
    now_text = (sections.get("now") or ["0"])[0]
    now = float(now_text) if now_text.replace(".", "", 1).isdigit() else 0.0
    in_use = set(sections.get("inuse", []))
    files = []
    for line in sections.get("partial", []):
        mtime, _, path = line.partition(" ")
        try:
            age = max(now - float(mtime), 0.0)
        except ValueError:
            continue
        files.append(
            model.PartialFile(path=path, age=age, in_use=path in in_use, owner=owner_of(path))
        )
    return model.LeftoverScan(
        partial_files=tuple(sorted(files, key=lambda f: f.path)),
        locked=held_locks(sections.get("locks", []), sections.get("proclocks", [])),
    )


_LOCK_ID = re.compile(r"^([0-9a-f]+):([0-9a-f]+):(\d+)$")


def held_locks(lock_files: list[str], proc_locks: list[str]) -> tuple[str, ...]:
    """Guests whose lock file (`DEV INODE NAME.lock` lines) the kernel lists as locked
    (/proc/locks lines `N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF`; `->` lines are
    waiters). A file on another device with the same inode counts as held: when unsure, a
    leftover is kept, never a lock holder's guest removed."""
    held: set[int] = set()
    for line in proc_locks:
        fields = line.split()
        if "->" in fields:
            continue
        for field in fields:
            found = _LOCK_ID.match(field)
            if found:
                held.add(int(found.group(3)))
    names = []
    for line in lock_files:
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1].isdigit() and int(parts[1]) in held:
            names.append(parts[2].removesuffix(hostpaths.LOCK_SUFFIX))
    return tuple(sorted(names))


_PARTIAL_OWNER = re.compile(re.escape(hostpaths.PARTIAL_INFIX) + r"[0-9a-f]{8}-(?P<owner>.+)$")
_DISK_SUFFIXES = hostpaths.DISK_SUFFIXES
_DISK_EXTENSIONS = (".qcow2", ".img", ".raw")


def owner_of(path: str) -> str | None:
    """The guest whose lock covers a partial file, from its name; None when it names none.

    `BASE.partial-XXXXXXXX-GUEST` (a base being sent for GUEST), `GUEST.qcow2.mclu-new` /
    `.mclu-rebuild` (its disk being made), `GUEST.mclu-seed.iso` (its cloud-init seed). A
    plain `BASE.partial-XXXXXXXX` (a base copied for a migration) has no owner.
    """
    name = posixpath.basename(path)
    found = _PARTIAL_OWNER.search(name)
    if found:
        owner = found.group("owner")
    elif name.endswith(hostpaths.SEED_SUFFIX):
        owner = hostpaths.seed_owner(name) or ""
    elif name.endswith(_DISK_SUFFIXES):
        owner = name
        while owner.endswith(_DISK_SUFFIXES):
            owner = next(owner.removesuffix(s) for s in _DISK_SUFFIXES if owner.endswith(s))
        stem, ext = posixpath.splitext(owner)
        owner = stem if ext in _DISK_EXTENSIONS else owner
    else:
        return None
    return owner if fields.GUEST_NAME.fullmatch(owner) else None


def parse_df_avail(text: str) -> int:
    """Bytes available from `df --output=avail -B1 DIR` (a header line, then the number)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) != 2 or not lines[1].isdigit():
        raise ValueError(f"unexpected df output: {text!r}")
    return int(lines[1])


def parse_names(text: str) -> tuple[str, ...]:
    """Sorted file names, one per line; blank lines ignored."""
    return tuple(sorted(line for line in text.splitlines() if line.strip()))


# --- what uses the host's template cache (`mclu templates prune`) ------------------------------


async def cache_use(session: Session, spec: model.HostSpec) -> prune.CacheUse:
    """The bases in the host's cache with their ages, and the backing files of its disks:
    its guests' and every qcow2 file in its image directory (a disk of no guest yet, such as
    a build's, is an overlay too)."""
    guests = await session.guests()
    ages = await cached_bases_with_age(session, spec)
    disks = {*await overlay_candidates(session, spec), *(d for g in guests for d in g.disks)}
    used = await backing_files(session, sorted(disks))
    return prune.CacheUse(hostpaths.cache_dir(spec.image_dir), ages, frozenset(used))


async def cached_bases_with_age(session: Session, spec: model.HostSpec) -> dict[str, float]:
    """Cached base file name → seconds since it was last modified, by the host's clock."""
    done = await session.run(commands.base_ages(hostpaths.cache_dir(spec.image_dir)), check=False)
    return parse_ages(done.stdout.decode())


async def backing_files(session: Session, disks: Sequence[str]) -> set[str]:
    """Every backing file (absolute) that any of `disks` is a qcow2 overlay on."""
    if not disks:
        return set()
    done = await session.run(commands.backing_info(disks), check=False)
    return parse_backing(done.stdout.decode())


async def overlay_candidates(session: Session, spec: model.HostSpec) -> list[str]:
    """qcow2 files in the image directory: overlays a cached base may be under."""
    done = await session.run(commands.qcow2_files(spec.image_dir), check=False)
    return list(parse_names(done.stdout.decode()))


async def change_times(session: Session, paths: Sequence[str]) -> dict[str, float]:
    """Path → the time its inode last changed (seconds, host clock), for those that exist."""
    if not paths:
        return {}
    done = await session.run(commands.change_times(paths))
    return parse_change_times(done.stdout.decode(errors="replace"), paths)


def parse_change_times(text: str, paths: Sequence[str]) -> dict[str, float]:
    """`CTIME PATH` lines → path → ctime, for the paths asked about only."""
    asked = set(paths)
    found = {}
    for line in text.splitlines():
        ctime, _, path = line.partition(" ")
        if ctime.isdigit() and path in asked:
            found[path] = float(ctime)
    return found


def parse_ages(text: str) -> dict[str, float]:
    """`date +%s` then `NAME MTIME` lines → name → age in seconds."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip().isdigit():
        return {}
    now = float(lines[0])
    ages = {}
    for line in lines[1:]:
        name, _, mtime = line.rpartition(" ")
        if name:
            ages[name] = now - float(mtime)
    return ages


def parse_backing(text: str) -> set[str]:
    """Backing files named by concatenated `qemu-img info --output=json` documents."""
    decoder = json.JSONDecoder()
    found, pos = set(), 0
    text = text.strip()
    while pos < len(text):
        doc, end = decoder.raw_decode(text, pos)
        backing = doc.get("full-backing-filename") or doc.get("backing-filename")
        if backing:
            found.add(str(backing))
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return found
