"""mclu.read.facts on recorded libvirt and kernel output (tests/data/facts/, see its README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mclu.model import Guest, GuestMeta, GuestState
from mclu.read import facts

DATA = Path(__file__).parent.parent / "data" / "facts"


def cases(directory: str, pattern: str) -> list[Any]:
    """(input path, expected dict) for each recorded input, with the case name as test id."""
    inputs = sorted((DATA / directory).glob(pattern))
    assert inputs, f"no cases in {DATA / directory}"
    suffix = pattern.removeprefix("*")
    return [
        pytest.param(path, json.loads(expected_path(path, suffix).read_text()), id=path.name)
        for path in inputs
    ]


def expected_path(path: Path, suffix: str) -> Path:
    return path.with_name(path.name.removesuffix(suffix) + ".json")


@pytest.mark.parametrize(("path", "expected"), cases("capabilities", "*.xml"))
def test_capabilities(path: Path, expected: dict[str, Any]) -> None:
    parsed = facts.parse_capabilities(path.read_text())
    assert parsed == facts.Capabilities(
        arch=expected["arch"],
        cpus=expected["cpus"],
        domain_types=tuple(expected["domain_types"]),
        host_uuid=expected.get("host_uuid", ""),  # the test driver's capabilities have none
    )


@pytest.mark.parametrize(("path", "expected"), cases("node_memory_stats", "*.input.json"))
def test_node_memory_stats(path: Path, expected: dict[str, int]) -> None:
    stats = json.loads(path.read_text())
    assert facts.parse_node_memory_stats(stats) == facts.Memory(**expected)


@pytest.mark.parametrize(("path", "expected"), cases("interfaces", "*.input.json"))
def test_bridges(path: Path, expected: dict[str, list[str]]) -> None:
    assert facts.parse_bridges(json.loads(path.read_text())) == tuple(expected["bridges"])


def test_bridges_refuse_what_is_not_interface_xml() -> None:
    with pytest.raises(facts.ParseError):
        facts.parse_bridges(["<network><name>default</name></network>"])


@pytest.mark.parametrize(("path", "expected"), cases("domain", "*.xml"))
def test_guest(path: Path, expected: dict[str, Any]) -> None:
    guest = facts.parse_guest(
        path.read_text(), GuestState(expected["state"]), persistent=expected["persistent"]
    )
    assert guest == guest_from_json(expected["guest"])


def guest_from_json(data: dict[str, Any]) -> Guest:
    meta = data["mclu"]
    return Guest(
        **{
            **data,
            "state": GuestState(data["state"]),
            "disks": tuple(data["disks"]),
            "networks": tuple(data.get("networks", ())),
            "macs": tuple(data.get("macs", ())),
            "cdroms": tuple(data.get("cdroms", ())),
            "mclu": None
            if meta is None
            else GuestMeta(**{**meta, "options": tuple(tuple(o) for o in meta["options"])}),
        },
    )


def test_guest_takes_state_and_persistence_from_the_caller() -> None:
    xml = (DATA / "domain" / "sandbox-qemu-running-plain.xml").read_text()
    guest = facts.parse_guest(xml, GuestState.PAUSED, persistent=False)
    assert (guest.state, guest.persistent) == (GuestState.PAUSED, False)


def test_guest_memory_units_and_defaults() -> None:
    xml = """<domain type='qemu'><name>tiny</name>
               <memory unit='GiB'>2</memory><os><type>hvm</type></os></domain>"""
    guest = facts.parse_guest(xml, GuestState.SHUTOFF, persistent=True)
    # No <currentMemory>: libvirt gives the guest all of <memory>; no <vcpu>: one CPU.
    assert (guest.vcpus, guest.memory, guest.max_memory, guest.disks) == (1, 2 << 30, 2 << 30, ())


def test_guest_disk_from_a_storage_pool_volume() -> None:
    xml = """<domain type='qemu'><name>v</name><memory>1024</memory><devices>
               <disk type='volume' device='disk'><source pool='default' volume='v.qcow2'/></disk>
               <disk type='network' device='disk'><source protocol='nbd' name='export'/></disk>
             </devices></domain>"""
    guest = facts.parse_guest(xml, GuestState.SHUTOFF, persistent=True)
    assert guest.disks == ("default/v.qcow2", "export")


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<domain>", "not XML"),
        ("<capabilities/>", "expected <domain>"),
        ("<domain><memory>1</memory></domain>", "no <name>"),
        ("<domain><name>x</name></domain>", "no <memory>"),
        ("<domain><name>x</name><memory unit='parsec'>1</memory></domain>", "unknown memory unit"),
        (
            "<domain><name>x</name><memory>1</memory><metadata>"
            "<g:guest xmlns:g='https://mclu.dev/xmlns/guest/1'/></metadata></domain>",
            "guest x: mclu metadata has no template",
        ),
    ],
)
def test_guest_refuses_what_libvirt_would_not_write(xml: str, message: str) -> None:
    with pytest.raises(facts.ParseError, match=message):
        facts.parse_guest(xml, GuestState.SHUTOFF, persistent=True)


def test_capabilities_without_arch() -> None:
    with pytest.raises(facts.ParseError, match="host/cpu/arch"):
        facts.parse_capabilities("<capabilities><host><cpu/></host></capabilities>")


def test_node_memory_stats_without_free() -> None:
    with pytest.raises(facts.ParseError, match="total or free"):
        facts.parse_node_memory_stats({"total": 1})


@pytest.mark.parametrize(("number", "text"), [(9000000, "9.0.0"), (10010002, "10.10.2")])
def test_libvirt_version(number: int, text: str) -> None:
    assert facts.libvirt_version(number) == text


def test_guest_networks_as_the_spec_words() -> None:
    xml = """<domain type='qemu'><name>n</name><memory>1024</memory><devices>
               <interface type='network'><source network='default'/></interface>
               <interface type='bridge'><source bridge='br0'/></interface>
               <interface type='user'/>
             </devices></domain>"""
    guest = facts.parse_guest(xml, GuestState.RUNNING, persistent=True)
    assert guest.networks == ("network:default", "bridge:br0", "user")
