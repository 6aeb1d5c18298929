"""Guests' addresses on the sandbox's real networks (issue 12, part 3): a tiny guest bridged
on the sandbox LAN (br0) is found in its host's neighbour table, which mclu fills first (the
table is flushed before); one on libvirt's NAT network `default` by its DHCP lease.

The guests boot the tiny template's disk as it is (udhcpc runs at boot), defined by hand, so
that only the reading of addresses is under test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mclu.sandbox import images as sandbox_images
from tests.integration import sandbox as sb

pytestmark = pytest.mark.sandbox

IMAGES = "/var/lib/libvirt/images"
BOOT_WAIT = 120.0  # seconds a TCG tiny guest gets to boot and ask for an address

GUEST = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>
<os><type>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>
<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>{nic}
<serial type='pty'/><console type='pty'/></devices></domain>"""
NIC = (
    "<interface type='{kind}'><mac address='{{mac}}'/><source {kind}='{source}'/>"
    "<model type='virtio'/></interface>"
)
BRIDGED = NIC.format(kind="bridge", source="br0")
NAT = NIC.format(kind="network", source="default")


@pytest.fixture
def repo(sandbox: sb.Sandbox) -> Path:
    """The sandbox's template repository, with tiny built (its init runs udhcpc)."""
    return sandbox_images.build_repository(sandbox.state, names=["tiny"])


@pytest.fixture
def guests(sandbox: sb.Sandbox, repo: Path) -> Iterator[list[tuple[str, str]]]:
    made: list[tuple[str, str]] = []
    yield made
    for host, name in made:
        sandbox.remove_guest(host, name)


def start_tiny(sandbox: sb.Sandbox, repo: Path, host: str, name: str, nic: str) -> None:
    disk = f"{IMAGES}/{name}.img"
    sandbox.exec(host, ["sh", "-c", 'xz -dc "$1" > "$2"', "sh", str(repo / "tiny.xz"), disk])
    xml = GUEST.format(name=name, disk=disk, nic=nic)
    sandbox.exec(
        host,
        ["sh", "-c", 'cat > "$1" && virsh -q create "$1"', "sh", f"/tmp/{name}.xml"],
        input=xml,
    )


def address_of(sandbox: sb.Sandbox, name: str, host: str) -> dict[str, Any] | None:
    """The guest's first IPv4 address in `mclu list --json`, once one is known."""
    deadline = time.monotonic() + BOOT_WAIT
    while time.monotonic() < deadline:
        _code, doc = sb.mclu_json("list", "--host", host, inventory=sandbox.inventory)
        found = next(g for g in doc["guests"] if g["name"] == name)
        ipv4: list[dict[str, Any]] = [a for a in found["addresses"] if a["family"] == 4]
        if ipv4:
            return ipv4[0]
        time.sleep(3)
    return None


def test_a_bridged_guest_is_found_in_the_neighbour_table_mclu_fills(
    sandbox: sb.Sandbox, repo: Path, guests: list[tuple[str, str]]
) -> None:
    host = sandbox.up_hosts[1]
    assert sandbox.exec(host, ["ip", "link", "show", "br0"], check=False).returncode == 0
    name, mac = "addr-bridged", "52:54:00:a9:00:01"
    guests.append((host, name))
    start_tiny(sandbox, repo, host, name, BRIDGED.format(mac=mac))
    first = address_of(sandbox, name, host)
    assert first is not None, "no address within the boot wait"
    # Emptied: the next list must fill the table itself (the guest never talks to its host).
    sandbox.exec(host, ["ip", "neigh", "flush", "dev", "br0"])
    again = address_of(sandbox, name, host)
    assert again == {**first, "source": "arp"} and again["mac"] == mac


def test_a_guest_on_the_nat_network_is_found_by_its_lease(
    sandbox: sb.Sandbox, repo: Path, guests: list[tuple[str, str]]
) -> None:
    host = sandbox.up_hosts[0]
    networks = sandbox.exec(host, ["virsh", "net-list", "--name"]).stdout.split()
    assert "default" in networks, f"no active libvirt network 'default' on {host}"
    name, mac = "addr-nat", "52:54:00:a9:00:02"
    guests.append((host, name))
    start_tiny(sandbox, repo, host, name, NAT.format(mac=mac))
    found = address_of(sandbox, name, host)
    assert found is not None, "no address within the boot wait"
    assert found["source"] == "lease" and found["mac"] == mac
    assert found["prefix"] == 24
    leases = sandbox.exec(host, ["virsh", "net-dhcp-leases", "default"]).stdout
    assert f"{found['ip']}/24" in leases
