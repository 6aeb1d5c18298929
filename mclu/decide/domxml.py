"""A new guest's libvirt domain XML, rendered from a GuestSpec.

Pure: no libvirt import. Built with xml.etree, so every user value (name, paths, network
names, metadata) is escaped by the serializer, never pasted into markup. Elements follow
https://libvirt.org/formatdomain.html; what is left out (machine type, video, input, PCI
addresses) libvirt fills in with the host's defaults when the domain is defined.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from mclu import hostpaths
from mclu.model import GuestSpec
from mclu.read import metadata

# The first disk's device name per bus (libvirt derives the controller from the bus).
_TARGET_DEV = {"virtio": "vda", "scsi": "sda", "sata": "sda", "ide": "hda"}
# A seed's CD-ROM: SATA works on both of QEMU's x86 machine types (IDE is not on q35); sdb,
# as the system disk may be sda.
SEED_TARGET = ("sdb", "sata")

# Declared once on <domain>: ElementTree writes namespace declarations on the root element.
ET.register_namespace(metadata.PREFIX, metadata.NAMESPACE)


class SpecError(ValueError):
    """A GuestSpec that cannot become domain XML (unknown bus or network, unsafe name)."""


def render(spec: GuestSpec) -> str:
    """The domain XML for `spec`, pretty-printed, ending in a newline.

    Raises SpecError for a disk bus or network mclu does not know, and for a name that
    would escape the console log directory.
    """
    _check_name(spec.name)
    domain = ET.Element("domain", type=spec.domain_type)
    _child(domain, "name", spec.name)
    if spec.uuid:
        _child(domain, "uuid", spec.uuid)
    ET.SubElement(domain, "metadata").append(ET.fromstring(metadata.render(spec.meta)))
    _child(domain, "memory", str(_kib(spec.memory)), unit="KiB")
    _child(domain, "currentMemory", str(_kib(spec.memory)), unit="KiB")
    _child(domain, "vcpu", str(spec.vcpus), placement="static")
    _add_os(domain, spec.arch)
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")  # ACPI shutdown: `mclu stop` asks the guest politely
    ET.SubElement(features, "apic")
    if spec.domain_type == "kvm":
        # The host's CPU as is: fastest, and mclu's guests do not migrate between unlike hosts.
        ET.SubElement(domain, "cpu", mode="host-passthrough")
    ET.SubElement(domain, "clock", offset="utc")
    _child(domain, "on_poweroff", "destroy")
    _child(domain, "on_reboot", "restart")
    _child(domain, "on_crash", "destroy")
    domain.append(_devices(spec))
    ET.indent(domain, space="  ")
    return ET.tostring(domain, encoding="unicode") + "\n"


def _check_name(name: str) -> None:
    # The name becomes part of a host path (the console log); libvirt refuses "/" too.
    if not name or "/" in name or "\0" in name:
        raise SpecError(f"guest name {name!r} cannot be used in a path")


def _add_os(domain: ET.Element, arch: str) -> None:
    os_ = ET.SubElement(domain, "os")
    # No machine= attribute: libvirt picks the host's default machine type for the arch.
    _child(os_, "type", "hvm", arch=arch)
    ET.SubElement(os_, "boot", dev="hd")


def _devices(spec: GuestSpec) -> ET.Element:
    devices = ET.Element("devices")
    devices.append(_disk(spec))
    if spec.seed:
        devices.append(_cdrom(spec.seed))
    if spec.disk_bus == "scsi":
        ET.SubElement(devices, "controller", type="scsi", model="virtio-scsi")
    interface = _interface(spec.network, spec.mac)
    if interface is not None:
        devices.append(interface)
    _add_console(devices, spec.name)
    # The QEMU guest agent's channel (libvirt picks the socket's path): the `agent` readiness
    # check, and addresses from inside the guest, where it runs qemu-ga.
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    graphics = ET.SubElement(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    ET.SubElement(graphics, "listen", type="address", address="127.0.0.1")
    rng = ET.SubElement(devices, "rng", model="virtio")  # entropy for sshd's first boot
    _child(rng, "backend", "/dev/urandom", model="random")
    ET.SubElement(devices, "memballoon", model="virtio")
    return devices


def _disk(spec: GuestSpec) -> ET.Element:
    if spec.disk_bus not in _TARGET_DEV:
        raise SpecError(f"unknown disk bus {spec.disk_bus!r}: use one of {', '.join(_TARGET_DEV)}")
    disk = ET.Element("disk", type="file", device="disk")
    # discard=unmap: blocks the guest frees go back to the host's sparse file.
    ET.SubElement(disk, "driver", name="qemu", type=spec.disk_format, discard="unmap")
    ET.SubElement(disk, "source", file=spec.disk_path)
    ET.SubElement(disk, "target", dev=_TARGET_DEV[spec.disk_bus], bus=spec.disk_bus)
    return disk


def cdrom(medium: str | None) -> str:
    """A seed's CD-ROM drive as device XML (for attaching, ejecting, detaching it): holding
    the file `medium`, or empty (None)."""
    return ET.tostring(_cdrom(medium), encoding="unicode")


def _cdrom(medium: str | None) -> ET.Element:
    disk = ET.Element("disk", type="file", device="cdrom")
    ET.SubElement(disk, "driver", name="qemu", type="raw")
    if medium is not None:
        # optional: a guest whose seed is gone (`mclu cleanup`) still starts, without it.
        ET.SubElement(disk, "source", file=medium, startupPolicy="optional")
    dev, bus = SEED_TARGET
    ET.SubElement(disk, "target", dev=dev, bus=bus)
    ET.SubElement(disk, "readonly")
    return disk


def _interface(network: str, mac: str | None) -> ET.Element | None:
    """The NIC for "user", "network:NAME" or "bridge:NAME"; None for "none"."""
    if network == "none":
        return None
    kind, _, source = network.partition(":")
    if not (network == "user" or (kind in ("network", "bridge") and source)):
        raise SpecError(
            f'unknown network {network!r}: use "network:NAME", "bridge:NAME", "user" or "none"'
        )
    interface = ET.Element("interface", type=kind)
    if mac:
        ET.SubElement(interface, "mac", address=mac)
    if source:
        ET.SubElement(interface, "source", {kind: source})
    ET.SubElement(interface, "model", type="virtio")
    return interface


def _add_console(devices: ET.Element, name: str) -> None:
    serial = ET.SubElement(devices, "serial", type="pty")
    # append=off: each boot's log starts empty, so a reader sees only the current boot.
    ET.SubElement(serial, "log", file=hostpaths.console_log(name), append="off")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")


def _child(parent: ET.Element, tag: str, text: str, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    element.text = text
    return element


def _kib(size: int) -> int:
    """Bytes → KiB, rounded up so the guest never gets less than asked."""
    return -(-size // 1024)
