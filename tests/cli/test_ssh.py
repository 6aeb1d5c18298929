"""`mclu ssh`, `ssh-config`, `list --ansible` and the hidden `known-hosts`, on fake hosts; `mclu
ssh` runs a stub `ssh` found on PATH that records its argv, config and known_hosts file."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from mclu import model
from tests import builders
from tests.cli.harness import Cli

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII6a2TtfkkCjORl6WvknxwmouFoVbZUBGX3PfC94etFQ"
META = model.GuestMeta(template="tiny", revision="3", host_keys=(KEY,))
STUB = f"""#!{sys.executable}
import json, os, re, sys
config = open(sys.argv[2]).read()
known = re.search(r"UserKnownHostsFile (\\S+)", config).group(1)
record = {{"argv": sys.argv[1:], "config": config, "known": open(known).read()}}
json.dump(record, open(os.environ["STUB_OUT"], "w"))
sys.exit(int(os.environ.get("STUB_EXIT", "0")))
"""


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """web1 bridged on a with an address; db on b's NAT network, no address known yet."""
    cli = Cli(tmp_path)
    web1 = builders.guest("web1", meta=META)
    cli.host("a").guests["web1"] = dataclasses.replace(web1, networks=("bridge:br0",))
    db = builders.guest("db", meta=META)
    cli.host("b").guests["db"] = dataclasses.replace(db, networks=("network:default",))
    cli.host("a").addresses["web1"] = (
        model.Address(ip="10.0.0.5", family=4, source=model.AddressSource.ARP),
    )
    return cli


