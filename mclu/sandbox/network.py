"""The sandbox's network: one bridge, and per host a network namespace whose veth hangs on it.

Inside a host the veth's end is eth0, with the host's MAC, enslaved to the host's own bridge
br0, which has the host's address: guests bridged onto br0 are on the sandbox's LAN. The
machine's bridge has the gateway's address. Powering a host off takes its eth0 down, as a cut
cable would.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from mclu.sandbox import config
from mclu.sandbox.commands import run
from mclu.sandbox.config import HostSpec
from mclu.sandbox.errors import SandboxError
from mclu.sandbox.namespaces import NETNS_DIR
from mclu.sandbox.state import Paths


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def create_bridge() -> None:
    run(["ip", "link", "add", config.BRIDGE, "type", "bridge"])
    run(["ip", "addr", "add", f"{config.BRIDGE_ADDRESS}/{config.PREFIX_LEN}", "dev", config.BRIDGE])
    run(["ip", "link", "set", config.BRIDGE, "up"])


def create_host_networks(paths: Paths, hosts: Sequence[HostSpec]) -> None:
    """Per host: netns, veth on the bridge (inside: eth0 with the host's MAC, on br0, which
    has the host's address)."""
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
        inside = config.host_link_commands(h)
        run(["ip", "-n", h.netns, "-batch", "-"], stdin="\n".join(inside) + "\n")


def host_bridge_exists(host: HostSpec) -> bool:
    """Does the host's namespace have br0 (a sandbox made before br0 existed has not)?"""
    try:
        run(["ip", "-n", host.netns, "link", "show", config.HOST_BRIDGE])
    except SandboxError:
        return False
    return True


def set_link(host: HostSpec, up: bool) -> None:
    run(["ip", "-n", host.netns, "link", "set", config.HOST_IFACE, "up" if up else "down"])


def remove_guest_links(host: HostSpec) -> list[str]:
    """Delete the links a host's libvirtd made (virbr0 of its NAT network) after a power cut,
    as a real reboot would: libvirt would refuse to start the network over the old bridge.
    Returns their names."""
    keep = {"lo", config.HOST_IFACE, config.HOST_BRIDGE}
    out = run(["ip", "-n", host.netns, "-o", "link", "show"])
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    gone = [n for n in names if n not in keep]
    for name in gone:
        with contextlib.suppress(SandboxError):  # a tap that went with its QEMU meanwhile
            run(["ip", "-n", host.netns, "link", "del", name])
    return gone


def sandbox_links() -> list[str]:
    """This instance's veths (their root-namespace ends) that exist on the machine."""
    try:
        return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(config.VETH_PREFIX))
    except OSError:
        return []


def delete_namespace(name: str) -> None:
    """Delete a network namespace (emptied of processes first: see namespaces.kill_netns)."""
    run(["ip", "netns", "del", name])


def delete_links() -> None:
    """Delete the veths a deleted namespace left behind (normally none: they go with it)."""
    for link in sandbox_links():
        with contextlib.suppress(SandboxError):
            run(["ip", "link", "del", link])


def delete_bridge() -> bool:
    """Delete the bridge; False if there was none."""
    if not link_exists(config.BRIDGE):
        return False
    run(["ip", "link", "del", config.BRIDGE])
    return True


def unmount_netns_dir(paths: Paths) -> None:
    """Unmount /run/netns again if `up` mounted it and no namespace is left in it."""
    if paths.netns_marker.exists():
        with contextlib.suppress(OSError):
            if os.path.ismount(NETNS_DIR) and not os.listdir(NETNS_DIR):
                run(["umount", NETNS_DIR])
                NETNS_DIR.rmdir()
        paths.netns_marker.unlink()
