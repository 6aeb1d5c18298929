"""Guests' addresses: asked of each source a host has, merged, and why none is known.

Sources (docs/networking.md, "How addresses are found"): the DHCP leases of the libvirt
network a guest is on, the guest agent, and the host's neighbour table. A bridged guest is in
that table only once the host has talked to it, so before the table is read for guests no
other source knows, the host is made to talk to its bridges' subnets once
(`commands.provoke_neighbours`, a fraction of a second, never waited on longer).

The parsing, merging and the "why none" words are pure; `read_host` asks one session.
"""

from __future__ import annotations

import ipaddress
import logging
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mclu import errors
from mclu.hosts import commands
from mclu.hosts.session import Session
from mclu.model import Address, AddressSource, Guest, GuestAddresses

log = logging.getLogger(__name__)

# `list` leaves the agent to `info`: a guest without one costs libvirt's agent timeout.
# READY last: the record of when the guest became ready counts only where no live source knows.
LIST_SOURCES = (AddressSource.LEASE, AddressSource.ARP, AddressSource.READY)
INFO_SOURCES = (AddressSource.LEASE, AddressSource.AGENT, AddressSource.ARP, AddressSource.READY)
# What is recorded when a guest becomes ready: the sources that answer at once.
READY_SOURCES = (AddressSource.LEASE, AddressSource.ARP)

# What each source not knowing a guest's address is called, in `why_none`.
_NONE_WORDS = {
    AddressSource.LEASE: "no lease",
    AddressSource.AGENT: "no agent",
    AddressSource.ARP: "not in the host's neighbour table",
}
NOT_RUNNING = "not running"
PROVOKE_TIMEOUT = 2.0  # seconds the provoking command may take at most (it takes ~0.2 s)


@dataclass(frozen=True)
class Wanted:
    """Which addresses a read pass asks for: of which sources, for which guests (None: all)."""

    sources: tuple[AddressSource, ...] = LIST_SOURCES
    names: frozenset[str] | None = None


def from_libvirt(
    interfaces: Mapping[str, Any] | None, source: AddressSource
) -> tuple[Address, ...]:
    """Addresses from `virDomainInterfaceAddresses`'s answer, `{ifname: {"hwaddr": MAC, "addrs":
    [{"addr", "prefix", "type"}]}}`; the loopback device's and anything that is not an IP
    address are left out (the agent reports the guest's `lo` too). Pure."""
    found = []
    for ifname, nic in (interfaces or {}).items():
        if ifname == "lo" or not isinstance(nic, Mapping):
            continue
        mac = str(nic.get("hwaddr") or "").lower()
        for entry in nic.get("addrs") or ():
            try:
                ip = ipaddress.ip_address(str(entry.get("addr", "")).partition("%")[0])
            except (ValueError, AttributeError):
                continue
            if ip.is_loopback:
                continue
            prefix = entry.get("prefix")
            found.append(
                Address(
                    ip=str(ip),
                    family=ip.version,
                    source=source,
                    mac=mac,
                    prefix=prefix if isinstance(prefix, int) else None,
                )
            )
    return tuple(found)


def from_leases(leases: Iterable[Mapping[str, Any]] | None) -> tuple[Address, ...]:
    """Addresses from `virNetworkGetDHCPLeases`'s answer, `[{"mac", "ipaddr", "prefix",
    ...}]`, as source LEASE with each lease's MAC; entries without a MAC or an IP address are
    left out. Pure."""
    found = []
    for lease in leases or ():
        if not isinstance(lease, Mapping):
            continue
        try:
            ip = ipaddress.ip_address(str(lease.get("ipaddr", "")).partition("%")[0])
        except ValueError:
            continue
        mac = str(lease.get("mac") or "").lower()
        prefix = lease.get("prefix")
        if mac:
            found.append(
                Address(
                    ip=str(ip),
                    family=ip.version,
                    source=AddressSource.LEASE,
                    mac=mac,
                    prefix=prefix if isinstance(prefix, int) else None,
                )
            )
    return tuple(found)


def lease_networks(guest: Guest) -> dict[str, tuple[str, ...]] | None:
    """{libvirt network: the MACs of the guest's NICs on it}, from its definition; None when
    its NICs were not read with their MACs (then its leases are asked of it alone). A guest
    with no NIC on a libvirt network has no lease to ask for: {}. Pure."""
    if not guest.networks or len(guest.macs) != len(guest.networks) or not all(guest.macs):
        return None
    on: dict[str, tuple[str, ...]] = {}
    for word, mac in zip(guest.networks, guest.macs, strict=True):
        kind, _, network = word.partition(":")
        if kind == "network" and network:
            on[network] = (*on.get(network, ()), mac)
    return on