@pytest.fixture
def stub(cli: Cli, tmp_path: Path) -> Path:
    """A stub `ssh`, alone on PATH; what it was given lands in the returned file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(STUB)
    (bin_dir / "ssh").chmod(0o755)
    out = tmp_path / "stub.json"
    cli.environ.update(PATH=str(bin_dir), STUB_OUT=str(out))
    return out


def test_ssh_runs_the_users_ssh_with_a_config_of_this_run(cli: Cli, stub: Path) -> None:
    cli.environ["STUB_EXIT"] = "7"
    assert cli("ssh", "web1", "--", "hostname", "-f") == 7  # the remote command's status
    seen = json.loads(stub.read_text())
    assert seen["argv"][0] == "-F"
    assert seen["argv"][2:] == ["web1", "--", "hostname", "-f"]
    assert "  HostName 10.0.0.5\n" in seen["config"]
    assert "  HostKeyAlias mclu-uuid-web1\n" in seen["config"]
    assert "  StrictHostKeyChecking yes\n" in seen["config"]
    assert seen["known"] == f"mclu-uuid-web1 {KEY}\n"  # exactly the key mclu recorded
    assert not Path(seen["argv"][1]).exists()  # the run's files went with the run
    assert cli.stderr == ""


def test_ssh_login_and_host_prefix(cli: Cli, stub: Path) -> None:
    assert cli("ssh", "a:web1", "-l", "admin") == 0
    seen = json.loads(stub.read_text())
    assert seen["argv"][2:] == ["web1"]
    assert "  User admin\n" in seen["config"]


def test_the_users_own_ssh_config_comes_after_mclus_blocks(cli: Cli, stub: Path) -> None:
    (cli.home / ".ssh" / "config").write_text("Host *\n  ServerAliveInterval 5\n")
    assert cli("ssh", "web1") == 0
    config = json.loads(stub.read_text())["config"]
    assert config.endswith(f'\nMatch all\n  Include "{cli.home}/.ssh/config"\n')


def test_ssh_refuses_a_guest_without_an_address(cli: Cli, stub: Path) -> None:
    assert cli.result("ssh", "db").one_error_line() == (
        "mclu: error: db on b: no address known (no lease, no agent, not in the host's "
        "neighbour table); cannot ssh to it"
    )
    assert not stub.exists()


def test_ssh_refuses_a_guest_whose_keys_mclu_did_not_record(cli: Cli, stub: Path) -> None:
    web1 = cli.guest("a", "web1")
    cli.host("a").guests["web1"] = dataclasses.replace(
        web1, mclu=dataclasses.replace(META, host_keys=())
    )
    assert cli("ssh", "web1") == 1
    assert "mclu recorded no ssh host keys for it" in cli.stderr
    assert not stub.exists()  # never trust on first use


def test_ssh_to_a_guest_no_host_has(cli: Cli, stub: Path) -> None:
    assert cli("ssh", "nope") == 1
    assert cli.stderr == "mclu: error: no guest named 'nope'\n"


def test_ssh_without_an_ssh_client(cli: Cli, tmp_path: Path) -> None:
    cli.environ["PATH"] = str(tmp_path / "empty")
    assert cli("ssh", "web1") == 1
    assert cli.stderr.startswith("mclu: error: no ssh client on PATH")


def test_ssh_config_prints_a_block_per_guest_and_the_jump_host(cli: Cli) -> None:
    assert cli("ssh-config") == 0, cli.stderr
    text = cli.stdout
    assert text.index("Host db\n") < text.index("Host web1\n") < text.index("Host mclu-host-b\n")
    db = text[text.index("Host db\n") : text.index("# web1")]
    assert "  ProxyJump mclu-host-b\n" in db
    assert "  # no address is known: no lease, no agent, not in the host's neighbour table\n" in db
    command = f"{sys.executable} -m mclu -c {cli.inventory.resolve()} known-hosts %H"
    assert f"  KnownHostsCommand {command}\n" in db
    assert "  UserKnownHostsFile none\n" in db
    assert "Host mclu-host-a" not in text  # web1 is bridged: reached directly


def test_ssh_config_of_named_guests_only(cli: Cli) -> None:
    assert cli("ssh-config", "web1") == 0
    assert cli.stdout.startswith("# web1 on a (mclu)\nHost web1\n  HostName 10.0.0.5\n")
    assert "Host db" not in cli.stdout
    assert cli("ssh-config", "nope") == 1
    assert cli.stderr == "mclu: error: no guest named 'nope'\n"


def test_known_hosts_prints_the_recorded_keys_of_the_alias(cli: Cli) -> None:
    assert cli("known-hosts", "mclu-uuid-db") == 0
    assert cli.stdout == f"mclu-uuid-db {KEY}\n"
    assert cli("known-hosts", "mclu-unknown", "web1") == 0
    assert cli.stdout == ""  # ssh then refuses the guest


def test_known_hosts_is_not_listed_among_the_commands(cli: Cli) -> None:
    cli("--help")
    assert "known-hosts" not in cli.stdout
    assert "ssh-config" in cli.stdout


def test_list_ansible_is_a_dynamic_inventory(cli: Cli) -> None:
    assert cli("list", "--ansible") == 0, cli.stderr
    doc = json.loads(cli.stdout)
    assert "version" not in doc  # Ansible would take it for a group
    assert doc["mclu_host_a"] == {"hosts": ["web1"]}
    assert doc["mclu_template_tiny"] == {"hosts": ["db", "web1"]}
    assert doc["mclu_tag_rack1"] == {"hosts": ["db", "web1"]}
    assert doc["_meta"]["hostvars"]["web1"]["ansible_host"] == "10.0.0.5"
    assert "ansible_host" not in doc["_meta"]["hostvars"]["db"]
    assert "ProxyJump=b:22" in doc["_meta"]["hostvars"]["db"]["ansible_ssh_common_args"]


def test_plain_list_is_still_the_table(cli: Cli) -> None:
    assert cli("list") == 0
    assert cli.stdout.startswith("NAME ")
    assert "_meta" not in cli.stdout


def test_ssh_completes_guest_names(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sorted(cli.complete("mclu ssh ", monkeypatch)) == ["db", "web1"]
    assert sorted(cli.complete("mclu ssh-config w", monkeypatch)) == ["web1"]


def test_a_guest_with_only_a_link_local_address_is_said_so(cli: Cli, stub: Path) -> None:
    cli.host("a").addresses["web1"] = (
        model.Address(ip="fe80::5054:ff:fe12:3456", family=6, source=model.AddressSource.AGENT),
    )
    assert cli("ssh", "web1") == 1
    assert "only IPv6 link-local addresses known" in cli.stderr
    assert not stub.exists()
