"""Live migration carried out: one guest moved (`execute`) as `mclu.decide.migrate` planned
it from what `mclu.read.migrate` read.

For local disks the destination gets, before libvirt is asked, what libvirt will not make
itself: the template base the guest's qcow2 overlay is backed by (from the controller's cache,
else copied from the source host through this machine, sparse, over NBD, as the plan says)
and an empty overlay of the same path, size and backing file. libvirt then copies only the
overlay's data (VIR_MIGRATE_NON_SHARED_INC) while the guest runs. A cloud-init seed the guest
still holds (a read-only CD-ROM, which libvirt does not copy) is copied to the same path there
after them, before libvirt is asked, through this machine (a few hundred KiB), and removed
from the source once moved.
Anything that fails undoes what this migration made, newest first: the seed, the overlay, a
base sent only for it (if no other disk uses it). libvirt itself leaves the guest running at
its source when a migration fails.
"""

from __future__ import annotations

import contextlib
import functools
import posixpath
import shutil
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mclu import errors, hostpaths, images
from mclu.act import locks
from mclu.act.build import Reporter, Undo, put_private_file, remove_file
from mclu.cancellation import uninterrupted
from mclu.decide import connect
from mclu.decide.migrate import Disk, Move, timeout_for
from mclu.hosts import commands
from mclu.hosts.session import MigrationProgress, MigrationTarget, Session
from mclu.images import nbd
from mclu.model import HostSpec
from mclu.read import storage


@dataclass(frozen=True)
class Moved:
    name: str
    source: str
    dest: str
    seconds: float


def target(move: Move, dest: HostSpec) -> MigrationTarget:
    """The destination as the source's libvirtd reaches it (peer to peer, over ssh)."""
    return MigrationTarget(
        host=dest.name, uri=connect.migration_uri(dest), copy_storage=not move.shared
    )


# --- carrying out one move ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """One move under way: its plan, both hosts' sessions, the destination's spec, the
    controller's cache and what to tell the user."""

    move: Move
    source: Session
    dest: Session
    dest_spec: HostSpec
    cache_dir: Path
    reporter: Reporter


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
            run = _Run(move, source, dest, specs[move.dest], cache_dir, reporter)
            await _prepare_destination(run, undo)
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
        await uninterrupted(undo.run(reporter))
        raise
    seconds = time.monotonic() - started
    await _keep_autostart(move, dest, reporter)
    await _remove_source_files(move, source, reporter)
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


async def _remove_source_files(move: Move, source: Session, reporter: Reporter) -> None:
    """The source's copies of the guest's own disks and seeds, and its console log there:
    libvirt leaves them, the guest now uses the destination's, and `delete` (which finds the
    guest on the destination) could never reach them. Bases stay cached. A failure here is
    only reported: the migration itself has succeeded."""
    done = (*(d.path for d in move.disks), *move.seeds, hostpaths.console_log(move.guest.name))
    for path in done:
        try:
            await remove_file(source, path)
        except errors.MCLUError as e:
            reporter.step(move.source, move.guest.name, f"could not remove {path}: {e}")


async def _prepare_destination(run: _Run, undo: Undo) -> None:
    move, dest, reporter = run.move, run.dest, run.reporter
    own = [d.path for d in move.disks] + list(move.seeds)
    present = await _existing(dest, own + [d.backing for d in move.bases if d.backing])
    for path in own:
        if path in present:
            raise errors.MigrationFailed(
                guest=move.guest.name,
                source=move.source,
                dest=move.dest,
                step="check disks",
                reason=f"{path} already exists there",
            )
    for disk in move.bases:
        assert disk.backing is not None
        if disk.backing in present:
            continue
        reporter.step(move.dest, move.guest.name, f"sending {posixpath.basename(disk.backing)}")
        await _step(
            move,
            "send template base",
            _send_base(run, disk),
        )
        undo.push(
            f"remove {disk.backing} on {dest.host} if unused",
            functools.partial(_remove_base_if_unused, dest, run.dest_spec, disk.backing),
        )
    for disk in move.disks:
        reporter.step(move.dest, move.guest.name, f"creating {disk.path}")
        await _step(move, "create disk", _create_disk(dest, disk))
        undo.push(
            f"remove {disk.path} on {dest.host}", functools.partial(remove_file, dest, disk.path)
        )
    for seed in move.seeds:
        reporter.step(move.dest, move.guest.name, "sending its cloud-init seed")
        await _step(move, "send seed", _send_seed(run, seed, undo))


