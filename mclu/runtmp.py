"""One private temporary directory per mclu run on the controller, and removing dead runs' ones.

What a run keeps on the controller for a while (the new guests' private ssh host keys, the
local ends of forwarded sockets, libguestfs's own temporary directory) goes into one directory,
`$TMPDIR/mclu-run-PID-XXXXXXXX` (0700, made when first needed), removed when the run ends in any
way it can see: success, an error, Ctrl-C, SIGTERM, SIGHUP. A run that is killed outright
(SIGKILL) cannot, so the directory names its owner in the file `owner` (pid and the process's
start time, which tells a reused pid apart), and the next run that makes one, or `mclu cleanup`,
removes those whose owner is gone.

A few things cannot be put inside it: libguestfs run as root makes its socket directory in /tmp
whatever it is told. Such paths are listed in the file `outside` as soon as they are known, and
go with the run directory.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PREFIX = "mclu-run-"
OWNER_FILE = "owner"  # "PID START\n": START is the process's start time (/proc/PID/stat)
OUTSIDE_FILE = "outside"  # paths the run made outside its directory, one a line
HOSTKEYS_PREFIX = "hostkeys-"  # private ssh host keys of new guests: removed before the rest
SUN_PATH_MAX = 107  # bytes in a unix socket's path (sun_path holds 108 with the NUL)
# A directory with no owner file yet is being made (the file follows at once): left alone
# for this long.
UNOWNED_MIN_AGE = 60.0


def base() -> Path:
    """Where run directories go: $TMPDIR, else /tmp (as tempfile decides)."""
    return Path(tempfile.gettempdir())


@dataclass(frozen=True)
class Owner:
    pid: int
    start: str | None  # None: not known (no /proc): then a live pid is taken as the owner


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None
    when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def alive(owner: Owner) -> bool:
    """Whether the process that made a run directory still runs (not a later one with its pid)."""
    if Path("/proc/self/stat").exists():
        start = start_time(owner.pid)
        return start is not None and (owner.start is None or start == owner.start)
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_owner(directory: Path) -> Owner | None:
    """The owner a run directory names, None when the file is missing or not of our format."""
    try:
        pid, start = (directory / OWNER_FILE).read_text().split()
        return Owner(int(pid), None if start == "-" else start)
    except (OSError, ValueError):
        return None


class RunDir:
    """This run's directory under `parent` (default: `base()`), made when first needed."""

    def __init__(self, parent: Path | None = None) -> None:
        self.parent = parent
        # Making it first removes dead runs' directories; not in `mclu cleanup --dry-run`.
        self.sweep_when_made = True
        self._path: Path | None = None
        self._lock = threading.Lock()  # personalisation asks for it from a worker thread

    @property
    def made(self) -> bool:
        return self._path is not None

    @property
    def path(self) -> Path:
        with self._lock:
            if self._path is None:
                parent = self.parent or base()
                if self.sweep_when_made:
                    with contextlib.suppress(OSError):
                        sweep(parent)
                path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))
                start = start_time(os.getpid()) or "-"
                (path / OWNER_FILE).write_text(f"{os.getpid()} {start}\n")
                self._path = path
            return self._path

    def mkdtemp(self, prefix: str) -> str:
        """A new private (0700) directory in the run directory."""
        return tempfile.mkdtemp(prefix=prefix, dir=self.path)

    def record_outside(self, path: str) -> None:
        """Remove `path` (a directory made elsewhere for this run) with the run directory."""
        with self._lock:
            if self._path is None:
                raise RuntimeError("record_outside before the run directory exists")
            with open(self._path / OUTSIDE_FILE, "a", encoding="utf-8") as file:
                file.write(path + "\n")

    def remove(self) -> None:
        with self._lock:
            if self._path is not None:
                remove(self._path)
                self._path = None


_current: contextvars.ContextVar[RunDir | None] = contextvars.ContextVar(
    "mclu_run_dir", default=None
)


@contextlib.contextmanager
def scope(parent: Path | None = None) -> Iterator[RunDir]:
    """The run directory of the enclosing scope, or a new one removed when this block ends.

    The CLI enters one around each command; library code that needs a temporary directory
    enters one too, and so works the same with or without the CLI. Worker threads started with
    asyncio.to_thread see the scope of their caller (they copy its context).
    """
    current = _current.get()
    if current is not None:
        yield current
        return
    run = RunDir(parent)
    token = _current.set(run)
    try:
        yield run
    finally:
        with contextlib.suppress(ValueError):  # ended in another context (an async generator's)
            _current.reset(token)
        run.remove()


def current() -> RunDir:
    """The run directory of the enclosing `scope` (there must be one)."""
    run = _current.get()
    if run is None:
        raise RuntimeError("no run directory scope is active")
    return run


@contextlib.contextmanager
def tempdir(prefix: str) -> Iterator[str]:
    """A private directory in this run's directory, removed when the block ends (and with the
    run directory, should this process be killed)."""
    with scope() as run:
        path = run.mkdtemp(prefix)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def socket_path(prefix: str) -> Iterator[str]:
    """A path for a new unix socket in this run's directory, removed when the block ends.

    Where $TMPDIR is so long that the path would not fit in a socket address, the socket goes
    in a private directory in /tmp instead, which goes with the run directory too.
    """
    with scope() as run:
        name = f"{prefix}{secrets.token_hex(4)}.sock"
        path = str(run.path / name)
        directory = None
        if len(os.fsencode(path)) > SUN_PATH_MAX:
            directory = tempfile.mkdtemp(prefix="mclu-sock-", dir="/tmp")
            run.record_outside(directory)
            path = os.path.join(directory, name)
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)


# --- the run directories of runs that are gone ---------------------------------------------------


def stale(parent: Path | None = None, now: float | None = None) -> list[Path]:
    """This user's run directories under `parent` whose process is gone, oldest name first."""
    parent = parent or base()
    now = time.time() if now is None else now
    found = []
    try:
        entries = sorted(parent.glob(f"{PREFIX}*"))
    except OSError:
        return []
    for path in entries:
        try:
            info = path.lstat()
        except OSError:
            continue
        if not path.is_dir() or path.is_symlink() or info.st_uid != os.getuid():
            continue
        owner = read_owner(path)
        if owner is None:
            if now - info.st_mtime >= UNOWNED_MIN_AGE:
                found.append(path)
        elif not alive(owner):
            found.append(path)
    return found


def remove(path: Path) -> None:
    """Remove a run directory and what it lists as made outside it, private keys first."""
    for keys in sorted(path.glob(f"{HOSTKEYS_PREFIX}*")):
        shutil.rmtree(keys, ignore_errors=True)
    with contextlib.suppress(OSError):
        listed = (path / OUTSIDE_FILE).read_text().splitlines()
        for outside in listed:
            if outside.startswith("/"):
                shutil.rmtree(outside, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)


def sweep(parent: Path | None = None, *, dry_run: bool = False) -> list[Path]:
    """Remove (unless `dry_run`) the run directories of runs that are gone; those found."""
    found = stale(parent)
    if not dry_run:
        for path in found:
            remove(path)
    return found
