"""mclu.read.addresses: libvirt's answers parsed (recorded in tests/data/facts/addresses/),
sources merged, the reason when none knows, and one host's read against a fake host."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from mclu import errors
from mclu.hosts import commands, fake
from mclu.model import Address, AddressSource, GuestAddresses, GuestMeta
from mclu.read import addresses, metadata
from tests.builders import SHUTOFF, guest

DATA = Path(__file__).parents[1] / "data" / "facts" / "addresses"
CASES = sorted(p.name.removesuffix(".input.json") for p in DATA.glob("*.input.json"))

LEASE, AGENT, ARP = AddressSource.LEASE, AddressSource.AGENT, AddressSource.ARP


@pytest.mark.parametrize("case", CASES)
def test_from_libvirt_on_recorded_answers(case: str) -> None:
    answer = json.loads((DATA / f"{case}.input.json").read_text())
    expected = json.loads((DATA / f"{case}.json").read_text())
    found = addresses.from_libvirt(answer, AddressSource(expected["source"]))
    assert [
        {"ip": a.ip, "family": a.family, "source": a.source, "mac": a.mac, "prefix": a.prefix}
        for a in found
    ] == expected["addresses"]


def test_from_libvirt_of_nothing() -> None:
    assert addresses.from_libvirt({}, LEASE) == ()
    assert addresses.from_libvirt(None, ARP) == ()
    assert addresses.from_libvirt({"eth0": {"addrs": [{"addr": "not an ip"}]}}, ARP) == ()


def test_merge_keeps_the_first_source_and_puts_ipv4_first_link_local_last() -> None:
    merged = addresses.merge(
        [
            Address("fe80::1", 6, AGENT),
            Address("2001:db8::7", 6, AGENT),
            Address("10.0.0.7", 4, LEASE, "52:54:00:00:00:07"),
            Address("10.0.0.7", 4, ARP, "52:54:00:00:00:07"),
        ]
    )
    assert [(a.ip, a.source) for a in merged] == [
        ("10.0.0.7", LEASE),
        ("2001:db8::7", AGENT),
        ("fe80::1", AGENT),
    ]


def test_why_none_names_every_source_asked() -> None:
    assert (
        addresses.why_none((LEASE, AGENT, ARP), {})
        == "no lease, no agent, not in the host's neighbour table"
    )
    assert addresses.why_none((LEASE, AGENT), {AGENT: "not readable here"}) == (
        "no lease, agent: not readable here"
    )


def _host(**guests_addresses: tuple[Address, ...]) -> fake.FakeSession:
    host = fake.FakeHost(name="a")
    for name in ("web1", "web2"):
        host.guests[name] = guest(name)
    host.guests["off"] = guest("off", state=SHUTOFF)
    host.addresses.update(guests_addresses)
    return fake.FakeSession(host, "fake:///a")


async def test_read_host_merges_sources_and_says_why_none() -> None:
    session = _host(
        web1=(Address("192.168.122.7", 4, LEASE, "52:54:00:00:00:01", 24),),
        web2=(Address("10.213.1.9", 4, AGENT),),
    )
    wanted = addresses.Wanted(addresses.LIST_SOURCES)
    found = await addresses.read_host(session, session.fake_host.guests.values(), wanted)
    assert found["web1"].addresses[0].ip == "192.168.122.7"
    # the agent knows web2's address, but list does not ask it
    assert found["web2"] == GuestAddresses(
        why_none="no lease, not in the host's neighbour table", asked=addresses.LIST_SOURCES
    )
    assert found["off"].why_none == "not running"


async def test_read_host_provokes_the_neighbour_table_once_for_guests_nobody_knows() -> None:
    session = _host(web1=(Address("192.168.122.7", 4, LEASE),))
    provoke = tuple(commands.provoke_neighbours())
    session.fake_host.commands.update([fake.canned(provoke)])
    wanted = addresses.Wanted(addresses.LIST_SOURCES)
    await addresses.read_host(session, session.fake_host.guests.values(), wanted)
    assert session.fake_host.ran == [provoke]


async def test_read_host_does_not_provoke_when_every_guest_is_known() -> None:
    session = _host(
        web1=(Address("192.168.122.7", 4, LEASE),), web2=(Address("10.213.1.9", 4, ARP),)
    )
    wanted = addresses.Wanted(addresses.LIST_SOURCES)
    await addresses.read_host(session, session.fake_host.guests.values(), wanted)
    assert session.fake_host.ran == []


async def test_read_host_only_for_the_names_wanted() -> None:
    session = _host()
    wanted = addresses.Wanted(addresses.INFO_SOURCES, names=frozenset({"web2"}))
    found = await addresses.read_host(session, session.fake_host.guests.values(), wanted)
    assert list(found) == ["web2"]
    assert found["web2"].why_none == "no lease, no agent, not in the host's neighbour table"


async def test_a_source_that_fails_is_named_and_the_others_still_count() -> None:
    class Failing(fake.FakeSession):
        async def addresses(self, name: str, source: AddressSource) -> tuple[Address, ...]:
            if source == AGENT:
                raise errors.LibvirtCallFailed(
                    host="a", what="read the agent addresses of web1", reason="boom"
                )
            return await super().addresses(name, source)

    host = fake.FakeHost(name="a", guests={"web1": guest("web1")})
    session = Failing(host, "fake:///a")
    wanted = addresses.Wanted(addresses.INFO_SOURCES)
    found = await addresses.read_host(session, host.guests.values(), wanted)
    assert found["web1"].why_none == (
        "no lease, agent: not read (a: read the agent addresses of web1: boom), "
        "not in the host's neighbour table"
    )


def test_neighbour_table_matched_to_a_guests_macs() -> None:
    table = addresses.parse_neighbours((DATA / "ip-neigh-show.txt").read_text())
    found = addresses.from_neighbours(table, ["52:54:00:d5:ad:9f", "52:54:00:00:00:99"])
    assert [(a.ip, a.source, a.mac) for a in found] == [
        ("10.213.2.185", ARP, "52:54:00:d5:ad:9f"),
        ("10.213.2.186", ARP, "52:54:00:d5:ad:9f"),
    ]
    assert "10.213.2.13" not in str(table) and "10.213.2.14" not in str(table)


def test_macs_of_domain_xml() -> None:
    xml = (
        "<domain><devices><interface type='bridge'><mac address='52:54:00:AA:00:01'/>"
        "</interface><interface type='user'/></devices></domain>"
    )
    assert addresses.macs_of(xml) == ("52:54:00:aa:00:01",)
    assert addresses.macs_of("not xml") == ()


def test_the_addresses_recorded_when_ready_round_trip_in_the_metadata() -> None:
    meta = GuestMeta(template="tiny", ready="console:login:", addresses=("10.0.0.7", "2001:db8::7"))
    text = metadata.render(meta)
    assert 'addresses="10.0.0.7 2001:db8::7"' in text
    assert metadata.parse(text) == meta
    assert "addresses" not in metadata.render(GuestMeta(template="tiny"))


async def test_the_recorded_address_counts_only_where_no_live_source_knows_one() -> None:
    session = _host(web1=(Address("192.168.122.7", 4, LEASE),))
    for name in ("web1", "web2"):
        g = session.fake_host.guests[name]
        session.fake_host.guests[name] = dataclasses.replace(
            g, mclu=GuestMeta(template="tiny", addresses=("10.0.0.9", "bad"))
        )
    wanted = addresses.Wanted(addresses.LIST_SOURCES)
    found = await addresses.read_host(session, session.fake_host.guests.values(), wanted)
    assert [(a.ip, a.source) for a in found["web1"].addresses] == [
        ("192.168.122.7", LEASE),
        ("10.0.0.9", AddressSource.READY),
    ]
    assert [(a.ip, a.source) for a in found["web2"].addresses] == [
        ("10.0.0.9", AddressSource.READY)
    ]


async def test_of_running_reads_the_quick_sources_and_never_raises() -> None:
    session = _host(web1=(Address("192.168.122.7", 4, LEASE), Address("10.0.0.1", 4, AGENT)))
    assert [a.ip for a in await addresses.of_running(session, "web1")] == ["192.168.122.7"]
    session.fake_host.failure = errors.HostUnreachable(host="a", address="a", reason="gone")
    assert await addresses.of_running(session, "web1") == ()


# --- leases: one call per libvirt network, not per guest ----------------------------------------

MAC1, MAC2, MAC3 = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"


def test_from_leases_keeps_the_mac_and_prefix_of_each_lease() -> None:
    leases: list[dict[str, Any]] = [
        {
            "iface": "virbr0",
            "type": 0,
            "mac": "52:54:00:00:00:01",
            "ipaddr": "192.168.122.7",
            "prefix": 24,
            "hostname": "web1",
            "expirytime": 1700000000,
        },
        {"mac": "52:54:00:00:00:02", "ipaddr": "fd00::7", "prefix": 64, "type": 1},
        {"mac": "", "ipaddr": "192.168.122.8"},  # no MAC: cannot be matched to a guest
        {"mac": "52:54:00:00:00:03", "ipaddr": "not an ip"},
    ]
    assert addresses.from_leases(leases) == (
        Address("192.168.122.7", 4, LEASE, MAC1, 24),
        Address("fd00::7", 6, LEASE, MAC2, 64),
    )
    assert addresses.from_leases(None) == addresses.from_leases([]) == ()


def test_lease_networks_of_a_guests_nics() -> None:
    on = dataclasses.replace(
        guest("web1"),
        networks=("network:default", "bridge:br0", "network:nat", "network:default"),
        macs=(MAC1, MAC2, MAC3, "52:54:00:00:00:04"),
    )
    assert addresses.lease_networks(on) == {
        "default": (MAC1, "52:54:00:00:00:04"),
        "nat": (MAC3,),
    }
    bridged = dataclasses.replace(guest("web2"), networks=("bridge:br0",), macs=(MAC2,))
    assert addresses.lease_networks(bridged) == {}  # no lease to ask for
    assert addresses.lease_networks(guest("web3")) is None  # NICs not read: asked alone
    unmatched = dataclasses.replace(guest("web4"), networks=("network:default",), macs=("",))
    assert addresses.lease_networks(unmatched) is None


class Counting(fake.FakeSession):
    """A fake session that counts the lease calls, per guest and per network."""

    def __init__(self, host: fake.FakeHost) -> None:
        super().__init__(host, "fake://a")
        self.per_guest: list[str] = []
        self.per_network: list[str] = []

    async def addresses(self, name: str, source: AddressSource) -> tuple[Address, ...]:
        if source == LEASE:
            self.per_guest.append(name)
        return await super().addresses(name, source)

    async def network_leases(self, network: str) -> tuple[Address, ...]:
        self.per_network.append(network)
        return await super().network_leases(network)


async def test_leases_are_read_once_per_network_and_matched_by_mac() -> None:
    host = fake.FakeHost("a", networks=("default", "nat"))
    names = [f"web{i}" for i in range(10)]
    for i, name in enumerate(names):
        mac = f"52:54:00:00:01:{i:02x}"
        network = "network:nat" if i == 9 else "network:default"
        host.guests[name] = dataclasses.replace(guest(name), networks=(network,), macs=(mac,))
        host.addresses[name] = (Address(f"192.168.122.{10 + i}", 4, LEASE, mac, 24),)
    host.guests["br"] = dataclasses.replace(guest("br"), networks=("bridge:br0",), macs=(MAC3,))
    host.guests["old"] = dataclasses.replace(guest("old"))  # its NICs not read: asked alone
    session = Counting(host)
    wanted = addresses.Wanted((LEASE,))
    found = await addresses.read_host(session, host.guests.values(), wanted)
    assert sorted(session.per_network) == ["default", "nat"]  # 2 calls for 11 guests on them
    assert session.per_guest == ["old"]
    for i, name in enumerate(names):
        assert [a.ip for a in found[name].addresses] == [f"192.168.122.{10 + i}"]
    assert found["br"].addresses == () and found["br"].why_none == "no lease"


async def test_leases_that_cannot_be_read_say_so_for_each_guest_on_the_network() -> None:
    class Failing(Counting):
        async def network_leases(self, network: str) -> tuple[Address, ...]:
            raise errors.Unsupported(host="a", what="DHCP leases", uri="test:///")

    host = fake.FakeHost("a")
    host.guests["web1"] = dataclasses.replace(
        guest("web1"), networks=("network:default",), macs=(MAC1,)
    )
    found = await addresses.read_host(
        Failing(host), host.guests.values(), addresses.Wanted((LEASE,))
    )
    assert found["web1"].why_none == "lease: not readable here"
