"""Network namespaces: which processes are in a fake host's, and cutting them all.

All fake hosts share the real kernel and one PID namespace: processes are only ever killed by
PID after checking which network namespace they are in, never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from mclu.sandbox import config
from mclu.sandbox.config import HostSpec
from mclu.sandbox.errors import SandboxError

NETNS_DIR = Path("/run/netns")
KILL_TIMEOUT = 10.0


def netns_inode(host: HostSpec) -> int | None:
    try:
        return (NETNS_DIR / host.netns).stat().st_ino
    except OSError:
        return None


def proc_netns_inode(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def forbidden_netns() -> set[int]:
    """Namespaces we must never empty: the kernel's initial one (kthreadd's: PID 1 may not be
    readable) and this process's."""
    pids = (1, 2, "self")
    return {ino for ino in (proc_netns_inode(p) for p in pids) if ino is not None}


def pids_in_netns(ino: int) -> list[int]:
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and proc_netns_inode(entry) == ino:
            pids.append(int(entry))
    return pids


def kill_netns(ino: int, what: str) -> None:
    """SIGKILL every process in network namespace `ino` (a fake host's power cut)."""
    if ino in forbidden_netns():
        raise SandboxError(f"refusing to kill processes of {what}: it is the machine's namespace")
    deadline = time.monotonic() + KILL_TIMEOUT
    while pids := pids_in_netns(ino):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise SandboxError(f"processes of {what} survive SIGKILL: {pids}")
        time.sleep(0.05)


def sandbox_netns_names() -> list[str]:
    """This instance's namespaces (mcluN-hamI) that exist on the machine."""
    try:
        names = os.listdir(NETNS_DIR)
    except OSError:
        return []
    prefix = config.NETNS_PREFIX + config.HOST_PREFIX
    return sorted(n for n in names if n.startswith(prefix))


def stop_processes(pids: list[int], running: Callable[[], list[int]], what: str) -> None:
    """SIGTERM to `pids`, then SIGKILL to those still among `running()` after KILL_TIMEOUT;
    raises SandboxError naming `what` if any survives that too."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_TIMEOUT
    while alive := [p for p in pids if p in running()]:
        if time.monotonic() > deadline + KILL_TIMEOUT:
            raise SandboxError(f"{what} survives SIGKILL: {alive}")
        if time.monotonic() > deadline:
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
