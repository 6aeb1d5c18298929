"""Live migration: where a running guest goes (pure), and moving it there (through sessions).

A guest's disks are local files unless both hosts say `shared_storage = true`. For local
disks the destination gets, before libvirt is asked, what libvirt will not make itself:
the template base the guest's qcow2 overlay is backed by (from the controller's cache, else
copied from the source host through this machine, sparse, over NBD) and an empty overlay of
the same path, size and backing file. libvirt then copies only the overlay's data
(VIR_MIGRATE_NON_SHARED_INC) while the guest runs. Anything that fails undoes what this
migration made, newest first: the overlay, a base sent only for it (if no other disk uses
it). libvirt itself leaves the guest running at its source when a migration fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import posixpath
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mclu import errors, hostpaths, images, sizes
from mclu.act import locks
from mclu.act.build import Reporter, Undo
from mclu.decide import placement
from mclu.hosts.session import MigrationProgress, MigrationTarget, Session
from mclu.images import nbd
from mclu.model import Guest, HostSpec, Snapshot, StorageFacts
from mclu.read import storage

MIN_RATE = 1 << 20  # bytes per second below which a migration counts as hung
SERVER_START_TIMEOUT = 10.0  # seconds for qemu-nbd to listen


@dataclass(frozen=True)
class Disk:
    """One disk file of a guest, as `qemu-img info --backing-chain` on its host describes it."""

    path: str
    format: str  # "qcow2", "raw"
    virtual_size: int
    data_bytes: int  # allocated bytes of this file alone (what an incremental copy moves)
    backing: str | None = None  # the backing file's absolute path
    backing_format: str | None = None
    backing_bytes: int = 0  # allocated bytes of the backing file


@dataclass(frozen=True)
class Move:
    """One guest's planned migration."""

    guest: Guest
    source: str
    dest: str
    reason: str  # why this destination, for people
    shared: bool  # both hosts share the guest's storage: no disk work, no storage copy
    disks: tuple[Disk, ...] = ()  # empty when shared

    @property
    def bases(self) -> tuple[Disk, ...]:
        """One disk per distinct backing file (what the destination must hold)."""
        seen: dict[str, Disk] = {}
        for disk in self.disks:
            if disk.backing is not None:
                seen.setdefault(disk.backing, disk)
        return tuple(seen.values())


@dataclass(frozen=True)
class NotMoved:
    """A guest a drain leaves where it is, and why."""

    guest: Guest
    source: str
    reason: str


@dataclass(frozen=True)
class Moved:
    name: str
    source: str
    dest: str
    seconds: float


# --- pure: reading disks, choosing destinations ------------------------------------------------


def parse_disk_info(path: str, text: str) -> Disk:
    """`qemu-img info --backing-chain --output=json` (a JSON list, top image first) → Disk."""
    chain = json.loads(text)
    top = chain[0] if isinstance(chain, list) else chain
    backing = top.get("full-backing-filename") or top.get("backing-filename")
    below = chain[1] if isinstance(chain, list) and len(chain) > 1 else {}
    return Disk(
        path=path,
        format=str(top["format"]),
        virtual_size=int(top["virtual-size"]),
        data_bytes=int(top.get("actual-size", 0)),
        backing=str(backing) if backing else None,
        backing_format=top.get("backing-filename-format"),
        backing_bytes=int(below.get("actual-size", 0)),
    )


def shared(source: HostSpec, dest: HostSpec) -> bool:
    """Whether a guest's disks stay where they are: both hosts see the same storage."""
    return source.shared_storage and dest.shared_storage


def need(guest: Guest, disks: Sequence[Disk], dest: placement.Candidate) -> placement.Need:
    """What the guest takes from `dest`: its memory and vCPUs, its overlays' data, and the
    data of each base `dest` does not have cached yet."""
    cached = set(dest.storage.cached_bases)
    bases = {
        d.backing: d.backing_bytes
        for d in disks
        if d.backing is not None and posixpath.basename(d.backing) not in cached
    }
    return placement.Need(
        memory=guest.memory,
        vcpus=guest.vcpus,
        disk=sum(d.data_bytes for d in disks) + sum(bases.values()),
    )


