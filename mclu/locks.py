"""Guest locks: two mclu runs, even from two controllers, never work on one guest at once.

The lock lives on the host, a flock on `<image_dir>/.mclu-locks/<guest>.lock` held through
the run's ssh connection (`Session.lock`): nothing to clean up after a crash, because the
lock ends with the connection. A second run does not wait: it fails at once, naming the
holder (user@controller, pid, command, since when), which the holder wrote into the file.
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import os
import posixpath
import socket
from collections.abc import AsyncIterator, Iterable, Mapping

from mclu import errors, plan
from mclu.hosts.session import Session
from mclu.model import HostSpec

LOCK_DIR = ".mclu-locks"


def lock_path(spec: HostSpec, name: str) -> str:
    """The lock file of guest `name` on the host; the name must be a valid guest name."""
    if not plan.GUEST_NAME.fullmatch(name):  # it becomes a path component on the host
        raise errors.InvalidGuestName(name)
    return posixpath.join(spec.image_dir, LOCK_DIR, f"{name}.lock")


def holder(purpose: str) -> str:
    """Who holds a lock, as another run's error message shows it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{user}@{socket.gethostname()} pid {os.getpid()} (mclu {purpose}, since {since})"


@contextlib.asynccontextmanager
async def guest(session: Session, spec: HostSpec, name: str, purpose: str
                ) -> AsyncIterator[None]:
    """Hold guest `name`'s lock on the host for the block; GuestLocked when another run has it."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(session.lock(lock_path(spec, name), holder(purpose)))
        except errors.LockHeld as e:
            raise errors.GuestLocked(spec.name, name, e.holder) from None
        yield


@contextlib.asynccontextmanager
async def everywhere(sessions: Mapping[str, Session], specs: Iterable[HostSpec],
                     names: Iterable[str], purpose: str) -> AsyncIterator[None]:
    """Hold the locks of `names` on every host of `sessions` (a new guest's name is taken
    cluster-wide), in one order so that two runs cannot each hold a part and both fail
    forever: whichever run takes the first lock goes on, the other stops at once."""
    by_name = {spec.name: spec for spec in specs}
    async with contextlib.AsyncExitStack() as stack:
        for host in sorted(sessions):
            for name in sorted(set(names)):
                await stack.enter_async_context(guest(sessions[host], by_name[host], name, purpose))
        yield
