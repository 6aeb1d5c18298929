"""A fake host's daemons (sshd, libvirtd, virtlogd): found by the pidfiles in its private /run,
stopped and started one at a time for fault injection (`mclu-sandbox daemon`)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from mclu.sandbox.anchors import require_anchor
from mclu.sandbox.commands import nsenter_argv, run
from mclu.sandbox.config import HostSpec
from mclu.sandbox.errors import SandboxError
from mclu.sandbox.namespaces import KILL_TIMEOUT, netns_inode, proc_netns_inode
from mclu.sandbox.readiness import (
    LIBVIRTD_TIMEOUT,
    SSHD_TIMEOUT,
    libvirtd_answers,
    sshd_answers,
    wait_until,
)
from mclu.sandbox.state import Paths

DAEMONS = ("sshd", "libvirtd", "virtlogd")


def daemon_pid(anchor: int, host: HostSpec, daemon: str) -> int | None:
    """PID from the daemon's pidfile in the host's private /run, if that process is alive."""
    try:
        pid = int(Path(f"/proc/{anchor}/root/run/{daemon}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if proc_netns_inode(pid) != netns_inode(host):
        return None  # stale pidfile, PID reused outside the host
    return pid


def stop(paths: Paths, host: HostSpec, daemon: str, sig: int = signal.SIGTERM) -> bool:
    """Stop one daemon of a running host (with `sig`, SIGKILL if it lingers); False if it
    was not running."""
    anchor = require_anchor(paths, host)
    pid = daemon_pid(anchor, host, daemon)
    if pid is None:
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + KILL_TIMEOUT
    while proc_netns_inode(pid) is not None:  # gone (or a zombie: no namespaces left)
        now = time.monotonic()
        if now > deadline + KILL_TIMEOUT:
            raise SandboxError(f"{host.name}: {daemon} (PID {pid}) survives SIGKILL")
        if now > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return True


def start(paths: Paths, host: HostSpec, daemon: str) -> bool:
    """Start one daemon of a running host and wait until it answers; False if it ran."""
    anchor = require_anchor(paths, host)
    if daemon_pid(anchor, host, daemon) is not None:
        return False
    run(
        nsenter_argv(
            anchor, ["/bin/bash", paths.hostinit, "daemon", host.name, paths.host(host), daemon]
        )
    )
    never: Callable[[], str] = lambda: ""  # noqa: E731
    if daemon == "sshd":
        wait_until(f"{host.name}: sshd", SSHD_TIMEOUT, lambda: sshd_answers(host), never)
    elif daemon == "libvirtd":
        wait_until(
            f"{host.name}: libvirtd", LIBVIRTD_TIMEOUT, lambda: libvirtd_answers(anchor), never
        )
    else:
        wait_until(
            f"{host.name}: {daemon}",
            10.0,
            lambda: daemon_pid(anchor, host, daemon) is not None,
            never,
        )
    return True
