"""libvirt's NAT network `default` on the hosts that run one (config.NAT_NETWORK_HOSTS).

Its XML and autostart link are written into the host's private /etc/libvirt before boot
(files.py), so its libvirtd starts it at every power-on, as on a real host; libvirt's
dnsmasq, bridge (virbr0) and iptables rules live in the host's namespaces only. After boot
`ensure_active` starts it if libvirtd has not yet, and names the reason if it cannot.
"""

from __future__ import annotations

from mclu.sandbox import config
from mclu.sandbox.anchors import require_anchor
from mclu.sandbox.commands import nsenter_argv, run
from mclu.sandbox.config import HostSpec
from mclu.sandbox.errors import SandboxError
from mclu.sandbox.state import Paths


def _virsh(anchor: int, *args: str) -> str:
    return run(nsenter_argv(anchor, ["virsh", "-q", "-c", "qemu:///system", *args]))


def active_networks(paths: Paths, host: HostSpec) -> list[str]:
    anchor = require_anchor(paths, host)
    return _virsh(anchor, "net-list", "--name").split()


def ensure_active(paths: Paths, host: HostSpec) -> None:
    """Make sure the host's NAT network runs (libvirtd may still be autostarting it)."""
    if config.NAT_NETWORK in active_networks(paths, host):
        return
    anchor = require_anchor(paths, host)
    try:
        _virsh(anchor, "net-start", config.NAT_NETWORK)
    except SandboxError as error:
        if "already active" not in str(error):
            raise SandboxError(f"{host.name}: network {config.NAT_NETWORK}: {error}") from None
