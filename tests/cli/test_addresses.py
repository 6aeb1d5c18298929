"""Guests' addresses in `mclu list` and `mclu info`, text and JSON, against fake hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mclu.model import Address, AddressSource
from tests.builders import SHUTOFF, WEB1, guest
from tests.cli.harness import Cli

LEASE, AGENT, ARP = AddressSource.LEASE, AddressSource.AGENT, AddressSource.ARP


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path)
    c.host("a").guests["web1"] = WEB1
    c.host("b").guests["db"] = guest("db")
    c.host("b").guests["old"] = guest("old", state=SHUTOFF)
    c.host("a").addresses["web1"] = (
        Address("192.168.122.7", 4, LEASE, "52:54:00:00:00:01", 24),
        Address("fe80::5054:ff:fe00:1", 6, AGENT, "52:54:00:00:00:01", 64),
        Address("2001:db8::7", 6, AGENT, "52:54:00:00:00:01", 64),
    )
    return c


def test_list_shows_addresses_with_their_sources_and_leaves_the_agent_to_info(cli: Cli) -> None:
    assert cli("list") == 0
    lines = cli.stdout.splitlines()
    assert lines[0].split()[-1] == "ADDRESSES"
    web1 = next(line for line in lines if line.startswith("web1"))
    assert web1.endswith("192.168.122.7 (lease)")
    assert cli.stderr == ""


def test_list_without_any_known_address_has_no_address_column(cli: Cli) -> None:
    del cli.host("a").addresses["web1"]
    assert cli("list") == 0
    assert "ADDRESSES" not in cli.stdout


def test_list_json_gives_every_guest_its_addresses_or_why_none(cli: Cli) -> None:
    assert cli("list", "--json") == 0
    guests = {g["name"]: g for g in cli.json()["guests"]}
    assert guests["web1"]["addresses"] == [
        {
            "ip": "192.168.122.7",
            "family": 4,
            "prefix": 24,
            "mac": "52:54:00:00:00:01",
            "source": "lease",
        }
    ]
    assert guests["web1"]["addresses_unknown"] is None
    assert guests["db"]["addresses"] == []
    assert guests["db"]["addresses_unknown"] == "no lease, not in the host's neighbour table"
    assert guests["old"]["addresses_unknown"] == "not running"


def test_info_asks_the_agent_too(cli: Cli) -> None:
    assert cli("info", "web1") == 0
    lines = [line.split(None, 1) for line in cli.stdout.splitlines()]
    assert [v for k, v in lines if k.startswith("IPv")] == [
        "192.168.122.7/24 (lease, 52:54:00:00:00:01)",
        "2001:db8::7/64 (agent, 52:54:00:00:00:01)",
        "fe80::5054:ff:fe00:1/64 (agent, 52:54:00:00:00:01)",
    ]
    assert cli("info", "web1", "--json") == 0
    assert [a["source"] for a in cli.json()["guest"]["addresses"]] == ["lease", "agent", "agent"]


def test_info_says_why_no_address_is_known(cli: Cli) -> None:
    assert cli("info", "db") == 0
    fields = dict(line.split(":", 1) for line in cli.stdout.splitlines())
    assert fields["Addresses"].strip() == (
        "none known (no lease, no agent, not in the host's neighbour table)"
    )
    assert cli("info", "old") == 0
    fields = dict(line.split(":", 1) for line in cli.stdout.splitlines())
    assert fields["Addresses"].strip() == "none known (not running)"