def candidates(
    snapshot: Snapshot, storage_facts: Mapping[str, StorageFacts], source: str
) -> list[placement.Candidate]:
    """Every host that answered, except the source; a host sharing the source's storage needs
    no storage facts (nothing is written to it)."""
    found = []
    src = snapshot.ok[source].spec
    for name in snapshot.order:
        host = snapshot.ok.get(name)
        if name == source or host is None:
            continue
        facts = storage_facts.get(name)
        if facts is None and shared(src, host.spec):
            facts = StorageFacts(image_dir=host.spec.image_dir, free=0)
        if facts is not None:
            found.append(placement.Candidate(host, facts))
    return found


def choose(
    guest: Guest,
    source: str,
    disks: Sequence[Disk],
    snapshot: Snapshot,
    storage_facts: Mapping[str, StorageFacts],
    *,
    to: str | None = None,
    already: Mapping[str, placement.Need] | None = None,
    inventory_path: str = "the inventory",
) -> Move:
    """The destination of one running guest: `to` if it has room, else the host with the most.

    Raises GuestNotRunning, UnknownHost, BadDestination (to is the source), the destination's
    HostError when it did not answer, HostTooSmall, NoCapacity.
    """
    if not guest.state.active:
        raise errors.GuestNotRunning(source, guest.name, guest.state.value)
    if to is not None:
        if to not in snapshot.order:
            raise errors.UnknownHost(to, inventory_path, snapshot.order)
        if to == source:
            raise errors.BadDestination(to, f"{guest.name} already runs on {to}")
        if to in snapshot.failed:
            raise snapshot.failed[to]
    found = candidates(snapshot, storage_facts, source)
    if to is not None and not any(c.name == to for c in found):
        raise errors.HostError(to, "its image directory could not be read")
    placed = dict(already or {})
    # Each host's need differs (a base it lacks): fold that into what it already holds.
    extra = {c.name: need(guest, disks, c) for c in found}
    own = placement.Need(memory=guest.memory, vcpus=guest.vcpus, disk=0)
    room = {
        c.name: placed.get(c.name, placement.NOTHING)
        + placement.Need(0, 0, extra[c.name].disk, guests=0)
        for c in found
    }
    unasked = [h for h in snapshot.order if h != source and h not in {c.name for c in found}]
    chosen = placement.place(
        own, found, pinned=to, already=room, guest=guest.name, unreachable=unasked
    )
    src = snapshot.ok[source].spec
    is_shared = shared(src, snapshot.ok[chosen.host].spec)
    return Move(
        guest=guest,
        source=source,
        dest=chosen.host,
        reason=chosen.reason,
        shared=is_shared,
        disks=() if is_shared else tuple(disks),
    )


def plan_drain(
    source: str,
    snapshot: Snapshot,
    storage_facts: Mapping[str, StorageFacts],
    disks: Mapping[str, Sequence[Disk]],
) -> list[Move | NotMoved]:
    """Where each guest of `source` goes, by capacity, guests spread and never overcommitted.

    Guests in the order of most memory first (the hardest to place go while there is most
    room). A shut-off guest, or one that fits nowhere, is NotMoved with the reason.
    """
    host = snapshot.ok[source]
    already: dict[str, placement.Need] = {}
    bases_sent: dict[str, set[str]] = {}
    plan: list[Move | NotMoved] = []
    for guest in sorted(host.guests, key=lambda g: (-g.memory, g.name)):
        if not guest.state.active:
            plan.append(
                NotMoved(
                    guest,
                    source,
                    f"{guest.state.value}: only running guests "
                    "are live-migrated; start it, or move its disk "
                    "and definition by hand",
                )
            )
            continue
        if guest.name not in disks:
            plan.append(NotMoved(guest, source, "its disks could not be read"))
            continue
        facts = _with_bases(storage_facts, bases_sent)
        try:
            move = choose(guest, source, disks[guest.name], snapshot, facts, already=already)
        except errors.MCLUError as e:
            plan.append(NotMoved(guest, source, str(e)))
            continue
        dest = next(c for c in candidates(snapshot, facts, source) if c.name == move.dest)
        already[move.dest] = already.get(move.dest, placement.NOTHING) + need(
            guest, move.disks, dest
        )
        bases_sent.setdefault(move.dest, set()).update(
            posixpath.basename(d.backing) for d in move.bases if d.backing
        )
        plan.append(move)
    return plan


