"""Guest lifecycle: stopping with a deadline, deleting a guest (as mclu.decide.delete
planned it), and how the console and the graphical viewer reach a guest.

The decisions are pure (the viewer's command line is `mclu.decide.connect`'s; which disks a
delete removes is `mclu.decide.delete`'s); the actions (`start`, `reboot`, `destroy`, `stop`,
`delete`) take an open Session and act. The console's command on the host is
`mclu.hosts.commands.serial_console`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass

from mclu import errors, hostpaths, model
from mclu.decide import delete as delete_plan
from mclu.decide.guests import guest_named
from mclu.hosts import commands
from mclu.hosts.session import Session, command_failed

STOP_TIMEOUT = 60.0  # seconds a guest's OS gets to power off after the ACPI request
POLL_INTERVAL = 0.5  # seconds between looks at a stopping guest's state
# Seconds between ACPI requests to a guest that is not off yet: one still booting (right after
# start or build) ignores the power button, so it is pressed again, as a person would.
ACPI_REPEAT = 5.0

VIEWER = "virt-viewer"  # its package has the same name; remote-viewer cannot open libvirt URIs


# --- start, reboot, destroy: one libvirt call each --------------------------------------------


async def start(session: Session, name: str) -> None:
    """Boot the shut-off guest."""
    await session.start(name)


async def reboot(session: Session, name: str) -> None:
    """Ask the running guest's OS to restart (ACPI); returns before it has."""
    await session.reboot(name)


async def destroy(session: Session, name: str) -> None:
    """Power the running guest off at once."""
    await session.destroy(name)


# --- stop ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stopped:
    """How a guest came to be off: `forced` when it was destroyed after the deadline."""

    forced: bool
    seconds: float


async def state_of(session: Session, name: str) -> model.GuestState | None:
    """The guest's state now; None when it no longer exists (a transient guest that stopped)."""
    guest = guest_named(await session.guests(), name)
    return None if guest is None else guest.state


async def stop(
    session: Session, name: str, *, timeout: float = STOP_TIMEOUT, force: bool = False
) -> Stopped:
    """Ask the running guest's OS to power off (ACPI) and wait until it is off, repeating
    the request every ACPI_REPEAT seconds meanwhile.

    After `timeout` seconds: destroy it when `force`, else raise GuestDidNotStop (the guest
    runs on, the request still pending).
    """
    started = time.monotonic()
    await session.shutdown(name)
    if await _until_off(session, name, started + timeout, repeat=ACPI_REPEAT):
        return Stopped(forced=False, seconds=time.monotonic() - started)
    if not force:
        raise errors.GuestDidNotStop(host=session.host, name=name, seconds=timeout)
    try:
        await session.destroy(name)
    except errors.GuestInactive:
        if await _until_off(session, name, time.monotonic()):  # it went off meanwhile
            return Stopped(forced=False, seconds=time.monotonic() - started)
        raise
    return Stopped(forced=True, seconds=time.monotonic() - started)


async def _until_off(
    session: Session, name: str, deadline: float, *, repeat: float = math.inf
) -> bool:
    """Whether the guest is off by the deadline (monotonic clock); looks at least once.

    With `repeat`, the ACPI request is sent again every `repeat` seconds while it runs on.
    """
    next_request = time.monotonic() + repeat
    while True:
        state = await state_of(session, name)
        if state is None or not state.active:
            return True
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            return False
        if now >= next_request:
            if not await _request_again(session, name):
                return True
            next_request = now + repeat
        await asyncio.sleep(min(POLL_INTERVAL, left))


async def _request_again(session: Session, name: str) -> bool:
    """Send the ACPI request once more; False when it was refused because the guest went
    off (or, transient, away) since the last look: libvirt says "not running" then."""
    try:
        await session.shutdown(name)
    except (errors.LibvirtCallFailed, errors.GuestNotFound):
        state = await state_of(session, name)
        if state is None or not state.active:
            return False
        raise
    return True


# --- delete --------------------------------------------------------------------------------------


async def delete(session: Session, plan: delete_plan.DeletePlan) -> None:
    """Carry out a delete plan (mclu.decide.delete): power the guest off when it runs,
    undefine it, remove its own disks and console log."""
    if plan.destroy:
        await session.destroy(plan.guest)
    if plan.undefine:  # a transient guest is gone once destroyed
        with contextlib.suppress(errors.GuestNotFound):
            await session.undefine(plan.guest)
    await session.run(commands.remove(*plan.remove))


# --- console and viewer --------------------------------------------------------------------------


async def console_log(session: Session, name: str) -> bytes:
    """The guest's saved console log on its host: the output of its current boot (or of the
    last one, when it is off), as libvirt starts the file anew at each start. Raises
    NoConsoleLog when there is none."""
    path = hostpaths.console_log(name)
    done = await session.run(commands.read_file(path), check=False)
    if done.exit_status == 0:
        return done.stdout
    if (await session.run(commands.exists(path), check=False)).exit_status != 0:
        raise errors.NoConsoleLog(host=session.host, name=name, path=path)
    raise command_failed(session.host, done)
