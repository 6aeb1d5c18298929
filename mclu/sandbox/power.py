"""A fake host's power: boot it (namespaces, mounts, daemons: hostinit.sh), cut it (kill
everything in its network namespace, take its link down), and the start/stop commands."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

from mclu.sandbox import config, nat
from mclu.sandbox.anchors import ANCHOR_PREFIX, anchor_pid
from mclu.sandbox.capability_cache import seed_capability_cache
from mclu.sandbox.commands import clean_env
from mclu.sandbox.config import HostSpec
from mclu.sandbox.errors import SandboxError
from mclu.sandbox.namespaces import kill_netns, netns_inode, pids_in_netns
from mclu.sandbox.network import remove_guest_links, set_link
from mclu.sandbox.readiness import wait_ready
from mclu.sandbox.state import Paths, write_file


def boot(paths: Paths, host: HostSpec) -> subprocess.Popen[bytes]:
    """Power a prepared host on: its namespaces, mounts and daemons; returns the anchor."""
    seed_capability_cache(paths, host)
    set_link(host, up=True)
    hdir = paths.host(host)
    with open(hdir / "boot.log", "ab") as log:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                host.netns,
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
                "/bin/bash",
                str(paths.hostinit),
                "boot",
                host.name,
                str(hdir),
                str(paths.standin),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the anchor outlives this command
            env={
                **clean_env(),
                "MCLU_MACHINE_NETNS": os.readlink("/proc/self/ns/net"),
                "MCLU_ANCHOR_NAME": f"{ANCHOR_PREFIX}{host.name}",
            },
            cwd="/",
        )
    # ip netns exec and unshare exec (no fork): this PID ends up being the anchor.
    write_file(paths.anchor_file(host), f"{proc.pid}\n")
    return proc


def boot_and_wait(paths: Paths, host: HostSpec) -> float:
    started = time.monotonic()
    proc = boot(paths, host)
    wait_ready(paths, host, proc)
    if config.runs_nat_network(host):
        nat.ensure_active(paths, host)
    return time.monotonic() - started


def power_off(paths: Paths, host: HostSpec) -> bool:
    """Cut a host's power: kill everything in its namespace, take its link down."""
    ino = netns_inode(host)
    if ino is None:
        return False
    was_on = bool(pids_in_netns(ino))
    kill_netns(ino, host.name)
    with contextlib.suppress(SandboxError):
        set_link(host, up=False)
        remove_guest_links(host)
    paths.anchor_file(host).unlink(missing_ok=True)
    return was_on


def start_host(paths: Paths, host: HostSpec) -> float:
    if netns_inode(host) is None:
        raise SandboxError(f"{host.name} is not part of the sandbox (run: mclu-sandbox up)")
    if anchor_pid(paths, host) is not None:
        raise SandboxError(f"{host.name} is already running")
    # Leftovers of a half-dead host (e.g. its anchor killed) would hold the address.
    power_off(paths, host)
    return boot_and_wait(paths, host)


def stop_host(paths: Paths, host: HostSpec) -> bool:
    if netns_inode(host) is None:
        raise SandboxError(f"{host.name} is not part of the sandbox")
    return power_off(paths, host)