def _with_bases(
    facts: Mapping[str, StorageFacts], sent: Mapping[str, set[str]]
) -> dict[str, StorageFacts]:
    """Storage facts as they will be once the bases this plan sends have arrived."""
    return {
        h: StorageFacts(f.image_dir, f.free, tuple(sorted({*f.cached_bases, *sent.get(h, set())})))
        for h, f in facts.items()
    }


def timeout_for(move: Move) -> float:
    """A bound on the migration: only a hung one takes longer."""
    return 120.0 + (move.guest.memory + sum(d.data_bytes for d in move.disks)) / MIN_RATE


def target(move: Move, dest: HostSpec) -> MigrationTarget:
    """The destination as the source's libvirtd reaches it (peer to peer, over ssh)."""
    user = f"{dest.user}@" if dest.user else ""
    port = f":{dest.port}" if dest.port not in (None, 22) else ""
    return MigrationTarget(
        host=dest.name,
        uri=f"qemu+ssh://{user}{dest.address}{port}/system",
        copy_storage=not move.shared,
    )


# --- reading a guest's disks on its host -------------------------------------------------------

_INFO = 'for f; do qemu-img info -U --backing-chain --output=json -- "$f" || exit 1; done'


async def read_disks(session: Session, guest: Guest) -> tuple[Disk, ...]:
    """Every disk of the guest, read on its host; raises HostError for a disk that is not a
    local file (it would need shared storage)."""
    for path in guest.disks:
        if not path.startswith("/"):
            raise errors.HostError(
                session.host,
                f"{guest.name}: disk {path} is not a file: "
                "live migration needs shared storage for it",
            )
    if not guest.disks:
        return ()
    done = await session.run(["sh", "-c", _INFO, "sh", *guest.disks])
    return tuple(
        parse_disk_info(path, text)
        for path, text in zip(guest.disks, _json_documents(done.stdout.decode()), strict=True)
    )


def _json_documents(text: str) -> list[str]:
    """Concatenated JSON documents, each as its own text."""
    decoder = json.JSONDecoder()
    found, pos, text = [], 0, text.strip()
    while pos < len(text):
        _, end = decoder.raw_decode(text, pos)
        found.append(text[pos:end])
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return found


# --- carrying out one move ----------------------------------------------------------------------


async def execute(
    move: Move,
    sessions: Mapping[str, Session],
    specs: Mapping[str, HostSpec],
    cache_dir: Path,
    reporter: Reporter,
) -> Moved:
    """Migrate the guest; all or nothing. Raises MigrationFailed naming the step, and
    GuestLocked when another mclu run works on the guest (or on its name at the destination)."""
    name = move.guest.name
    async with (
        locks.guest(sessions[move.source], specs[move.source], name, "migrate"),
        locks.guest(sessions[move.dest], specs[move.dest], name, "migrate"),
    ):
        return await _execute(move, sessions, specs, cache_dir, reporter)


async def _execute(
    move: Move,
    sessions: Mapping[str, Session],
    specs: Mapping[str, HostSpec],
    cache_dir: Path,
    reporter: Reporter,
) -> Moved:
    source, dest = sessions[move.source], sessions[move.dest]
    started = time.monotonic()
    undo = Undo()
    try:
        if not move.shared:
            await _prepare_destination(
                move, source, dest, specs[move.dest], cache_dir, undo, reporter
            )
        reporter.step(move.source, move.guest.name, f"migrating to {move.dest}")
        key = f"{move.guest.name} → {move.dest}"

        def progress(p: MigrationProgress) -> None:
            reporter.transfer(key, p.processed, p.processed + p.remaining)

        await _step(
            move,
            "migrate",
            source.migrate(
                move.guest.name,
                target(move, specs[move.dest]),
                progress=progress,
                timeout=timeout_for(move),
            ),
        )
    except BaseException:
        await asyncio.shield(undo.run(reporter))
        raise
    seconds = time.monotonic() - started
    await _keep_autostart(move, dest, reporter)
    await _remove_source_disks(move, source, reporter)
    return Moved(move.guest.name, move.source, move.dest, seconds)


