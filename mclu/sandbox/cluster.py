"""The mclu sandbox: fake hypervisor hosts in network + mount + UTS namespaces on one machine.

Each host `hamI` is a network namespace `mclu-hamI` whose veth hangs on the bridge `mclubr0`,
plus a private mount and UTS namespace (made by hostinit.sh) held open by one idle anchor
process. Its sshd, virtlogd and libvirtd run inside those namespaces, with private copies of
libvirt's directories and /root from the state directory. Later commands enter a host with
`nsenter --target ANCHOR --mount --uts --net`.

All fake hosts share the real kernel and one PID namespace: processes are only ever killed by
PID after checking which network namespace they are in, never by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mclu.sandbox import config
from mclu.sandbox.anchors import (
    ANCHOR_PREFIX,
    anchor_pid,
    anchor_processes,
    orphan_anchor_netns,
    require_anchor,
)
from mclu.sandbox.commands import clean_env, nsenter_argv, run
from mclu.sandbox.config import HostSpec
from mclu.sandbox.errors import SandboxError
from mclu.sandbox.namespaces import (
    KILL_TIMEOUT,
    NETNS_DIR,
    kill_netns,
    netns_inode,
    pids_in_netns,
    proc_netns_inode,
    sandbox_netns_names,
)
from mclu.sandbox.state import Paths, read_record, write_file, write_record

Report = Callable[[str], None]

DAEMONS = ("sshd", "libvirtd", "virtlogd")
SSHD_TIMEOUT = 20.0
LIBVIRTD_TIMEOUT = 90.0  # a cold capability probe on a loaded 2-core machine
REAL_ETC_LIBVIRT = Path("/etc/libvirt")
REAL_VAR_LIB_LIBVIRT = Path("/var/lib/libvirt")


# --------------------------------------------------------------------------- files


def install_scripts(paths: Paths) -> None:
    """Copy the stand-in and hostinit.sh into the state dir (hosts bind-mount from there)."""
    paths.bin.mkdir(parents=True, exist_ok=True)
    package = resources.files("mclu.sandbox")
    for name, dest in (("standin.sh", paths.standin), ("hostinit.sh", paths.hostinit)):
        data = package.joinpath(name).read_bytes()
        if not dest.exists() or dest.read_bytes() != data:
            tmp = dest.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.chmod(0o755)
            tmp.replace(dest)


def _keygen(path: Path, comment: str) -> str:
    """An ed25519 key at `path` (generated once, kept); returns the public key line."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    return path.with_name(path.name + ".pub").read_text().strip()


def _copy_dir_skeleton(src: Path, dst: Path) -> None:
    for dirpath, _dirs, _files in os.walk(src):
        (dst / Path(dirpath).relative_to(src)).mkdir(parents=True, exist_ok=True)


def prepare_files(paths: Paths, hosts: Sequence[HostSpec]) -> None:
    """Keys, per-host directories and configs, client config: everything on disk."""
    install_scripts(paths)
    client_pub = _keygen(paths.client / "id_ed25519", "mclu-sandbox-client")
    host_keys = [
        (h, _keygen(paths.host(h) / "ssh_host_ed25519_key", f"root@{h.name}")) for h in hosts
    ]
    root_keys = [_keygen(paths.host(h) / "root/.ssh/id_ed25519", f"root@{h.name}") for h in hosts]
    known_hosts = config.render_known_hosts(host_keys)
    write_file(paths.client / "known_hosts", known_hosts)
    write_file(paths.client / "ssh_config", config.render_client_ssh_config(paths.state, hosts))
    authorized = "\n".join([client_pub, *root_keys]) + "\n"
    etc_hosts = config.render_etc_hosts(hosts)
    for host in hosts:
        _prepare_host_dir(paths, host, known_hosts, authorized, etc_hosts)


