"""A lock file on this controller, for hosts mclu reaches without a shell (a libvirt URI)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

from mclu import errors


def directory() -> Path:
    """Private (0700) per user: other users can neither take nor read mclu's locks."""
    path = Path(tempfile.gettempdir()) / f"mclu-locks-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != os.getuid():
        raise errors.MCLUError(f"{path} belongs to another user; remove it")
    return path


class LocalLock:
    """An exclusive flock on the file for `key`, taken without waiting.

    It dies with this process (the kernel drops the flocks of closed descriptors), or with
    `release()`, which its session also calls when it closes.
    """

    def __init__(self, host: str, key: str, path: str, holder: str) -> None:
        file = directory() / hashlib.sha256(key.encode()).hexdigest()[:32]
        self._fd: int | None = os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self._fd, 4096, 0).decode(errors="replace").strip()
            self.release()
            raise errors.LockHeld(host=host, path=path, holder=other) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, holder.encode() + b"\n", 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
