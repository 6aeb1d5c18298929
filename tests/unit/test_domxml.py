"""mclu.decide.domxml: golden domain XML, checked by libvirt's schema, its test driver and
our parser.

Rewrite the golden files after an intended change with `pytest --regenerate-output`.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from mclu import hostpaths
from mclu.decide import domxml
from mclu.model import GuestMeta, GuestSpec, GuestState
from mclu.read import facts, metadata

DATA = Path(__file__).parent.parent / "data" / "domxml"
IMAGES = "/var/lib/libvirt/images"

META = GuestMeta(
    template="tiny",
    revision="3",
    built="2024-05-01T10:00:00Z",
    state="building",
    options=(("memory", "512 MiB"),),
)
KVM_BRIDGE = GuestSpec(
    name="app1",
    domain_type="kvm",
    memory=1 << 30,
    vcpus=2,
    disk_path=f"{IMAGES}/app1.qcow2",
    meta=META,
    network="bridge:br0",
    mac="52:54:00:12:34:56",
    uuid="5f0e6a2c-1b7d-4c3e-8a9f-2d4b6c8e0a1f",
)
QEMU_USER = GuestSpec(
    name="tiny1",
    domain_type="qemu",
    memory=256 << 20,
    vcpus=1,
    disk_path=f"{IMAGES}/tiny1.qcow2",
    meta=GuestMeta(template="tiny"),
)

CASES = {
    "kvm-bridge": KVM_BRIDGE,
    "qemu-user": QEMU_USER,
    "qemu-network": replace(
        QEMU_USER, name="net1", disk_path=f"{IMAGES}/net1.qcow2", network="network:default"
    ),
    "none-network": replace(
        QEMU_USER, name="quiet1", disk_path=f"{IMAGES}/quiet1.qcow2", network="none"
    ),
    "sata-bus": replace(QEMU_USER, name="old1", disk_path=f"{IMAGES}/old1.qcow2", disk_bus="sata"),
    "scsi-bus": replace(
        QEMU_USER, name="scsi1", disk_path=f"{IMAGES}/scsi1.qcow2", disk_bus="scsi"
    ),
    "full-copy-raw": replace(
        KVM_BRIDGE,
        name="data1",
        disk_path=f"{IMAGES}/data1.img",
        disk_format="raw",
        uuid=None,
        mac=None,
        meta=replace(META, options=(("full_copy", "true"),)),
    ),
    # Every XML metacharacter in every user value: escaped by the serializer, never markup.
    "metacharacters": GuestSpec(
        name="a&b<c>\"d'e",
        domain_type="qemu",
        memory=128 << 20,
        vcpus=1,
        disk_path=f"{IMAGES}/it's&<x>.qcow2",
        network='network:n"/><x',
        meta=GuestMeta(
            template="t<1>",
            revision="3",
            built="2024-05-01T10:00:00Z",
            state="building",
            options=(("note", "</mclu:guest><evil/>"),),
        ),
    ),
}

case = pytest.mark.parametrize("name", sorted(CASES))


def golden_path(name: str) -> Path:
    return DATA / f"{name}.xml"


@case
def test_render_matches_golden(name: str, golden: Callable[[Path, str], None]) -> None:
    golden(golden_path(name), domxml.render(CASES[name]))


@case
def test_golden_is_valid_for_libvirts_schema(name: str) -> None:
    # virt-xml-validate needs xmllint, and says nothing useful when it is missing.
    if not (shutil.which("virt-xml-validate") and shutil.which("xmllint")):
        pytest.skip("virt-xml-validate or xmllint not installed (libvirt-clients, libxml2-utils)")
    result = subprocess.run(
        ["virt-xml-validate", str(golden_path(name)), "domain"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.libvirt
@case
def test_libvirt_test_driver_defines_golden(name: str, testdriver_uri: str) -> None:
    libvirt = pytest.importorskip("libvirt")
    conn = libvirt.open(testdriver_uri)
    try:
        # A name or UUID the node already has would redefine that guest, not make a new one.
        assert CASES[name].name not in [d.name() for d in conn.listAllDomains()]
        domain = conn.defineXML(golden_path(name).read_text())
        described = domain.XMLDesc(0)
        domain.undefine()
    finally:
        conn.close()
    assert_round_trip(CASES[name], described)


@case
def test_parse_guest_reads_back_what_render_wrote(name: str) -> None:
    assert_round_trip(CASES[name], domxml.render(CASES[name]))


def assert_round_trip(spec: GuestSpec, xml: str) -> None:
    guest = facts.parse_guest(xml, GuestState.SHUTOFF, persistent=True)
    assert (guest.name, guest.vcpus, guest.memory, guest.max_memory) == (
        spec.name,
        spec.vcpus,
        spec.memory,
        spec.memory,
    )
    assert guest.disks == (spec.disk_path,)
    assert guest.mclu == spec.meta
    if spec.uuid:
        assert guest.uuid == spec.uuid


def parsed(spec: GuestSpec) -> ET.Element:
    return ET.fromstring(domxml.render(spec))


def test_metacharacters_stay_text() -> None:
    spec = CASES["metacharacters"]
    root = parsed(spec)
    assert root.findtext("name") == spec.name
    assert root.find(".//evil") is None and root.find(f".//{{{metadata.NAMESPACE}}}evil") is None
    assert root.find("devices/interface/source").get("network") == 'n"/><x'  # type: ignore[union-attr]
    assert root.find("devices/disk/source").get("file") == spec.disk_path  # type: ignore[union-attr]


def test_cpu_passthrough_only_for_kvm() -> None:
    assert parsed(KVM_BRIDGE).find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]
    assert parsed(QEMU_USER).find("cpu") is None


def test_domain_type_and_arch_come_from_the_spec() -> None:
    root = parsed(replace(QEMU_USER, arch="aarch64"))
    assert root.get("type") == "qemu"
    os_type = root.find("os/type")
    assert os_type is not None and os_type.get("arch") == "aarch64" and os_type.text == "hvm"
    assert os_type.get("machine") is None  # libvirt picks the host's default machine type


def test_serial_console_is_logged_per_guest() -> None:
    log = parsed(QEMU_USER).find("devices/serial/log")
    assert log is not None
    assert log.attrib == {"file": "/var/log/libvirt/qemu/tiny1-console.log", "append": "off"}
    assert hostpaths.console_log("tiny1") == log.get("file")


def test_none_network_has_no_nic_and_user_network_has_one() -> None:
    assert parsed(CASES["none-network"]).find("devices/interface") is None
    nic = parsed(QEMU_USER).find("devices/interface")
    assert nic is not None and nic.get("type") == "user" and nic.find("source") is None
    assert nic.find("mac") is None  # libvirt generates one


@pytest.mark.parametrize(
    ("bus", "dev"), [("virtio", "vda"), ("sata", "sda"), ("scsi", "sda"), ("ide", "hda")]
)
def test_disk_target_follows_the_bus(bus: str, dev: str) -> None:
    target = parsed(replace(QEMU_USER, disk_bus=bus)).find("devices/disk/target")
    assert target is not None and target.attrib == {"dev": dev, "bus": bus}


def test_memory_is_rounded_up_to_whole_kib() -> None:
    root = parsed(replace(QEMU_USER, memory=(256 << 20) + 1))
    assert root.findtext("memory") == root.findtext("currentMemory") == str(256 * 1024 + 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"disk_bus": "usb"}, "unknown disk bus 'usb'"),
        ({"network": "bridge:"}, "unknown network 'bridge:'"),
        ({"network": "vde:x"}, "unknown network 'vde:x'"),
        ({"name": "../etc/x"}, "cannot be used in a path"),
        ({"name": ""}, "cannot be used in a path"),
    ],
)
def test_refuses_what_it_cannot_render(change: dict[str, str], message: str) -> None:
    with pytest.raises(domxml.SpecError, match=message):
        domxml.render(replace(QEMU_USER, **change))  # type: ignore[arg-type]