def _prepare_host_dir(
    paths: Paths, host: HostSpec, known_hosts: str, authorized: str, etc_hosts: str
) -> None:
    hdir = paths.host(host)
    etc = hdir / "etc-libvirt"
    if not etc.exists():
        shutil.copytree(REAL_ETC_LIBVIRT, etc, symlinks=True)
    # Re-rendered from the real files every time, so edits never pile up.
    for name, settings in (
        ("libvirtd.conf", config.libvirtd_settings(host)),
        ("qemu.conf", config.qemu_settings(host)),
    ):
        original = (REAL_ETC_LIBVIRT / name).read_text()
        write_file(etc / name, config.edit_conf(original, settings), 0o600)
    # No dnsmasq or iptables here: the `default` network must not autostart.
    autostart = etc / "qemu" / "networks" / "autostart" / "default.xml"
    if autostart.is_symlink() or autostart.exists():
        autostart.unlink()
    _copy_dir_skeleton(REAL_VAR_LIB_LIBVIRT, hdir / "var-lib-libvirt")
    (hdir / "var-lib-libvirt" / "images").mkdir(exist_ok=True)
    (hdir / "var-log-libvirt" / "qemu").mkdir(parents=True, exist_ok=True)
    (hdir / "var-cache-libvirt" / "qemu").mkdir(parents=True, exist_ok=True)
    root = hdir / "root"
    root.chmod(0o700)
    (root / ".ssh").chmod(0o700)
    write_file(root / ".ssh" / "authorized_keys", authorized, 0o600)
    write_file(root / ".ssh" / "known_hosts", known_hosts, 0o644)
    write_file(hdir / "hosts", etc_hosts)
    write_file(hdir / "sshd_config", config.render_sshd_config(host, hdir / "ssh_host_ed25519_key"))


