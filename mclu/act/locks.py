"""Guest locks: two mclu runs, even from two controllers, never work on one guest at once.

The lock lives on the host, a flock on `<image_dir>/.mclu-locks/<guest>.lock` held through
the run's ssh connection (`Session.lock`): nothing to clean up after a crash, because the
lock ends with the connection. A second run does not wait: it fails at once, naming the
holder (user@controller, pid, command, since when), which the holder wrote into the file;
unless it was told to wait (`waiting`, the CLI's --wait-lock), when it tries again every few
seconds until its time is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import getpass
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping

from mclu import errors, hostpaths
from mclu.config import fields
from mclu.hosts.session import Session
from mclu.model import HostSpec

RETRY_INTERVAL = 2.0  # seconds between attempts at a held lock, while waiting for it

# How long a held lock is waited for: 0, fail at once (the default). A context variable, set
# once for a whole run by the CLI, so that every place that takes locks (build, rebuild,
# migrate, drain, the lifecycle commands, cleanup) honours it without each passing it down.
_WAIT: contextvars.ContextVar[float] = contextvars.ContextVar("mclu_lock_wait", default=0.0)


@contextlib.contextmanager
def waiting(seconds: float) -> Iterator[None]:
    """Within the block (and the tasks started in it), a lock held by another run is tried
    again every RETRY_INTERVAL seconds for up to `seconds` before GuestLocked."""
    token = _WAIT.set(seconds)
    try:
        yield
    finally:
        _WAIT.reset(token)


def lock_path(spec: HostSpec, name: str) -> str:
    """The lock file of guest `name` on the host; the name must be a valid guest name."""
    if not fields.GUEST_NAME.fullmatch(name):  # it becomes a path component on the host
        raise errors.InvalidGuestName(name=name)
    return hostpaths.lock_file(spec.image_dir, name)


def holder(purpose: str) -> str:
    """Who holds a lock, as another run's error message shows it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{user}@{socket.gethostname()} pid {os.getpid()} (mclu {purpose}, since {since})"


@contextlib.asynccontextmanager
async def guest(session: Session, spec: HostSpec, name: str, purpose: str) -> AsyncIterator[None]:
    """Hold guest `name`'s lock on the host for the block; GuestLocked when another run has it
    (and, within `waiting`, still has it when the time is up)."""
    path, who = lock_path(spec, name), holder(purpose)
    deadline = time.monotonic() + _WAIT.get()
    async with contextlib.AsyncExitStack() as stack:
        while True:
            try:
                await stack.enter_async_context(session.lock(path, who))
                break
            except errors.LockHeld as e:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise errors.GuestLocked(host=spec.name, name=name, holder=e.holder) from None
                await asyncio.sleep(min(RETRY_INTERVAL, left))
        yield


@contextlib.asynccontextmanager
async def everywhere(
    sessions: Mapping[str, Session], specs: Iterable[HostSpec], names: Iterable[str], purpose: str
) -> AsyncIterator[None]:
    """Hold the locks of `names` on every host of `sessions` (a new guest's name is taken
    cluster-wide), in one order so that two runs cannot each hold a part and both fail
    forever: whichever run takes the first lock goes on, the other stops at once."""
    by_name = {spec.name: spec for spec in specs}
    async with contextlib.AsyncExitStack() as stack:
        for host in sorted(sessions):
            for name in sorted(set(names)):
                await stack.enter_async_context(guest(sessions[host], by_name[host], name, purpose))
        yield
