"""Inventory parsing: the shipped example, defaults, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from mclu import errors, model
from mclu.config import inventory

ROOT = Path(__file__).resolve().parents[2]


def parse(text: str) -> model.Inventory:
    return inventory.parse(text, "hosts.toml")


def test_shipped_example_parses_with_defaults_and_overrides() -> None:
    inv = inventory.load(ROOT / "hosts.toml")
    assert inv.names() == ["ham0", "ham1", "ham2", "ham3"]
    ham2, ham3 = inv.hosts[2], inv.hosts[3]
    assert ham2.reserve_memory == 4 << 30  # its own
    assert inv.hosts[0].reserve_memory == 2 << 30  # the default
    assert ham3.port == 22_22 and ham3.address == "10.0.0.13"
    assert ham3.storage_pool == "fast" and ham3.tags == ("rack2", "big")
    assert inv.hosts[0].mac == "52:54:00:00:00:10"


def test_address_defaults_to_the_host_name_and_ssh_settings_stay_unset() -> None:
    inv = parse("[hosts.alpha]\n")
    host = inv.hosts[0]
    assert host.address == "alpha"
    assert host.user is None and host.port is None  # left to ~/.ssh/config
    assert host.ssh_port == 22
    assert host.tcp_timeout == 0.75 and host.connect_timeout == 5.0
    assert inv.parallel == 50  # the 50 hosts mclu is made for, in one wave


def test_paths_are_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/u")
    inv = parse('[defaults]\nidentity_file = "~/.ssh/k"\nknown_hosts = "~/kh"\n[hosts.a]\n')
    assert inv.hosts[0].identity_files == ("/home/u/.ssh/k",)
    assert inv.hosts[0].known_hosts == "/home/u/kh"


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[hosts.a]\nport = 70000\n", "hosts.a.port", "port number"),
        ("[defaults]\nport = 'x'\n[hosts.a]\n", "defaults.port", "port number"),
        ("[hosts.a]\nmac = '52:54:00'\n", "hosts.a.mac", "MAC address"),
        ("[hosts.a]\nreserve_memory = '2 gallons'\n", "hosts.a.reserve_memory", "size"),
        ("[hosts.a]\ndomain_type = 'xen'\n", "hosts.a.domain_type", "kvm, qemu"),
        ("[hosts.a]\nimage_dir = 'images'\n", "hosts.a.image_dir", "absolute path"),
        ("[hosts.a]\nconnect_timeout = 0\n", "hosts.a.connect_timeout", "seconds"),
        ("[hosts.a]\ntcp_timeout = 'soon'\n", "hosts.a.tcp_timeout", "seconds"),
        (
            "[hosts.a]\naddress = '10.0.0.1'\n[hosts.b]\naddress = '10.0.0.1'\n",
            "hosts.b.address",
            "the same machine as hosts.a (address 10.0.0.1, port 22)",
        ),
        ("[hosts.a]\nport = 22\n[hosts.A]\n", "hosts.A", "the same machine as hosts.a"),
        ("[hosts.a]\ncolour = 'red'\n", "hosts.a.colour", "unknown key"),
        ("[defaults]\naddress = 'x'\n[hosts.a]\n", "defaults.address", "unknown key"),
        ("[hosts.'a b']\n", "hosts.a b", "host name"),
        ("[hosts.a]\ntags = ['ok', 'not ok']\n", "hosts.a.tags", "not ok"),
        ("[hosts.a]\npower_off_command = []\n", "hosts.a.power_off_command", "list"),
        ("parallel = 0\n[hosts.a]\n", "parallel", "at least 1"),
        ("[hosts.a]\nnetwork = 'br0'\n", "hosts.a.network", "bridge:NAME"),
        ("[hosts]\n", "hosts", "no hosts"),
        ("hosts = 3\n", "hosts", "table"),
    ],
)
def test_each_mistake_is_named_with_file_and_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        parse(text)
    assert caught.value.key == key
    message = str(caught.value)
    assert message.startswith(f"hosts.toml: {key}: ")
    assert problem in message
    assert caught.value.exit_code == errors.EXIT_USAGE


def test_toml_syntax_error_gives_the_line() -> None:
    with pytest.raises(errors.ConfigError, match=r"hosts.toml: not valid TOML: .*line 2"):
        parse("[hosts.a]\nport = \n")


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"no inventory here .*MCLU_CONFIG"):
        inventory.load(tmp_path / "nope.toml")


def test_locate_prefers_flag_then_environment_then_home() -> None:
    env = {"MCLU_CONFIG": "/etc/mclu.toml"}
    assert inventory.locate("/x.toml", env) == Path("/x.toml")
    assert inventory.locate(None, env) == Path("/etc/mclu.toml")
    assert inventory.locate(None, {}).name == "hosts.toml"
    assert ".config/mclu" in str(inventory.locate(None, {}))


def test_select_by_name_and_tag_keeps_inventory_order() -> None:
    inv = inventory.load(ROOT / "hosts.toml")
    assert [h.name for h in inventory.select(inv, tags=["rack2"])] == ["ham2", "ham3"]
    assert [h.name for h in inventory.select(inv, names=["ham3", "ham0"])] == ["ham0", "ham3"]
    assert [h.name for h in inventory.select(inv, names=["ham1"], tags=["ssd"])] == ["ham1"]
    with pytest.raises(errors.UnknownHost, match=r"unknown host 'ham9'.*ham0, ham1"):
        inventory.select(inv, names=["ham9"])


def test_a_tag_no_host_has_is_an_error_naming_the_known_tags() -> None:
    inv = inventory.load(ROOT / "hosts.toml")
    with pytest.raises(errors.UnknownTag) as raised:
        inventory.select(inv, tags=["rack1", "nope"])
    assert str(raised.value) == (
        f"unknown tag 'nope' (the hosts of {ROOT / 'hosts.toml'} have: big, rack1, rack2, ssd)"
    )
    assert raised.value.exit_code == errors.EXIT_USAGE
    # Known tags that no host has together select nothing: that is an answer, not a typo.
    assert inventory.select(inv, tags=["ssd", "big"]) == []
    untagged = parse("[hosts.a]\n")
    with pytest.raises(errors.UnknownTag, match=r"'web' \(the hosts of hosts.toml have: no tags"):
        inventory.select(untagged, tags=["web"])


def test_one_machine_by_address_and_port_only() -> None:
    """The same address on another port is another sshd (another machine's, forwarded), and
    entries reached by a libvirt URI have no ssh address to compare."""
    inv = parse(
        "[hosts.a]\naddress = '10.0.0.1'\n[hosts.b]\naddress = '10.0.0.1'\nport = 2222\n"
        "[hosts.c]\nuri = 'test:///default'\n[hosts.d]\nuri = 'test:///default'\n"
        "address = 'c'\n"
    )
    assert inv.names() == ["a", "b", "c", "d"]


def test_an_ipv6_address_is_compared_in_its_canonical_form() -> None:
    with pytest.raises(
        errors.ConfigError, match=r"the same machine as hosts\.a \(address fd00::1, port 22\)"
    ):
        parse("[hosts.a]\naddress = 'fd00::1'\n[hosts.b]\naddress = 'fd00:0::0:1'\n")
