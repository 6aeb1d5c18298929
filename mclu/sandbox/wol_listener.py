"""Starting, finding and stopping the wake-on-LAN listener process of this instance.

The listener itself is mclu.sandbox.wol; it runs in its own session, outliving the command
that started it, and is told from other instances' listeners by the bridge on its command line.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from mclu.sandbox import config
from mclu.sandbox.namespaces import stop_processes
from mclu.sandbox.readiness import wait_until
from mclu.sandbox.state import Paths

WOL_MODULE = "mclu.sandbox.wol"
WOL_START_TIMEOUT = 10.0


def command_line(paths: Paths) -> list[str]:
    """The listener's command line; `--bridge` tells this instance's listener from others'."""
    return [
        sys.executable,
        "-m",
        WOL_MODULE,
        "--state",
        str(paths.state),
        "--bridge",
        config.BRIDGE,
        "--port",
        str(config.WOL_PORT),
    ]


def running_pids() -> list[int]:
    """This instance's wake-on-LAN listener processes (normally none or one)."""
    marker = f"\0{WOL_MODULE}\0".encode()
    bridge = f"\0--bridge\0{config.BRIDGE}\0".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            if marker in cmdline and bridge in cmdline:
                pids.append(int(entry))
    return pids


def start(paths: Paths) -> int:
    """Start the listener (python -m mclu.sandbox.wol) in its own session; returns its PID
    once it listens on the bridge."""
    paths.wol_pidfile.unlink(missing_ok=True)
    with open(paths.wol_log, "ab") as log:
        proc = subprocess.Popen(
            command_line(paths),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
            env={**os.environ, config.INSTANCE_ENV: str(config.INSTANCE)},
        )

    def listening() -> bool:
        with contextlib.suppress(OSError, ValueError):
            return int(paths.wol_pidfile.read_text().strip()) == proc.pid
        return False

    def alive() -> str:
        if proc.poll() is None:
            return ""
        lines = paths.wol_log.read_text(errors="replace").strip().splitlines()
        return f"exited ({proc.returncode}): {lines[-1] if lines else 'no log'}"

    wait_until("wake-on-LAN listener", WOL_START_TIMEOUT, listening, alive)
    return proc.pid


def stop(paths: Paths) -> bool:
    """Stop this instance's listener (SIGTERM, then SIGKILL); False if none ran."""
    pids = running_pids()
    stop_processes(pids, running_pids, "wake-on-LAN listener")
    paths.wol_pidfile.unlink(missing_ok=True)
    return bool(pids)
