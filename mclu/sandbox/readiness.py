"""Is a fake host ready: does its sshd speak SSH, does its libvirtd answer; and waiting for it."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

from mclu.sandbox.anchors import anchor_pid, require_anchor
from mclu.sandbox.commands import clean_env, nsenter_argv
from mclu.sandbox.config import HostSpec
from mclu.sandbox.errors import SandboxError
from mclu.sandbox.state import Paths

SSHD_TIMEOUT = 20.0
LIBVIRTD_TIMEOUT = 90.0  # a cold capability probe on a loaded 2-core machine


def sshd_answers(host: HostSpec, timeout: float = 1.0) -> bool:
    """True if something speaking SSH accepts TCP on the host's address."""
    try:
        with socket.create_connection((host.address, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def libvirtd_answers(pid: int, timeout: float = 10.0) -> bool:
    """True if the host's own libvirtd answers `virsh version` (needs its QEMU capabilities)."""
    argv = nsenter_argv(pid, ["virsh", "-q", "-c", "qemu:///system", "version"])
    try:
        proc = subprocess.run(
            argv, capture_output=True, timeout=timeout, env=clean_env(), check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def wait_until(
    what: str, timeout: float, check: Callable[[], bool], alive: Callable[[], str]
) -> None:
    """Poll `check` until true; `alive` returns a reason to give up early ('' = keep going)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not check():
        reason = alive()
        if reason:
            raise SandboxError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise SandboxError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _boot_log_tail(paths: Paths, host: HostSpec) -> str:
    try:
        lines = (paths.host(host) / "boot.log").read_text().strip().splitlines()
    except OSError:
        return "no boot.log"
    return lines[-1] if lines else "empty boot.log"


def wait_ready(paths: Paths, host: HostSpec, proc: subprocess.Popen[bytes] | None) -> None:
    """Wait until a booting host has its anchor, and its sshd and libvirtd answer."""

    def alive() -> str:
        if proc is not None and proc.poll() is not None:
            return f"boot failed (exit {proc.returncode}): {_boot_log_tail(paths, host)}"
        return "" if anchor_pid(paths, host) or proc is not None else "host died"

    # The boot script becomes the anchor only after it started the daemons.
    wait_until(
        f"{host.name}: boot", SSHD_TIMEOUT, lambda: anchor_pid(paths, host) is not None, alive
    )
    pid = require_anchor(paths, host)
    wait_until(f"{host.name}: sshd", SSHD_TIMEOUT, lambda: sshd_answers(host), alive)
    wait_until(
        f"{host.name}: libvirtd",
        LIBVIRTD_TIMEOUT,
        lambda: libvirtd_answers(pid, timeout=LIBVIRTD_TIMEOUT),
        alive,
    )
