"""The sandbox LAN's DHCP server: one dnsmasq in the machine's network namespace, bound to
this instance's bridge only, started by `up` and stopped by `down`.

It plays the LAN's router for guests bridged onto a host's br0 (mclu's inventory default),
without DNS and without a default route. It is told from other instances' dnsmasq (and from
libvirt's, inside the hosts) by the `--interface=mclubrN` on its command line.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from mclu.sandbox import config
from mclu.sandbox.errors import SandboxError
from mclu.sandbox.namespaces import proc_netns_inode, stop_processes
from mclu.sandbox.state import Paths

START_TIMEOUT = 30.0


def command_line(paths: Paths) -> list[str]:
    return config.dnsmasq_argv(paths.dhcp_leases, paths.dhcp_pidfile, paths.dhcp_log)


def running_pids() -> list[int]:
    """This instance's DHCP server processes in the machine's namespace (normally 0 or 1)."""
    mine = proc_netns_inode("self")
    interface = f"\0--interface={config.BRIDGE}\0".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            program = cmdline.split(b"\0", 1)[0]
            if (
                program.endswith(b"dnsmasq")
                and interface in cmdline
                and proc_netns_inode(entry) == mine
            ):
                pids.append(int(entry))
    return pids


def start(paths: Paths) -> None:
    """Start the DHCP server on a fresh lease file. dnsmasq forks once it has bound its
    sockets and reports a failure to do so in its exit status, so this returns when it
    serves."""
    paths.dhcp_leases.unlink(missing_ok=True)
    paths.dhcp_pidfile.unlink(missing_ok=True)
    paths.dhcp_leases.touch()
    argv = command_line(paths)
    with open(paths.dhcp_log, "ab") as log:
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                timeout=START_TIMEOUT,
                start_new_session=True,
                cwd="/",
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SandboxError(f"dnsmasq did not start within {START_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        lines = paths.dhcp_log.read_text(errors="replace").strip().splitlines()
        raise SandboxError(
            f"dnsmasq on {config.BRIDGE} failed (exit {proc.returncode}): "
            f"{lines[-1] if lines else 'no log'}"
        )


def stop(paths: Paths) -> bool:
    """Stop this instance's DHCP server (SIGTERM, then SIGKILL); False if none ran."""
    pids = running_pids()
    stop_processes(pids, running_pids, "dnsmasq")
    paths.dhcp_pidfile.unlink(missing_ok=True)
    return bool(pids)


def leases(paths: Paths) -> list[tuple[str, str]]:
    """(MAC, address) of each lease the server gave."""
    try:
        return parse_leases(paths.dhcp_leases.read_text())
    except OSError:
        return []


def parse_leases(text: str) -> list[tuple[str, str]]:
    """(MAC, address) per line of dnsmasq's lease file (`EXPIRY MAC ADDRESS NAME CLIENT-ID`)."""
    return [(f[1], f[2]) for f in (line.split() for line in text.splitlines()) if len(f) >= 3]
