"""Pure renders of the sandbox's guest networks: br0 in each host, the LAN's DHCP server
(dnsmasq), libvirt's NAT network on ham0, and the inventory's default network."""

from __future__ import annotations

import ipaddress
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

from mclu.sandbox import config, lan
from mclu.sandbox.config import HostSpec


def test_host_links_put_the_address_on_br0_with_eth0_enslaved() -> None:
    host = HostSpec(2)
    lines = config.host_link_commands(host)
    assert lines == [
        f"link add br0 address {host.mac} type bridge forward_delay 0",
        "link set eth0 master br0",
        f"addr add {host.address}/24 broadcast {config.SUBNET}.255 dev br0",
        "link set br0 up",
        "link set lo up",
    ]


def test_dnsmasq_serves_dhcp_on_this_instances_bridge_only() -> None:
    state = Path("/var/tmp/sb")
    argv = config.dnsmasq_argv(state / "l", state / "p", state / "log")
    assert argv[0] == "/usr/sbin/dnsmasq"
    for arg in (
        f"--interface={config.BRIDGE}",
        "--bind-interfaces",
        "--except-interface=lo",
        "--port=0",  # no DNS
        "--conf-file=/dev/null",  # nothing from the machine's /etc/dnsmasq.conf
        "--dhcp-leasefile=/var/tmp/sb/l",
        "--pid-file=/var/tmp/sb/p",
        "--log-facility=/var/tmp/sb/log",
        # Neither a default route nor a DNS server: guests' traffic stays on the LAN.
        "--dhcp-option=option:router",
        "--dhcp-option=option:dns-server",
    ):
        assert arg in argv
    (dhcp_range,) = [a for a in argv if a.startswith("--dhcp-range=")]
    first, last, mask, lease = dhcp_range.removeprefix("--dhcp-range=").split(",")
    assert (first, last, mask, lease) == (
        config.DHCP_FIRST,
        config.DHCP_LAST,
        "255.255.255.0",
        config.DHCP_LEASE_TIME,
    )


def test_dhcp_range_is_in_the_lan_above_every_host() -> None:
    lan_net = ipaddress.IPv4Network(f"{config.SUBNET}.0/{config.PREFIX_LEN}")
    first = ipaddress.IPv4Address(config.DHCP_FIRST)
    last = ipaddress.IPv4Address(config.DHCP_LAST)
    assert first in lan_net and last in lan_net and first <= last
    highest_host = ipaddress.IPv4Address(HostSpec(config.MAX_HOSTS - 1).address)
    assert highest_host < first
    for special in (config.BRIDGE_ADDRESS, config.WOL_ADDRESS):
        assert not first <= ipaddress.IPv4Address(special) <= last


def test_nat_network_is_libvirts_default_on_a_subnet_of_its_own() -> None:
    host = HostSpec(0)
    assert config.runs_nat_network(host)
    assert not config.runs_nat_network(HostSpec(1))
    net = ET.fromstring(config.render_nat_network(host))
    assert net.findtext("name") == "default"
    forward, bridge = net.find("forward"), net.find("bridge")
    assert forward is not None and forward.get("mode") == "nat"
    assert bridge is not None and bridge.get("name") == "virbr0"
    ip = net.find("ip")
    assert ip is not None
    subnet = ipaddress.IPv4Network(f"{ip.get('address')}/{ip.get('netmask')}", strict=False)
    assert subnet == ipaddress.IPv4Network(f"{config.NAT_SUBNET}.0/24")
    for other in (f"{config.SUBNET}.0/24", "192.168.122.0/24"):
        assert not subnet.overlaps(ipaddress.IPv4Network(other))
    dhcp_range = ip.find("dhcp/range")
    assert dhcp_range is not None
    assert ipaddress.IPv4Address(dhcp_range.get("start", "")) in subnet
    # Stable across `up`s: the same UUID every time.
    assert config.render_nat_network(host) == config.render_nat_network(HostSpec(0))


def test_inventory_puts_guests_on_br0_by_default() -> None:
    hosts = config.host_specs(4)
    inv = tomllib.loads(config.render_inventory(Path("/var/tmp/sb"), hosts[:3], hosts[3]))
    assert inv["defaults"]["network"] == "bridge:br0"


def test_lease_file_lines_give_mac_and_address() -> None:
    text = (
        "1795944871 52:54:00:d5:ad:9f 10.213.2.185 * 01:52:54:00:d5:ad:9f\n"
        "1795944900 52:54:00:aa:bb:cc 10.213.2.101 t1 *\n"
        "\n"
    )
    assert lan.parse_leases(text) == [
        ("52:54:00:d5:ad:9f", "10.213.2.185"),
        ("52:54:00:aa:bb:cc", "10.213.2.101"),
    ]