def leased_to(leases: Iterable[Address], macs: Collection[str]) -> list[Address]:
    """The leases of these MACs. Pure."""
    return [a for a in leases if a.mac in macs]


def macs_of(domain_xml: str) -> tuple[str, ...]:
    """The MACs of a domain's NICs (`<interface><mac address=...>`), lower case. Pure."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return ()
    found = (m.get("address", "").lower() for m in root.findall("devices/interface/mac"))
    return tuple(mac for mac in found if mac)


def parse_neighbours(text: str) -> dict[str, list[tuple[str, int | None]]]:
    """`ip -4 neigh show` as {MAC: [(IP, None)...]}, reachable or stale entries only (an
    entry that failed or is still being resolved has no MAC, or a wrong one). Pure."""
    table: dict[str, list[tuple[str, int | None]]] = {}
    for line in text.splitlines():
        words = line.split()
        if "lladdr" not in words or words[-1] in ("FAILED", "INCOMPLETE"):
            continue
        mac = words[words.index("lladdr") + 1].lower()
        table.setdefault(mac, []).append((words[0], None))
    return table


def from_neighbours(
    table: Mapping[str, Sequence[tuple[str, int | None]]], macs: Iterable[str]
) -> tuple[Address, ...]:
    """The addresses the neighbour table holds for these MACs, as source ARP. Pure."""
    interfaces = {
        f"nic{i}": {
            "hwaddr": mac,
            "addrs": [{"addr": ip, "prefix": prefix} for ip, prefix in table.get(mac, ())],
        }
        for i, mac in enumerate(macs)
    }
    return from_libvirt(interfaces, AddressSource.ARP)


def merge(found: Iterable[Address]) -> tuple[Address, ...]:
    """Each address once, as the first source that knew it has it; IPv4 first, then IPv6,
    link-local last, each in the order found. Pure."""
    seen: dict[str, Address] = {}
    for address in found:
        seen.setdefault(address.ip, address)
    return tuple(sorted(seen.values(), key=_order))


def _order(address: Address) -> tuple[int, bool]:
    return address.family, ipaddress.ip_address(address.ip).is_link_local


def why_none(asked: Sequence[AddressSource], unreadable: Mapping[AddressSource, str]) -> str:
    """Why no source knew an address: `no lease, no agent, not in the host's neighbour table`;
    a source that could not be read says so (`agent: not readable here (...)`). The record
    made when the guest became ready is not a source asked, and is not named. Pure."""
    return ", ".join(
        f"{source}: {unreadable[source]}" if source in unreadable else _NONE_WORDS[source]
        for source in asked
        if source in _NONE_WORDS
    )


def combine(
    asked: Sequence[AddressSource],
    found: Iterable[Address],
    unreadable: Mapping[AddressSource, str],
) -> GuestAddresses:
    """One guest's GuestAddresses from what its sources said. Pure."""
    addresses = merge(found)
    return GuestAddresses(
        addresses=addresses,
        why_none="" if addresses else why_none(asked, unreadable),
        asked=tuple(asked),
    )


def not_running(asked: Sequence[AddressSource]) -> GuestAddresses:
    """What is known of a guest that is not running: nothing, and that is why."""
    return GuestAddresses(why_none=NOT_RUNNING, asked=tuple(asked))


async def read_host(
    host: Session, guests: Iterable[Guest], wanted: Wanted
) -> dict[str, GuestAddresses]:
    """The addresses of the wanted guests of one host (a shut-off guest: none, NOT_RUNNING).

    Sources are asked in the order given; the neighbour table only for the guests no earlier
    source knew, and for those it lacks, once more after `commands.provoke_neighbours` (one
    command, not waited on beyond PROVOKE_TIMEOUT; skipped on a session without a shell).
    Never raises for one guest or one source: what could not be read is in `why_none`.
    """
    chosen = [g for g in guests if wanted.names is None or g.name in wanted.names]
    running = [g.name for g in chosen if g.state.active]
    nics = {g.name: lease_networks(g) for g in chosen if g.state.active}
    found, unreadable = await _ask_sources(host, running, wanted.sources, nics)
    if AddressSource.READY in wanted.sources:
        for g in chosen:
            if g.name in found and g.mclu is not None:
                found[g.name].extend(recorded(g.mclu.addresses))
    result = {g.name: not_running(wanted.sources) for g in chosen if not g.state.active}
    for name in running:
        if name in found:  # gone meanwhile: left out
            result[name] = combine(wanted.sources, found[name], unreadable[name])
    return result


