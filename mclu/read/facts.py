"""Pure parsers: what libvirt and the kernel report, turned into mclu's model.

No libvirt or asyncssh import: text and dicts in, dataclasses out, tested on recorded data in
tests/data/facts/. Sizes come out in bytes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mclu.model import Guest, GuestState
from mclu.read import metadata

KIB = 1024

# libvirt's <memory unit=...> units, in bytes (https://libvirt.org/formatdomain.html#memory-allocation).
_UNITS = {
    "b": 1,
    "bytes": 1,
    "k": KIB,
    "kib": KIB,
    "kb": 1000,
    "m": KIB**2,
    "mib": KIB**2,
    "mb": 1000**2,
    "g": KIB**3,
    "gib": KIB**3,
    "gb": 1000**3,
    "t": KIB**4,
    "tib": KIB**4,
    "tb": 1000**4,
}

# Disk devices whose source is guest storage; cdrom and floppy media are shared images.
_STORAGE_DEVICES = ("disk", "lun")


class ParseError(ValueError):
    """Input that is not what libvirt or the kernel writes."""


@dataclass(frozen=True)
class Capabilities:
    """What a host's libvirt capabilities XML says about it."""

    arch: str
    cpus: int | None  # None: the XML has no topology; ask virNodeGetInfo instead
    domain_types: tuple[str, ...]  # for guests of the host's own arch, e.g. ("qemu", "kvm")
    host_uuid: str = ""  # host/uuid: libvirtd's host_uuid, else the machine's (SMBIOS)


@dataclass(frozen=True)
class Memory:
    """A host's memory in bytes: all of it, and what new guests could still get."""

    total: int
    available: int


def parse_capabilities(xml: str) -> Capabilities:
    """Read arch, CPU count and domain types from `virConnectGetCapabilities` XML.

    CPUs are the sum of the NUMA cells' CPUs, else sockets x dies x cores x threads of
    the host CPU topology, else None.
    """
    root = _parse_xml(xml, "capabilities")
    arch = root.findtext("host/cpu/arch")
    if not arch:
        raise ParseError("capabilities XML has no host/cpu/arch")
    return Capabilities(
        arch=arch,
        cpus=_cpus_of(root),
        domain_types=_domain_types(root, arch),
        host_uuid=(root.findtext("host/uuid") or "").strip(),
    )


def parse_node_memory_stats(stats: Mapping[str, int]) -> Memory:
    """Read `virNodeGetMemoryStats` (values in KiB): total, and free + buffers + cached.

    libvirt does not pass on MemAvailable, so page cache counts as available, as it does for
    the kernel when it needs memory.
    """
    if "total" not in stats or "free" not in stats:
        raise ParseError(f"node memory stats lack total or free: {sorted(stats)}")
    available = sum(stats.get(key, 0) for key in ("free", "buffers", "cached"))
    return Memory(total=stats["total"] * KIB, available=available * KIB)


def parse_bridges(interface_xmls: Iterable[str]) -> tuple[str, ...]:
    """The names of the bridges among interfaces, sorted, from each one's
    `virInterfaceGetXMLDesc` XML (`<interface type='bridge' name='br0'>`)."""
    bridges = set()
    for xml in interface_xmls:
        root = _parse_xml(xml, "interface")
        name = root.get("name")
        if root.get("type") == "bridge" and name:
            bridges.add(name)
    return tuple(sorted(bridges))


def parse_domain_name(xml: str) -> str:
    """The `<name>` of domain XML (raises ParseError if it has none)."""
    name = _parse_xml(xml, "domain").findtext("name")
    if not name:
        raise ParseError("domain XML has no <name>")
    return name.strip()


def parse_guest(xml: str, state: GuestState, *, persistent: bool, autostart: bool = False) -> Guest:
    """Read a guest from its domain XML; the state and persistence come from other libvirt calls.

    Raises ParseError for XML that is not a domain, and for mclu metadata that is not mclu's.
    """
    root = _parse_xml(xml, "domain")
    try:
        meta = metadata.find_in_domain(root)
    except metadata.MetadataError as e:
        raise ParseError(f"guest {root.findtext('name')}: {e}") from None
    max_memory = _memory_of(root, "memory")
    current = root.find("currentMemory")
    return Guest(
        name=parse_domain_name(xml),
        uuid=(root.findtext("uuid") or "").strip(),
        state=state,
        vcpus=_vcpus_of(root),
        memory=_size_of(current) if current is not None else max_memory,
        max_memory=max_memory,
        disks=_disk_sources(root),
        mclu=meta,
        persistent=persistent,
        autostart=autostart,
        networks=_networks_of(root),
        macs=_macs_of(root),
        cdroms=_cdrom_media(root),
    )


