"""mclu.decide.ssh: the OpenSSH config, known-hosts lines and Ansible inventory of guests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mclu import model
from mclu.decide import ssh as reach

DATA = Path(__file__).parent.parent / "data" / "ssh"
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII6a2TtfkkCjORl6WvknxwmouFoVbZUBGX3PfC94etFQ"
ECDSA = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEIg"
HOST_B = model.HostSpec(
    name="b",
    address="10.9.0.2",
    user="root",
    port=2222,
    identity_files=("/x/id key",),
    identities_only=True,
    known_hosts="/x/kh",
    tags=("rack 1",),
)
HOST_A = model.HostSpec(name="a", address="10.9.0.1")
NAT = reach.Target(
    name="db",
    host=HOST_B,
    uuid="u-1",
    networks=("network:default",),
    address="192.168.122.5",
    host_keys=("ssh-ed25519 AAAA",),
    template="debian-12",
    tags=HOST_B.tags,
)
BRIDGED = reach.Target(
    name="web1",
    host=HOST_A,
    uuid="u-2",
    networks=("bridge:br0",),
    address="10.9.0.50",
    host_keys=(ECDSA, ED25519),
    template="tiny",
)
COMMAND = ["/usr/bin/python3", "-m", "mclu", "-c", "/a b/hosts.toml", "known-hosts"]


def test_a_nat_guest_jumps_through_its_host_with_the_hosts_own_settings() -> None:
    text = reach.render_config([NAT], reach.KnownHosts(command=COMMAND))
    assert text == (DATA / "nat-guest-command.conf").read_text()


def test_a_bridged_guest_is_reached_directly_and_checked_against_a_file() -> None:
    text = reach.render_config([BRIDGED], reach.KnownHosts(file="/run/k"), user="admin")
    assert text.splitlines() == [
        "# web1 on a (mclu)",
        "Host web1",
        "  HostName 10.9.0.50",
        "  User admin",
        "  HostKeyAlias mclu-u-2",
        "  StrictHostKeyChecking yes",
        "  CheckHostIP no",
        "  UpdateHostKeys no",
        "  GlobalKnownHostsFile none",
        "  UserKnownHostsFile /run/k",
    ]


def test_no_address_and_no_keys_are_said_never_guessed() -> None:
    target = reach.Target(name="x", host=HOST_A, uuid="u-3", why_no_address="no lease, no agent")
    text = reach.render_config([target], reach.KnownHosts(file="/run/k"))
    assert "HostName" not in text
    assert "  # no address is known: no lease, no agent" in text
    assert "  # mclu recorded no host keys for it: ssh refuses it" in text
    assert "StrictHostKeyChecking yes" in text and "StrictHostKeyChecking no" not in text


def test_one_jump_block_per_host_whatever_the_number_of_guests() -> None:
    other = reach.Target(name="db2", host=HOST_B, uuid="u-4", networks=("network:default",))
    text = reach.render_config([NAT, other, BRIDGED], reach.KnownHosts(file="/k"))
    assert text.count("Host mclu-host-b\n") == 1
    assert "Host mclu-host-a" not in text  # the bridged guest needs no jump


@pytest.mark.parametrize(
    ("networks", "through"),
    [
        (("network:default",), True),
        (("bridge:br0",), False),
        (("network:default", "bridge:br0"), False),  # the LAN leg is reachable
        (("user",), False),
        ((), False),
    ],
)
def test_through_host(networks: tuple[str, ...], through: bool) -> None:
    target = reach.Target(name="g", host=HOST_A, uuid="u", networks=networks)
    assert target.through_host is through


def test_known_hosts_lines_name_the_alias_not_the_address() -> None:
    assert reach.known_hosts_lines([BRIDGED, NAT]) == [
        f"mclu-u-2 {ECDSA}",
        f"mclu-u-2 {ED25519}",
        "mclu-u-1 ssh-ed25519 AAAA",
    ]
    assert reach.uuid_of_alias("mclu-u-2") == "u-2"
    assert reach.uuid_of_alias("web1") is None


def test_a_value_ssh_config_cannot_hold_is_refused() -> None:
    host = model.HostSpec(name="b", address="h", identity_files=('/x/"q"',))
    target = reach.Target(name="g", host=host, uuid="u", networks=("network:n",))
    with pytest.raises(ValueError, match="cannot write"):
        reach.render_config([target], reach.KnownHosts(file="/k"))


def test_known_hosts_needs_exactly_one_way() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        reach.KnownHosts()
    with pytest.raises(ValueError, match="exactly one"):
        reach.KnownHosts(file="/k", command=["x"])


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")
def test_openssh_reads_the_config_as_meant(tmp_path: Path) -> None:
    """`ssh -G` (OpenSSH 8.5+ for KnownHostsCommand) prints the options it would use."""
    config = tmp_path / "config"
    config.write_text(reach.render_config([NAT, BRIDGED], reach.KnownHosts(command=COMMAND)))

    def options(host: str) -> list[str]:
        result = subprocess.run(
            ["ssh", "-G", "-F", str(config), host],
            capture_output=True,
            text=True,
            check=True,
            stdin=subprocess.DEVNULL,
        )
        return result.stdout.splitlines()

    db = options("db")
    assert "hostname 192.168.122.5" in db
    assert "hostkeyalias mclu-u-1" in db
    assert "proxyjump mclu-host-b" in db
    assert "stricthostkeychecking true" in db
    assert f'knownhostscommand {" ".join(COMMAND[:4])} "/a b/hosts.toml" known-hosts %H' in db
    jump = options("mclu-host-b")
    assert {"hostname 10.9.0.2", "port 2222", "identityfile /x/id key", "user root"} <= set(jump)


def test_ansible_inventory_groups_by_host_template_and_tag() -> None:
    doc = reach.ansible_inventory([BRIDGED, NAT], COMMAND)
    assert doc["mclu_host_a"] == {"hosts": ["web1"]}
    assert doc["mclu_host_b"] == {"hosts": ["db"]}
    assert doc["mclu_template_debian_12"] == {"hosts": ["db"]}
    assert doc["mclu_template_tiny"] == {"hosts": ["web1"]}
    assert doc["mclu_tag_rack_1"] == {"hosts": ["db"]}
    assert doc["all"] == {
        "children": [
            "mclu_host_a",
            "mclu_host_b",
            "mclu_tag_rack_1",
            "mclu_template_debian_12",
            "mclu_template_tiny",
        ]
    }
    web1, db = doc["_meta"]["hostvars"]["web1"], doc["_meta"]["hostvars"]["db"]
    assert (web1["ansible_host"], web1["ansible_user"], web1["mclu_uuid"]) == (
        "10.9.0.50",
        "root",
        "u-2",
    )
    assert "-o HostKeyAlias=mclu-u-2" in web1["ansible_ssh_common_args"]
    assert "ProxyJump" not in web1["ansible_ssh_common_args"]
    assert db["ansible_ssh_common_args"].endswith("-o ProxyJump=root@10.9.0.2:2222")
    assert (
        "-o 'KnownHostsCommand=/usr/bin/python3 -m mclu -c \"/a b/hosts.toml\" known-hosts %H'"
        in db["ansible_ssh_common_args"]
    )