async def _keep_autostart(move: Move, dest: Session, reporter: Reporter) -> None:
    """libvirt does not carry a guest's autostart flag to the destination: set it there. A
    failure is only reported: the migration itself has succeeded."""
    if not move.guest.autostart:
        return
    try:
        await dest.set_autostart(move.guest.name, True)
    except errors.MCLUError as e:
        reporter.step(move.dest, move.guest.name, f"could not mark it autostart: {e}")


async def _remove_source_disks(move: Move, source: Session, reporter: Reporter) -> None:
    """The source's copies of the guest's own disks, and its console log there: libvirt
    leaves them, the guest now writes to the destination's, and `delete` (which finds the
    guest on the destination) could never reach them. Bases stay cached. A failure here is
    only reported: the migration itself has succeeded."""
    for path in (*(d.path for d in move.disks), hostpaths.console_log(move.guest.name)):
        try:
            await _remove(source, path)
        except errors.MCLUError as e:
            reporter.step(move.source, move.guest.name, f"could not remove {path}: {e}")


async def _prepare_destination(
    move: Move,
    source: Session,
    dest: Session,
    spec: HostSpec,
    cache_dir: Path,
    undo: Undo,
    reporter: Reporter,
) -> None:
    paths = [d.path for d in move.disks] + [d.backing for d in move.bases if d.backing]
    present = await _existing(dest, paths)
    for disk in move.disks:
        if disk.path in present:
            raise errors.MigrationFailed(
                move.guest.name,
                move.source,
                move.dest,
                "check disks",
                f"{disk.path} already exists there",
            )
    for disk in move.bases:
        assert disk.backing is not None
        if disk.backing in present:
            continue
        reporter.step(move.dest, move.guest.name, f"sending {posixpath.basename(disk.backing)}")
        await _step(move, "send template base", _send_base(source, dest, disk, cache_dir, reporter))
        undo.push(
            f"remove {disk.backing} on {dest.host} if unused",
            functools.partial(_remove_base_if_unused, dest, spec, disk.backing),
        )
    for disk in move.disks:
        reporter.step(move.dest, move.guest.name, f"creating {disk.path}")
        await _step(move, "create disk", _create_disk(dest, disk))
        undo.push(f"remove {disk.path} on {dest.host}", functools.partial(_remove, dest, disk.path))


async def _step(move: Move, step: str, work: Awaitable[object]) -> None:
    """Run one step; a failure becomes MigrationFailed naming the step and both hosts."""
    try:
        await work
    except errors.MigrationFailed:
        raise
    except errors.MCLUError as e:
        raise errors.MigrationFailed(move.guest.name, move.source, move.dest, step, str(e)) from e


async def _existing(session: Session, paths: Sequence[str]) -> set[str]:
    done = await session.run(
        ["sh", "-c", 'for f; do [ -e "$f" ] && echo "$f"; done; true', "sh", *paths]
    )
    return set(done.stdout.decode().splitlines())


async def _create_disk(session: Session, disk: Disk) -> None:
    """An empty image of the disk's path, format, size and backing file (libvirt fills it).

    Made aside and linked into place: `ln` never replaces a file that appeared meanwhile.
    """
    temp = f"{disk.path}.mclu-new"
    argv = ["qemu-img", "create", "-q", "-f", disk.format]
    if disk.backing is not None:
        argv += ["-b", disk.backing, "-F", disk.backing_format or "raw"]
    argv += [temp, str(disk.virtual_size)]
    try:
        await session.run(["mkdir", "-p", "--", posixpath.dirname(disk.path)])
        await session.run(argv)
        await session.run(["ln", "--", temp, disk.path])
    finally:
        await session.run(["rm", "-f", "--", temp], check=False)


async def _remove(session: Session, path: str) -> None:
    await session.run(["rm", "-f", "--", path])