async def _send_seed(run: _Run, path: str, undo: Undo) -> None:
    """The seed, read on the source, written as a new private file of the same path on the
    destination (never over an existing one), its removal registered at once: it holds the
    guest's private host keys. Not interrupted between the write and the registration."""
    data = (await run.source.run(commands.read_file(path))).stdout
    await uninterrupted(put_private_file(run.dest, path, data, undo))


async def _step(move: Move, step: str, work: Awaitable[object]) -> None:
    """Run one step; a failure becomes MigrationFailed naming the step and both hosts."""
    try:
        await work
    except errors.MigrationFailed:
        raise
    except errors.MCLUError as e:
        raise errors.MigrationFailed(
            guest=move.guest.name, source=move.source, dest=move.dest, step=step, reason=str(e)
        ) from e


async def _existing(session: Session, paths: Sequence[str]) -> set[str]:
    done = await session.run(commands.existing(paths))
    return set(done.stdout.decode().splitlines())


async def _create_disk(session: Session, disk: Disk) -> None:
    """An empty image of the disk's path, format, size and backing file (libvirt fills it).

    Made aside and linked into place: `ln` never replaces a file that appeared meanwhile.
    """
    temp = hostpaths.new_file(disk.path)
    image = commands.image_create(
        temp, disk.format, disk.virtual_size, disk.backing, disk.backing_format
    )
    try:
        await session.run(commands.make_directory(posixpath.dirname(disk.path)))
        await session.run(image)
        await session.run(commands.link(temp, disk.path))
    finally:
        await session.run(commands.remove(temp), check=False)


async def _remove_base_if_unused(session: Session, spec: HostSpec, base: str) -> None:
    """Remove a base this migration sent, unless a disk there has come to use it: the
    re-read the plan names (`mclu.decide.migrate.UNDO_CHECKS`, in `Move.undo`)."""
    guests = await session.guests()
    disks = {
        *await storage.overlay_candidates(session, spec),
        *(d for g in guests for d in g.disks),
    }
    if base not in await storage.backing_files(session, sorted(disks)):
        await remove_file(session, base)


# --- the template base: from the controller's cache, else host to host -----------------------


async def _send_base(run: _Run, disk: Disk) -> None:
    source, dest, reporter = run.source, run.dest, run.reporter
    assert disk.backing is not None
    await dest.run(commands.make_directory(posixpath.dirname(disk.backing)))
    key = f"{dest.host}:{posixpath.basename(disk.backing)}"
    if disk.backing in run.move.from_cache:
        local = run.cache_dir / posixpath.basename(disk.backing)
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
        raise errors.LocalToolMissing(
            tool="nbdcopy", purpose="copying a template base between hosts"
        )
    # The file's length, asked here: qemu-img's answer in the plan (Disk) does not hold it
    # exactly (a raw file's virtual size is rounded up to 512 bytes, a qcow2's is the guest's
    # size; actual-size counts allocated blocks), and the partial file must be that long.
    size = int((await source.run(commands.file_size(path))).stdout.decode())
    partial = images.partial_name(path)
    try:
        await dest.run(commands.empty_file(partial, size))
        async with (
            nbd.serve(source, path, nbd.READ_RAW) as src,
            nbd.serve(dest, partial, nbd.WRITE_RAW) as dst,
        ):
            copy = [nbdcopy, "--target-is-zero", "--flush"]
            await nbd.run_nbdcopy(
                [*copy, nbd.nbd_uri(src.socket), nbd.nbd_uri(dst.socket)],
                size,
                progress,
                dest.host,
            )
        await dest.run(commands.commit(partial, path))
    except BaseException:
        with contextlib.suppress(errors.HostError):
            await dest.run(commands.remove(partial), check=False)
        raise
