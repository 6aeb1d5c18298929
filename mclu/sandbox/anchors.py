"""Each fake host's anchor: the idle process that holds its namespaces open while it is on.

hostinit.sh becomes the anchor (under the name ANCHOR_PREFIX + host name) once the host's
daemons run; its PID is in the host's anchor.pid. A host whose anchor lives is powered on.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from mclu.sandbox import config
from mclu.sandbox.config import HostSpec
from mclu.sandbox.errors import SandboxError
from mclu.sandbox.namespaces import forbidden_netns, netns_inode, proc_netns_inode
from mclu.sandbox.state import Paths

ANCHOR_PREFIX = config.ANCHOR_PREFIX


def anchor_pid(paths: Paths, host: HostSpec) -> int | None:
    """The live anchor process of a host, or None if the host is powered off."""
    try:
        pid = int(paths.anchor_file(host).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if not cmdline.startswith(f"{ANCHOR_PREFIX}{host.name}\0".encode()):
        return None  # the PID was reused by something else
    ino = netns_inode(host)
    if ino is None or proc_netns_inode(pid) != ino:
        return None
    return pid


def require_anchor(paths: Paths, host: HostSpec) -> int:
    pid = anchor_pid(paths, host)
    if pid is None:
        raise SandboxError(f"{host.name} is not running (mclu-sandbox start {host.name})")
    return pid


def orphan_anchor_netns(pidfile: Path) -> int | None:
    """The namespace of the anchor named in `pidfile`, even once its namespace mount is gone
    (a crash half way through `down`)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if not cmdline.startswith(ANCHOR_PREFIX.encode()):
        return None
    ino = proc_netns_inode(pid)
    return None if ino is None or ino in forbidden_netns() else ino


def anchor_processes() -> list[tuple[int, str]]:
    """(PID, name) of every live process named as one of this instance's anchors."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            if cmdline.startswith(ANCHOR_PREFIX.encode()):
                found.append((int(entry), cmdline.split(b"\0")[0].decode()))
    return found