def seed_capability_cache(paths: Paths, host: HostSpec) -> None:
    """Give a host the warm QEMU capability cache before its libvirtd starts."""
    if not paths.seed.is_dir():
        return
    dst = paths.host(host) / "var-cache-libvirt" / "qemu"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(paths.seed, dst, symlinks=True)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def save_seed(paths: Paths, host: HostSpec) -> bool:
    """Keep the host's capability cache as the seed if it differs (first run, new qemu)."""
    src = paths.host(host) / "var-cache-libvirt" / "qemu"
    fresh = _tree_bytes(src)
    if not any(name.startswith("capabilities/") for name in fresh):
        return False
    if paths.seed.is_dir() and _tree_bytes(paths.seed) == fresh:
        return False
    tmp = paths.seed.with_name("qemu-cache.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, symlinks=True)
    shutil.rmtree(paths.seed, ignore_errors=True)
    tmp.replace(paths.seed)
    return True


# --------------------------------------------------------------------------- network


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def create_bridge() -> None:
    run(["ip", "link", "add", config.BRIDGE, "type", "bridge"])
    run(["ip", "addr", "add", f"{config.BRIDGE_ADDRESS}/{config.PREFIX_LEN}", "dev", config.BRIDGE])
    run(["ip", "link", "set", config.BRIDGE, "up"])


def create_host_networks(paths: Paths, hosts: Sequence[HostSpec]) -> None:
    """Per host: netns, veth (inside: eth0 with the host's MAC and address) on the bridge."""
    if not os.path.ismount(NETNS_DIR):
        paths.netns_marker.touch()  # `ip netns add` mounts it; `down` unmounts it again
    batch = []
    for h in hosts:
        batch += [
            f"netns add {h.netns}",
            f"link add {h.veth} type veth peer name {config.HOST_IFACE} "
            f"address {h.mac} netns {h.netns}",
            f"link set {h.veth} master {config.BRIDGE} up",
        ]
    run(["ip", "-batch", "-"], stdin="\n".join(batch) + "\n")
    for h in hosts:
        inside = [
            f"addr add {h.address}/{config.PREFIX_LEN} dev {config.HOST_IFACE}",
            "link set lo up",
        ]
        run(["ip", "-n", h.netns, "-batch", "-"], stdin="\n".join(inside) + "\n")


def set_link(host: HostSpec, up: bool) -> None:
    run(["ip", "-n", host.netns, "link", "set", config.HOST_IFACE, "up" if up else "down"])


# --------------------------------------------------------------------------- readiness


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


def _boot_log_tail(paths: Paths, host: HostSpec) -> str:
    try:
        lines = (paths.host(host) / "boot.log").read_text().strip().splitlines()
    except OSError:
        return "no boot.log"
    return lines[-1] if lines else "empty boot.log"


def _wait(what: str, timeout: float, check: Callable[[], bool], alive: Callable[[], str]) -> None:
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


def wait_ready(paths: Paths, host: HostSpec, proc: subprocess.Popen[bytes] | None) -> None:
    def alive() -> str:
        if proc is not None and proc.poll() is not None:
            return f"boot failed (exit {proc.returncode}): {_boot_log_tail(paths, host)}"
        return "" if anchor_pid(paths, host) or proc is not None else "host died"

    # The boot script becomes the anchor only after it started the daemons.
    _wait(f"{host.name}: boot", SSHD_TIMEOUT, lambda: anchor_pid(paths, host) is not None, alive)
    pid = require_anchor(paths, host)
    _wait(f"{host.name}: sshd", SSHD_TIMEOUT, lambda: sshd_answers(host), alive)
    _wait(
        f"{host.name}: libvirtd",
        LIBVIRTD_TIMEOUT,
        lambda: libvirtd_answers(pid, timeout=LIBVIRTD_TIMEOUT),
        alive,
    )


# --------------------------------------------------------------------------- power


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


# --------------------------------------------------------------------------- wake-on-LAN

WOL_MODULE = "mclu.sandbox.wol"
WOL_START_TIMEOUT = 10.0


def wol_listener_argv(paths: Paths) -> list[str]:
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


def wol_listener_pids() -> list[int]:
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


def start_wol_listener(paths: Paths) -> int:
    """Start the listener (python -m mclu.sandbox.wol) in its own session; returns its PID
    once it listens on the bridge."""
    paths.wol_pidfile.unlink(missing_ok=True)
    with open(paths.wol_log, "ab") as log:
        proc = subprocess.Popen(
            wol_listener_argv(paths),
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

    _wait("wake-on-LAN listener", WOL_START_TIMEOUT, listening, alive)
    return proc.pid


def stop_wol_listener(paths: Paths) -> bool:
    """Stop this instance's listener (SIGTERM, then SIGKILL); False if none ran."""
    pids = wol_listener_pids()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_TIMEOUT
    while alive := [
        p for p in pids if Path(f"/proc/{p}/cmdline").exists() and p in wol_listener_pids()
    ]:
        if time.monotonic() > deadline + KILL_TIMEOUT:
            raise SandboxError(f"wake-on-LAN listener survives SIGKILL: {alive}")
        if time.monotonic() > deadline:
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    paths.wol_pidfile.unlink(missing_ok=True)
    return bool(pids)


# --------------------------------------------------------------------------- daemons


def _daemon_pid(anchor: int, host: HostSpec, daemon: str) -> int | None:
    """PID from the daemon's pidfile in the host's private /run, if that process is alive."""
    try:
        pid = int(Path(f"/proc/{anchor}/root/run/{daemon}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if proc_netns_inode(pid) != netns_inode(host):
        return None  # stale pidfile, PID reused outside the host
    return pid


def daemon_stop(paths: Paths, host: HostSpec, daemon: str, sig: int = signal.SIGTERM) -> bool:
    anchor = require_anchor(paths, host)
    pid = _daemon_pid(anchor, host, daemon)
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


def daemon_start(paths: Paths, host: HostSpec, daemon: str) -> bool:
    anchor = require_anchor(paths, host)
    if _daemon_pid(anchor, host, daemon) is not None:
        return False
    run(
        nsenter_argv(
            anchor, ["/bin/bash", paths.hostinit, "daemon", host.name, paths.host(host), daemon]
        )
    )
    never: Callable[[], str] = lambda: ""  # noqa: E731
    if daemon == "sshd":
        _wait(f"{host.name}: sshd", SSHD_TIMEOUT, lambda: sshd_answers(host), never)
    elif daemon == "libvirtd":
        _wait(f"{host.name}: libvirtd", LIBVIRTD_TIMEOUT, lambda: libvirtd_answers(anchor), never)
    else:
        _wait(
            f"{host.name}: {daemon}",
            10.0,
            lambda: _daemon_pid(anchor, host, daemon) is not None,
            never,
        )
    return True


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class HostStatus:
    host: HostSpec
    state: str  # "up", "off", "degraded: ...", "missing"


def host_status(paths: Paths, host: HostSpec) -> HostStatus:
    if netns_inode(host) is None:
        return HostStatus(host, "missing")
    anchor = anchor_pid(paths, host)
    if anchor is None:
        return HostStatus(host, "off")
    down = [d for d in DAEMONS if _daemon_pid(anchor, host, d) is None]
    if "sshd" not in down and not sshd_answers(host):
        down.append("sshd (no answer)")
    if "libvirtd" not in down and not libvirtd_answers(anchor):
        down.append("libvirtd (no answer)")
    return HostStatus(host, "up" if not down else "degraded: " + ", ".join(down) + " down")


def statuses(paths: Paths, hosts: Sequence[HostSpec]) -> list[HostStatus]:
    with ThreadPoolExecutor(max_workers=max(1, min(len(hosts), 16))) as pool:
        return list(pool.map(lambda h: host_status(paths, h), hosts))


def is_healthy(paths: Paths, count: int) -> bool:
    """Is the sandbox fully up with `count` running hosts (plus the spare one)?"""
    if read_record(paths) != count or not _link_exists(config.BRIDGE):
        return False
    hosts = config.host_specs(count + 1)
    if sandbox_netns_names() != sorted(h.netns for h in hosts):
        return False
    return all(s.state == "up" for s in statuses(paths, hosts[:-1]))


# --------------------------------------------------------------------------- up / down


def up(paths: Paths, count: int, report: Report) -> bool:
    """Bring up `count` hosts plus one powered-off host. False if it was already up."""
    hosts = config.host_specs(count + 1)
    running, spare = hosts[:-1], hosts[-1]
    if is_healthy(paths, count):
        # Still write the inventory: a newer mclu may write it differently.
        write_file(paths.inventory, config.render_inventory(paths.state, running, spare))
        if not wol_listener_pids():
            start_wol_listener(paths)
        return False
    down(paths, report=lambda _line: None)
    try:
        prepare_files(paths, hosts)
        create_bridge()
        create_host_networks(paths, hosts)
        set_link(spare, up=False)
        _boot_all(paths, running, report)
        save_seed(paths, running[0])
        write_file(paths.inventory, config.render_inventory(paths.state, running, spare))
        report(f"{spare.name}  {spare.address:<12}  off (configured, powered off)")
        write_record(paths, count)
        start_wol_listener(paths)
        report(f"wake-on-LAN listener on {config.BRIDGE} ({config.WOL_ADDRESS}:{config.WOL_PORT})")
    except BaseException:
        with contextlib.suppress(Exception):
            down(paths, report=lambda _line: None)
        raise
    return True


def _boot_all(paths: Paths, hosts: Sequence[HostSpec], report: Report) -> None:
    lock = threading.Lock()

    def one(host: HostSpec) -> None:
        elapsed = boot_and_wait(paths, host)
        with lock:
            report(f"{host.name}  {host.address:<12}  up ({elapsed:.1f} s)")

    todo = list(hosts)
    if not paths.seed.is_dir():
        # Cold: one host pays for the capability probe, the rest start from its cache.
        one(todo.pop(0))
        save_seed(paths, hosts[0])
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=min(len(todo), 32)) as pool:
        futures = [pool.submit(one, h) for h in todo]
        for future in as_completed(futures):
            future.result()


def down(paths: Paths, report: Report) -> None:
    """Remove every process, namespace, veth and bridge of the sandbox (also after a crash)."""
    # First the listener, so that no host is powered on while the rest goes.
    if stop_wol_listener(paths):
        report("stopped the wake-on-LAN listener")
    names = sandbox_netns_names()
    inodes: dict[int, str] = {}
    for name in names:
        with contextlib.suppress(OSError):
            inodes[(NETNS_DIR / name).stat().st_ino] = name
    # Anchors whose namespace mount is already gone (a crash half way through `down`).
    for pidfile in (paths.state / "hosts").glob("*/anchor.pid"):
        ino = orphan_anchor_netns(pidfile)
        if ino is not None:
            inodes.setdefault(ino, pidfile.parent.name)
    for ino, name in inodes.items():
        kill_netns(ino, name)
    for name in names:
        run(["ip", "netns", "del", name])
        report(f"removed {name}")
    for pidfile in (paths.state / "hosts").glob("*/anchor.pid"):
        pidfile.unlink()
    for link in _sandbox_links():
        with contextlib.suppress(SandboxError):
            run(["ip", "link", "del", link])
    if _link_exists(config.BRIDGE):
        run(["ip", "link", "del", config.BRIDGE])
        report(f"removed bridge {config.BRIDGE}")
    if paths.netns_marker.exists():
        with contextlib.suppress(OSError):
            if os.path.ismount(NETNS_DIR) and not os.listdir(NETNS_DIR):
                run(["umount", NETNS_DIR])
                NETNS_DIR.rmdir()
        paths.netns_marker.unlink()
    paths.record.unlink(missing_ok=True)


def _sandbox_links() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(config.VETH_PREFIX))
    except OSError:
        return []


def purge(paths: Paths) -> None:
    """Delete the state directory (keys, caches, images): the next `up` starts cold."""
    if paths.state.is_dir():
        shutil.rmtree(paths.state)


def leftovers() -> list[str]:
    """What of the sandbox still exists on the machine (empty after a clean `down`)."""
    found = [f"netns {n}" for n in sandbox_netns_names()]
    found += [f"link {n}" for n in _sandbox_links()]
    found += [f"process {pid} wake-on-LAN listener" for pid in wol_listener_pids()]
    if _link_exists(config.BRIDGE):
        found.append(f"bridge {config.BRIDGE}")
    found += [f"process {pid} {name}" for pid, name in anchor_processes()]
    with open("/proc/self/mountinfo") as mounts:
        found += [
            f"mount {line.split()[4]}"
            for line in mounts
            if f"/{config.NETNS_PREFIX}" in line or str(config.DEFAULT_STATE_DIR) in line
        ]
    return found
