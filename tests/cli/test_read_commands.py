"""`mclu status/list/info/templates` end to end, in-process, against fake hosts.

What is checked is what a user sees: stdout, stderr (one line per error) and the exit code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mclu import errors
from tests.builders import GIB, SHUTOFF, WEB1, guest
from tests.cli.harness import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path)
    c.host("a").guests["web1"] = WEB1
    c.host("b").guests["db"] = guest("db", vcpus=4, memory=4 * GIB)
    c.host("b").guests["old"] = guest("old", state=SHUTOFF, vcpus=2)
    return c


def test_status_table_shows_capacity_and_guests(cli: Cli) -> None:
    assert cli("status") == 0
    lines = cli.stdout.splitlines()
    assert lines[0].split()[:4] == ["HOST", "STATE", "CPUS", "vCPUS"]
    a, b, c = lines[1:]
    assert a.split()[:5] == ["a", "on", "4", "2", "used"]
    assert "[#.........] 1 GiB / 8 GiB" in a  # 1 of 8 GiB to guests
    assert "6 GiB" in a  # free: 8 - 1 reserved - 1 running
    assert "1 running / 2" in b  # the shut off guest holds nothing
    assert "4 GiB / 16 GiB" in b
    assert c.split()[:2] == ["c", "on"]
    assert cli.stderr == ""


def test_status_shows_each_hosts_networks_and_bridges(cli: Cli) -> None:
    cli.host("b").bridges = ("br0", "br1")
    cli.host("c").networks, cli.host("c").bridges = (), None  # c could not list its bridges
    assert cli("status") == 0
    lines = cli.stdout.splitlines()
    assert lines[0].split()[-1] == "NETWORKS"
    assert lines[1].rstrip().endswith("1 running / 1  network:default")
    assert lines[2].rstrip().endswith("network:default, bridge:br0, bridge:br1")
    assert lines[3].rstrip().endswith("bridges unknown")
    assert cli("status", "--json") == 0
    hosts = cli.json()["hosts"]
    assert [(h["networks"], h["bridges"]) for h in hosts] == [
        (["default"], []),
        (["default"], ["br0", "br1"]),
        ([], None),
    ]
    cli.host("c").bridges = ()
    assert cli("status") == 0
    assert cli.stdout.splitlines()[3].rstrip().endswith("0 running / 0  none")


def test_status_json_schema(cli: Cli) -> None:
    assert cli("status", "--json") == 0
    doc = cli.json()
    assert doc["version"] == 1
    a = doc["hosts"][0]
    assert a == {
        "name": "a",
        "state": "on",
        "error": None,
        "address": "a",
        "tags": ["rack1"],
        "hostname": "a",
        "cpus": 4,
        "vcpus_allocated": 2,
        "vcpus_free": 14,  # 4 CPUs x 4 - 2
        "memory_total": 8 << 30,
        "memory_allocated": 1 << 30,
        "memory_free": 6 << 30,
        "memory_reserved": 1 << 30,
        "guests": 1,
        "guests_running": 1,
        "networks": ["default"],
        "bridges": [],
    }


def test_off_host_is_shown_and_is_not_a_failure(cli: Cli) -> None:
    cli.cluster.fail(
        "c", errors.HostUnreachable(host="c", address="c", reason="connection timed out")
    )
    assert cli("status") == 0
    row = cli.stdout.splitlines()[3]
    assert row.split()[:2] == ["c", "off"]
    assert row.endswith("unreachable at c: connection timed out")
    assert cli("status", "--json") == 0
    assert cli.json()["hosts"][2] == {
        "name": "c",
        "state": "off",
        "error": "c: unreachable at c: connection timed out",
    }


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (
            errors.HostAuthFailed(host="b", user="root", address="b", reason="permission denied"),
            "auth failed",
        ),
        (errors.LibvirtUnavailable(host="b", reason="socket not found"), "libvirt down"),
        (
            errors.HostKeyChanged(host="b", address="b", port=22, known_hosts="/k"),
            "host key changed",
        ),
        (
            errors.HostKeyUnknown(host="b", address="b", port=22, known_hosts="/k"),
            "host key unknown",
        ),
    ],
)
def test_failing_host_is_shown_and_fails_the_command(
    cli: Cli, error: errors.HostError, state: str
) -> None:
    cli.cluster.fail("b", error)
    assert cli("status", "--json") == 1
    hosts = {h["name"]: h for h in cli.json()["hosts"]}
    assert hosts["b"]["state"] == state
    assert hosts["a"]["state"] == "on"  # the others still answered


def test_one_machine_under_two_entries_is_one_line_and_counted_once(cli: Cli) -> None:
    """Same libvirt host UUID (known only once connected): the later entry fails, naming both."""
    cli.cluster.hosts["c"].host_uuid = cli.cluster.hosts["a"].host_uuid
    assert cli("status", "--json") == 1
    hosts = {h["name"]: h for h in cli.json()["hosts"]}
    assert hosts["c"] == {
        "name": "c",
        "state": "duplicate",
        "error": f"c: the same machine as a (libvirt host UUID {cli.cluster.hosts['a'].host_uuid})"
        ": one inventory entry per host",
    }
    assert hosts["a"]["state"] == hosts["b"]["state"] == "on"


def test_list_every_guest_sorted_with_template(cli: Cli) -> None:
    assert cli("list") == 0
    lines = cli.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["NAME", "db", "old", "web1"]
    web1 = lines[3].split()
    assert web1[:6] == ["web1", "a", "running", "2", "1", "GiB"]
    assert web1[6:] == ["tiny", "r3", "2026-11-20T10:00:00Z"]
    assert "shut off" in lines[2]


def test_list_names_the_hosts_that_did_not_answer(cli: Cli) -> None:
    cli.cluster.fail("a", errors.HostUnreachable(host="a", address="a", reason="no route to host"))
    assert cli("list") == 0
    assert "web1" not in cli.stdout
    assert cli.stderr == "mclu: a: unreachable at a: no route to host\n"
    assert cli("list", "--json") == 0
    doc = cli.json()
    assert [g["name"] for g in doc["guests"]] == ["db", "old"]
    assert doc["failed_hosts"][0]["state"] == "off"


def test_list_filters_by_tag_and_host(cli: Cli) -> None:
    assert cli("list", "--tag", "rack2") == 0
    assert cli.stdout.splitlines()[1:] == []
    assert cli("list", "--host", "a", "--json") == 0
    assert [g["name"] for g in cli.json()["guests"]] == ["web1"]


def test_info_finds_the_guest_and_shows_mclu_metadata(cli: Cli) -> None:
    assert cli("info", "web1") == 0
    fields = dict(line.split(":", 1) for line in cli.stdout.splitlines())
    assert fields["Host"].strip() == "a"
    assert fields["Template"].strip() == "tiny r3"
    assert fields["Option memory"].strip() == "1G"
    assert cli("info", "web1", "--json") == 0
    doc = cli.json()["guest"]
    assert doc["host"] == "a" and doc["mclu"]["options"] == {"memory": "1G"}


def test_info_ambiguous_names_both_hosts_and_host_prefix_chooses(cli: Cli) -> None:
    cli.cluster.hosts["c"].guests["web1"] = guest("web1")
    assert cli("info", "web1") == 1
    assert cli.stderr == ("mclu: error: guest 'web1' exists on a and c; name it as HOST:web1\n")
    assert cli.stdout == ""
    assert cli("info", "c:web1", "--json") == 0
    assert cli.json()["guest"]["mclu"] is None


def test_info_not_found_says_which_hosts_did_not_answer(cli: Cli) -> None:
    cli.cluster.fail("c", errors.HostUnreachable(host="c", address="c", reason="timed out"))
    assert cli("info", "nope") == 1
    assert cli.stderr == "mclu: error: no guest named 'nope' (c did not answer: it may be there)\n"


def test_info_found_while_a_host_is_off_notes_it(cli: Cli) -> None:
    cli.cluster.fail("c", errors.HostUnreachable(host="c", address="c", reason="timed out"))
    assert cli("info", "web1") == 0
    assert cli.stderr == "mclu: did not answer (a guest of that name may be there too): c\n"


def test_info_on_a_pinned_host_that_is_down(cli: Cli) -> None:
    cli.cluster.fail("c", errors.HostUnreachable(host="c", address="c", reason="timed out"))
    assert cli("info", "c:web1") == 1
    assert cli.stderr == "mclu: error: c: unreachable at c: timed out\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["status", "--host", "zz"],
            "mclu: error: unknown host 'zz' (the inventory {inv} has: a, b, c)\n",
        ),
        (["info", ":x"], "mclu: error: bad guest name ':x': use NAME or HOST:NAME\n"),
        (["info", "zz:x"], "mclu: error: unknown host 'zz' (the inventory {inv} has: a, b, c)\n"),
        (
            ["status", "--tag", "nope"],
            "mclu: error: unknown tag 'nope' (the hosts of {inv} have: rack1, rack2)\n",
        ),
        (
            ["list", "--tag", "rack1", "--tag", "rack3"],
            "mclu: error: unknown tag 'rack3' (the hosts of {inv} have: rack1, rack2)\n",
        ),
        (
            ["list", "--tag", "nope", "--json"],
            "mclu: error: unknown tag 'nope' (the hosts of {inv} have: rack1, rack2)\n",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(cli: Cli, argv: list[str], message: str) -> None:
    assert cli(*argv) == 2
    assert cli.stderr == message.format(inv=cli.inventory)


def test_bad_inventory_is_one_line_naming_file_and_key(cli: Cli) -> None:
    cli.inventory.write_text("[hosts.a]\nport = 'ssh'\n")
    assert cli("status") == 2
    assert cli.stderr == (
        f"mclu: error: {cli.inventory}: hosts.a.port: must be a port number 1-65535, got 'ssh'\n"
    )


def test_config_option_is_accepted_after_the_command(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("[hosts.b]\n")
    assert cli("status", "-c", str(other), "--json") == 0
    assert [h["name"] for h in cli.json()["hosts"]] == ["b"]


def test_argparse_usage_error_exits_2(cli: Cli) -> None:
    assert cli("status", "--bogus") == 2
    assert "unrecognized arguments: --bogus" in cli.stderr


def test_templates_lists_mclu_and_repository_templates(cli: Cli) -> None:
    assert cli("templates") == 0
    rows = [line.split() for line in cli.stdout.splitlines()[1:]]
    names = [(r[0], r[1]) for r in rows]
    # mclu's own templates first (over their bases), then the repository's, newest revisions
    assert names == [
        ("debian-12", "mclu:"),
        ("tiny", "mclu:"),
        ("debian-12", "local"),
        ("tiny", "local"),
    ]
    assert rows[1][:4] == ["tiny", "mclu:", "tiny", "3"]
    assert rows[2][2] == "2"  # hidden "secret" is not listed
    assert cli("templates", "--json") == 0
    doc = cli.json()
    listed = {(t["name"], t["kind"]): t for t in doc["templates"]}
    assert listed[("tiny", "mclu")]["size"] == 128 << 20
    assert listed[("debian-12", "repository")]["revision"] == 2  # the newest
    assert listed[("debian-12", "mclu")]["size"] == 2 << 30  # the template's own size
    assert doc["failed_sources"] == []


def test_templates_info(cli: Cli) -> None:
    assert cli("templates", "info", "debian-12") == 0
    fields = dict(line.split(":", 1) for line in cli.stdout.splitlines())
    assert fields["Base"].strip() == "debian-12 r2 (x86_64)"
    assert fields["Disk size"].strip() == "2 GiB"
    assert fields["Run"].strip() == "ssh-keygen -A"
    assert cli("templates", "info", "nope") == 2
    assert cli.stderr.startswith("mclu: error: unknown template 'nope' (known: debian-12, tiny")


def test_templates_with_a_source_down_still_lists_and_fails(cli: Cli) -> None:
    (cli.repo / "index").unlink()
    assert cli("templates") == 1
    assert cli.stderr.startswith(f"mclu: cannot fetch file://{cli.repo}/index: ")
