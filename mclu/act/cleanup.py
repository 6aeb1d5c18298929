"""Carrying out a cleanup plan (mclu.decide.cleanup) on one host: each removable item's steps,
under its guest's lock; what a run has meanwhile taken (lock held, file in use, guest no
longer building) is kept and said so.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from mclu import errors, hostpaths, model
from mclu.act import locks
from mclu.decide import cleanup, delete
from mclu.decide.cleanup import Item
from mclu.hosts import commands
from mclu.hosts.session import Session
from mclu.read import storage


@dataclass(frozen=True)
class Done:
    """What cleanup did on one host."""

    removed: tuple[Item, ...] = ()
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # guest → its files
    kept: tuple[Item, ...] = ()
    failed: tuple[tuple[Item, str], ...] = ()  # items whose removal failed, and why


async def execute(session: Session, spec: model.HostSpec, plan: cleanup.CleanupPlan) -> Done:
    """Remove the plan's removable items, each by its steps; the kept ones stay kept."""
    removed: list[Item] = []
    files: dict[str, tuple[str, ...]] = {}
    kept = list(plan.kept)
    failed: list[tuple[Item, str]] = []
    for item in plan.removable:
        try:
            async with _locked(session, spec, item):
                if "remove_guest" in item.steps:
                    gone = await _remove_guest(session, spec, item.name)
                    if gone is None:
                        kept.append(item.kept("no longer an interrupted build"))
                        continue
                    files[item.name] = gone
                elif not await _remove_unused(session, item.name):
                    kept.append(item.kept("in use by a process on the host"))
                    continue
            removed.append(item)
        except errors.GuestLocked as e:
            kept.append(item.kept(f"a run is at it: locked by {e.holder}"))
        except errors.MCLUError as e:
            failed.append((item, str(e)))
    return Done(removed=tuple(removed), files=files, kept=tuple(kept), failed=tuple(failed))


@contextlib.asynccontextmanager
async def _locked(session: Session, spec: model.HostSpec, item: Item) -> AsyncIterator[None]:
    """The item's "lock" step: its guest's lock held for the block (none without the step)."""
    if "lock" not in item.steps or item.lock is None:
        yield
        return
    async with locks.guest(session, spec, item.lock, "cleanup"):
        yield


async def _remove_guest(
    session: Session, spec: model.HostSpec, name: str
) -> tuple[str, ...] | None:
    """Under the guest's lock: read it again ("reread_guest"), then power it off, undefine it,
    remove its own disks (made since its build began) and console log. None when it is no
    longer an interrupted build."""
    guests = await session.guests()
    guest = cleanup.unfinished(guests, name)
    if guest is None:
        return None
    others = [g for g in guests if g.name != name]
    backing = await storage.backing_files(session, delete.file_disks(others))
    choice = delete.disks_to_remove(guest, others, hostpaths.cache_dir(spec.image_dir), backing)
    ctimes = await storage.change_times(session, choice.remove)
    removal = cleanup.removal(guest, choice.remove, ctimes)
    if removal.destroy:
        with contextlib.suppress(errors.GuestInactive):  # stopped meanwhile
            await session.destroy(name)
    if removal.undefine:
        with contextlib.suppress(errors.GuestNotFound):
            await session.undefine(name)
    await session.run(commands.remove(*removal.files))
    return removal.disks


async def _remove_unused(session: Session, path: str) -> bool:
    """The "remove_file" step: remove the partial file unless a process names it now;
    whether it is gone."""
    done = await session.run(commands.remove_unused(), input=f"{path}\n".encode())
    gone = done.stdout.decode(errors="replace").splitlines()
    if path in gone:
        return True
    exists = await session.run(commands.exists(path), check=False)
    return exists.exit_status != 0  # gone already (its run renamed or removed it): fine