def _cdrom_media(root: ET.Element) -> tuple[str, ...]:
    """The file of each CD-ROM drive that holds a medium."""
    media = []
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        if disk.get("device") == "cdrom" and source is not None and source.get("file"):
            media.append(source.get("file", ""))
    return tuple(media)


def _macs_of(root: ET.Element) -> tuple[str, ...]:
    """Each NIC's MAC, lower case, in the order of `_networks_of`; "" where it has none."""
    macs = []
    for nic in root.findall("devices/interface"):
        mac = nic.find("mac")
        macs.append(mac.get("address", "").lower() if mac is not None else "")
    return tuple(macs)


def _networks_of(root: ET.Element) -> tuple[str, ...]:
    """Each NIC as GuestSpec.network says it: "network:NAME", "bridge:NAME", or its type."""
    words = []
    for nic in root.findall("devices/interface"):
        kind, source = nic.get("type", ""), nic.find("source")
        name = source.get(kind) if source is not None and kind in ("network", "bridge") else None
        words.append(f"{kind}:{name}" if name else kind)
    return tuple(words)


def libvirt_version(number: int) -> str:
    """libvirt's version number as text: 9000000 → "9.0.0"."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _parse_xml(xml: str, root_tag: str) -> ET.Element:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise ParseError(f"not XML: {e}") from None
    if root.tag != root_tag:
        raise ParseError(f"expected <{root_tag}>, got <{root.tag}>")
    return root


def _cpus_of(root: ET.Element) -> int | None:
    cells = root.findall("host/topology/cells/cell/cpus")
    if cells:
        return sum(_int_attribute(cpus, "num") for cpus in cells)
    topology = root.find("host/cpu/topology")
    if topology is None:
        return None
    count = 1
    for part in ("sockets", "dies", "cores", "threads"):
        count *= int(topology.get(part, "1"))
    return count


def _domain_types(root: ET.Element, host_arch: str) -> tuple[str, ...]:
    """Domain types offered for the host's own arch (else for any arch), in XML order."""
    arches = root.findall("guest/arch")
    own = [a for a in arches if a.get("name") == host_arch] or arches
    types = (d.get("type", "") for a in own for d in a.findall("domain"))
    return tuple(dict.fromkeys(t for t in types if t))


def _vcpus_of(root: ET.Element) -> int:
    vcpu = root.find("vcpu")
    if vcpu is None:
        return 1  # libvirt's default when <vcpu> is absent
    return int(vcpu.get("current") or (vcpu.text or "1").strip())


def _memory_of(root: ET.Element, tag: str) -> int:
    element = root.find(tag)
    if element is None:
        raise ParseError(f"domain XML has no <{tag}>")
    return _size_of(element)


def _size_of(element: ET.Element) -> int:
    unit = element.get("unit", "KiB").lower()
    if unit not in _UNITS:
        raise ParseError(f"unknown memory unit {unit!r} in <{element.tag}>")
    try:
        return int((element.text or "").strip()) * _UNITS[unit]
    except ValueError:
        raise ParseError(f"<{element.tag}> is not a number: {element.text!r}") from None


def _disk_sources(root: ET.Element) -> tuple[str, ...]:
    """Source of each storage disk: a path, a device, a network name, or "pool/volume"."""
    sources = []
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        if disk.get("device", "disk") not in _STORAGE_DEVICES or source is None:
            continue
        path = source.get("file") or source.get("dev") or source.get("name")
        if path is None and source.get("volume"):
            path = f"{source.get('pool')}/{source.get('volume')}"
        if path:
            sources.append(path)
    return tuple(sources)


def _int_attribute(element: ET.Element, name: str) -> int:
    try:
        return int(element.get(name, ""))
    except ValueError:
        raise ParseError(f"<{element.tag} {name}=...> is not a number") from None