async def of_running(host: Session, name: str) -> tuple[Address, ...]:
    """The running guest's addresses from READY_SOURCES, to record when it becomes ready;
    () when none knows or they cannot be read (never raises a host's error)."""
    try:
        found, _unreadable = await _ask_sources(host, [name], READY_SOURCES)
    except errors.HostError as e:
        log.debug("%s: addresses of %s: %s", host.host, name, e)
        return ()
    return merge(found.get(name, ()))


def recorded(ips: Iterable[str]) -> tuple[Address, ...]:
    """Addresses recorded in mclu's metadata, as source READY (unparsable ones left out)."""
    found = []
    for text in ips:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        found.append(Address(ip=str(ip), family=ip.version, source=AddressSource.READY))
    return tuple(found)


async def _ask_sources(
    host: Session,
    running: Sequence[str],
    sources: Sequence[AddressSource],
    nics: Mapping[str, dict[str, tuple[str, ...]] | None] | None = None,
) -> tuple[dict[str, list[Address]], dict[str, dict[AddressSource, str]]]:
    """`nics`: per guest, `lease_networks`; a guest not in it (or None) is asked alone."""
    found: dict[str, list[Address]] = {name: [] for name in running}
    unreadable: dict[str, dict[AddressSource, str]] = {name: {} for name in running}
    nics = nics or {}
    for source in sources:
        if source == AddressSource.READY:
            continue
        if source == AddressSource.LEASE:
            alone = [n for n in found if nics.get(n) is None]
            await _ask(host, alone, source, found, unreadable)
            await _ask_leases(host, {n: on for n, on in nics.items() if on}, found, unreadable)
            continue
        if source != AddressSource.ARP:
            await _ask(host, list(found), source, found, unreadable)
            continue
        await _ask(host, [n for n, known in found.items() if not known], source, found, unreadable)
        unknown = [n for n, known in found.items() if not known and source not in unreadable[n]]
        if unknown and await _provoke(host):
            await _ask(host, unknown, source, found, unreadable)
    return found, unreadable


async def _ask(
    host: Session,
    names: Collection[str],
    source: AddressSource,
    found: dict[str, list[Address]],
    unreadable: dict[str, dict[AddressSource, str]],
) -> None:
    for name in names:
        if name not in found:  # gone during an earlier ask
            continue
        try:
            found[name].extend(await host.addresses(name, source))
        except errors.GuestNotFound:
            found.pop(name, None)
            unreadable.pop(name, None)
        except errors.Unsupported:
            unreadable[name][source] = "not readable here"
        except errors.HostError as e:
            log.debug("%s: %s addresses of %s: %s", host.host, source, name, e)
            unreadable[name][source] = f"not read ({e})"


async def _ask_leases(
    host: Session,
    nics: Mapping[str, dict[str, tuple[str, ...]]],
    found: dict[str, list[Address]],
    unreadable: dict[str, dict[AddressSource, str]],
) -> None:
    """The leases of each libvirt network the guests' NICs are on: one call per network,
    not per guest; matched to the guests by MAC."""
    for network in sorted({network for on in nics.values() for network in on}):
        guests = [name for name, on in nics.items() if network in on and name in found]
        try:
            leases = await host.network_leases(network)
        except errors.Unsupported:
            for name in guests:
                unreadable[name][AddressSource.LEASE] = "not readable here"
            continue
        except errors.HostError as e:
            log.debug("%s: leases of network %s: %s", host.host, network, e)
            for name in guests:
                unreadable[name][AddressSource.LEASE] = f"not read ({e})"
            continue
        for name in guests:
            found[name].extend(leased_to(leases, nics[name][network]))


async def _provoke(host: Session) -> bool:
    """Make the host talk to its bridges' subnets; whether it did (no shell, no bash: not)."""
    try:
        await host.run(commands.provoke_neighbours(), check=False, timeout=PROVOKE_TIMEOUT)
    except errors.HostError as e:
        log.debug("%s: not provoking neighbour entries: %s", host.host, e)
        return False
    return True
