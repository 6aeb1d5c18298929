"""The sandbox's wake-on-LAN listener, its pure part: reading packets and finding the host."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mclu.config import inventory
from mclu.decide import power
from mclu.sandbox import config, state, wol, wol_listener

MAC = bytes.fromhex("525400d50003")


def test_valid_packet_gives_its_mac() -> None:
    assert wol.parse_magic_packet(b"\xff" * 6 + MAC * 16) == "52:54:00:d5:00:03"


@given(st.binary(min_size=6, max_size=6))
def test_every_packet_mclu_sends_is_understood(raw: bytes) -> None:
    assert wol.parse_magic_packet(power.magic_packet(raw)) == power.format_mac(raw)


@pytest.mark.parametrize("password", [b"\x01\x02\x03\x04", b"secret"])
def test_packet_with_a_secureon_password_is_valid(password: bytes) -> None:
    assert wol.parse_magic_packet(power.magic_packet(MAC) + password) == "52:54:00:d5:00:03"


@pytest.mark.parametrize(
    "data",
    [
        power.magic_packet(MAC)[:-1],  # one byte short
        power.magic_packet(MAC) + b"\x00",  # one byte long
        power.magic_packet(MAC) + b"\x00" * 8,
        power.magic_packet(MAC)[: 6 + 6 * 15],  # 15 repetitions
        b"",
    ],
)
def test_wrong_length_is_not_a_packet(data: bytes) -> None:
    assert wol.parse_magic_packet(data) is None


def test_repetitions_of_different_macs_are_not_a_packet() -> None:
    other = bytes.fromhex("525400d50004")
    assert wol.parse_magic_packet(b"\xff" * 6 + MAC * 15 + other) is None
    assert wol.parse_magic_packet(b"\xff" * 6 + other + MAC * 15) is None


def test_broken_sync_stream_is_not_a_packet() -> None:
    assert wol.parse_magic_packet(b"\xff" * 5 + b"\xfe" + MAC * 16) is None


@given(st.binary(max_size=120))
def test_garbage_is_never_a_packet_unless_it_is_one(data: bytes) -> None:
    mac = wol.parse_magic_packet(data)
    if mac is not None:
        assert data[:102] == power.magic_packet(power.parse_mac(mac))


def test_host_for_mac_finds_the_sandbox_host_by_its_nic() -> None:
    hosts = config.host_specs(4)
    assert wol.host_for_mac(hosts[3].mac.upper(), hosts) == hosts[3]
    assert wol.host_for_mac("52:54:00:12:34:56", hosts) is None


def test_sandbox_inventory_wakes_through_the_bridge_broadcast_only() -> None:
    hosts = config.host_specs(4)
    text = config.render_inventory(Path("/state"), hosts[:3], hosts[3])
    inv = inventory.parse(text, "hosts.toml")
    for host in inv.hosts:
        assert host.wol_address == f"{config.SUBNET}.255" != "255.255.255.255"
        assert host.wol_port == config.WOL_PORT
    assert inv.hosts[3].mac == hosts[3].mac


def test_listener_command_line_names_its_instance_bridge() -> None:
    argv = wol_listener.command_line(state.Paths(Path("/state")))
    assert argv[1:3] == ["-m", "mclu.sandbox.wol"]
    assert argv[argv.index("--bridge") + 1] == config.BRIDGE
    assert argv[argv.index("--port") + 1] == str(config.WOL_PORT)
