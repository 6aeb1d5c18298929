"""What is running: each host's state, whether the whole sandbox is healthy, and what of it
is left on the machine after `down` (which must be nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mclu.sandbox import config, lan, wol_listener
from mclu.sandbox.anchors import anchor_pid, anchor_processes
from mclu.sandbox.config import HostSpec
from mclu.sandbox.daemons import DAEMONS, daemon_pid
from mclu.sandbox.namespaces import netns_inode, sandbox_netns_names
from mclu.sandbox.network import host_bridge_exists, link_exists, sandbox_links
from mclu.sandbox.readiness import libvirtd_answers, sshd_answers
from mclu.sandbox.state import Paths, known_hosts_of_record, read_record


@dataclass(frozen=True)
class HostStatus:
    host: HostSpec
    state: str  # "up", "off", "degraded: ...", "missing"


def hosts_to_show(paths: Paths) -> tuple[list[HostSpec], bool]:
    """The hosts `status` reports on, and whether they are those of a successful `up`; if none
    was recorded, the hosts whose namespaces exist (none: the sandbox is down)."""
    hosts = known_hosts_of_record(paths)
    if hosts:
        return hosts, True
    names = sandbox_netns_names()
    return [config.parse_host_name(n.removeprefix(config.NETNS_PREFIX)) for n in names], False


def host_status(paths: Paths, host: HostSpec) -> HostStatus:
    if netns_inode(host) is None:
        return HostStatus(host, "missing")
    anchor = anchor_pid(paths, host)
    if anchor is None:
        return HostStatus(host, "off")
    down = [d for d in DAEMONS if daemon_pid(anchor, host, d) is None]
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
    if read_record(paths) != count or not link_exists(config.BRIDGE):
        return False
    hosts = config.host_specs(count + 1)
    if sandbox_netns_names() != sorted(h.netns for h in hosts):
        return False
    # One brought up by an older mclu-sandbox, without br0, is made afresh.
    if not all(host_bridge_exists(h) for h in hosts):
        return False
    return all(s.state == "up" for s in statuses(paths, hosts[:-1]))


def leftovers() -> list[str]:
    """What of the sandbox still exists on the machine (empty after a clean `down`)."""
    found = [f"netns {n}" for n in sandbox_netns_names()]
    found += [f"link {n}" for n in sandbox_links()]
    found += [f"process {pid} wake-on-LAN listener" for pid in wol_listener.running_pids()]
    found += [f"process {pid} dnsmasq on {config.BRIDGE}" for pid in lan.running_pids()]
    if link_exists(config.BRIDGE):
        found.append(f"bridge {config.BRIDGE}")
    found += [f"process {pid} {name}" for pid, name in anchor_processes()]
    with open("/proc/self/mountinfo") as mounts:
        found += [
            f"mount {line.split()[4]}"
            for line in mounts
            if f"/{config.NETNS_PREFIX}" in line or str(config.DEFAULT_STATE_DIR) in line
        ]
    return found