async def _remove_base_if_unused(session: Session, spec: HostSpec, base: str) -> None:
    """Remove a base this migration sent, unless a disk there has come to use it."""
    guests = await session.guests()
    disks = {
        *await storage.overlay_candidates(session, spec),
        *(d for g in guests for d in g.disks),
    }
    if base not in await storage.backing_files(session, sorted(disks)):
        await _remove(session, base)


# --- the template base: from the controller's cache, else host to host -----------------------


async def _send_base(
    source: Session, dest: Session, disk: Disk, cache_dir: Path, reporter: Reporter
) -> None:
    assert disk.backing is not None
    await dest.run(["mkdir", "-p", "--", posixpath.dirname(disk.backing)])
    key = f"{dest.host}:{posixpath.basename(disk.backing)}"
    local = cache_dir / posixpath.basename(disk.backing)
    if local.is_file() and disk.backing_format in (None, "raw"):
        size = max(local.stat().st_size, 0)

        def progress(done: int) -> None:
            reporter.transfer(key, done, size)

        await images.send_atomically(
            images.get(images.DEFAULT), dest, local, disk.backing, size, progress=progress
        )
        return
    await copy_between_hosts(
        source, dest, disk.backing, lambda done: reporter.transfer(key, done, disk.backing_bytes)
    )


async def copy_between_hosts(
    source: Session, dest: Session, path: str, progress: images.Progress | None = None
) -> None:
    """Copy the raw file `path` from source to the same path on dest, sparse, through here.

    qemu-nbd serves it read-only on the source and serves a new partial file on dest; both
    sockets are forwarded here and nbdcopy copies only the data extents. The partial file is
    renamed into place once synced, and removed on any failure.
    """
    nbdcopy = shutil.which("nbdcopy")
    if nbdcopy is None:
        raise errors.LocalToolMissing("nbdcopy", "copying a template base between hosts")
    size = int((await source.run(["stat", "-c", "%s", "--", path])).stdout.decode())
    partial = images.partial_name(path)
    try:
        await dest.run(
            ["sh", "-c", ': > "$1" && truncate -s "$2" -- "$1"', "sh", partial, str(size)]
        )
        async with (
            _served(source, ["--read-only", path]) as src,
            _served(dest, ["--cache=writeback", partial]) as dst,
        ):
            await nbd.run_nbdcopy(
                [nbdcopy, "--target-is-zero", "--flush", nbd.nbd_uri(src), nbd.nbd_uri(dst)],
                size,
                progress,
                dest.host,
            )
        await dest.run(
            [
                "sh",
                "-c",
                'sync -- "$1" && mv -f -T -- "$1" "$2" && sync -- "$3"',
                "sh",
                partial,
                path,
                posixpath.dirname(path),
            ]
        )
    except BaseException:
        with contextlib.suppress(errors.HostError):
            await dest.run(["rm", "-f", "--", partial], check=False)
        raise


@contextlib.asynccontextmanager
async def _served(session: Session, args: Sequence[str]) -> AsyncIterator[str]:
    """qemu-nbd serving a raw file on the host, as a local socket; stopped on exit."""
    tmp = (await session.run(["mktemp", "-d", "-t", "mclu-nbd.XXXXXXXX"])).stdout.decode()
    socket = posixpath.join(tmp.strip(), "nbd.sock")
    try:
        argv = ["qemu-nbd", "--format=raw", "--persistent", "--shared=0", "--socket", socket, *args]
        async with session.background(argv) as server:
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while (await session.run(["test", "-S", socket], check=False)).exit_status != 0:
                server.check()
                if time.monotonic() > deadline:
                    raise errors.HostTimeout(
                        session.host, "qemu-nbd to listen", SERVER_START_TIMEOUT
                    )
                await asyncio.sleep(0.05)
            async with session.forward_socket(socket) as local:
                yield local
    finally:
        with contextlib.suppress(errors.HostError):
            await session.run(["rm", "-rf", "--", tmp.strip()], check=False)


def describe(move: Move) -> str:
    """One line for people: where the guest goes and why."""
    data = sum(d.data_bytes for d in move.disks)
    disks = "shared storage" if move.shared else f"{sizes.human(data)} of disk data to copy"
    return f"{move.guest.name}: {move.source} → {move.dest} ({move.reason}; {disks})"
