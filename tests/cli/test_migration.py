"""`mclu migrate` and `mclu drain` end to end, in-process, against fake hosts.

The hosts share their storage (`shared_storage = true`), so no disk work is involved: the
fake hosts have no shell. Disk preparation is covered by tests/integration/test_migrate.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mclu import errors, model
from mclu.hosts import fake
from tests.builders import GIB, SHUTOFF, guest
from tests.cli.harness import SHARED_STORAGE, Cli

TINY = model.GuestMeta(template="tiny", revision="1")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path, inventory=SHARED_STORAGE)  # a: 8 GiB, b: 16 GiB, c: 24 GiB
    c.host("a").guests["web1"] = guest("web1", meta=TINY)
    return c


def test_migrate_to_the_host_with_most_room(cli: Cli) -> None:
    assert cli("migrate", "web1") == 0, cli.stderr
    assert cli.where("web1") == ["c"]
    assert cli.stdout.startswith("web1 moved a → c in ")
    assert cli.stdout.endswith(" s\n")


def test_migrate_to_a_named_host_keeps_the_metadata(cli: Cli) -> None:
    assert cli("migrate", "a:web1", "--to", "b") == 0, cli.stderr
    assert cli.where("web1") == ["b"]
    moved = cli.cluster.hosts["b"].guests["web1"]
    assert moved.mclu == model.GuestMeta(template="tiny", revision="1")
    assert moved.persistent


def test_migrate_keeps_the_guest_autostart_and_a_guest_without_it_without(cli: Cli) -> None:
    web1 = cli.cluster.hosts["a"].guests["web1"]
    cli.cluster.hosts["a"].guests["web1"] = dataclasses.replace(web1, autostart=True)
    cli.cluster.hosts["a"].guests["web2"] = guest("web2")
    assert cli("migrate", "web1", "--to", "b") == 0, cli.stderr
    assert cli("migrate", "web2", "--to", "b") == 0, cli.stderr
    moved = cli.cluster.hosts["b"].guests
    assert (moved["web1"].autostart, moved["web2"].autostart) == (True, False)


def test_migrate_json(cli: Cli) -> None:
    assert cli("migrate", "web1", "--to", "b", "--json") == 0
    done = cli.json_lines()[-1]
    assert done["event"] == "done"
    assert [(m["name"], m["from"], m["to"]) for m in done["moved"]] == [("web1", "a", "b")]


def rm_console_log(name: str) -> tuple[str, ...]:
    return ("rm", "-f", "--", f"/var/log/libvirt/qemu/{name}-console.log")


def test_migrate_removes_the_console_log_left_at_the_source(cli: Cli) -> None:
    a = cli.cluster.hosts["a"]
    a.commands.update([fake.canned(rm_console_log("web1"))])
    assert cli("migrate", "web1", "--to", "b", "--json") == 0
    assert a.ran == [rm_console_log("web1")]
    assert not any("could not remove" in str(line) for line in cli.json_lines())


def test_a_console_log_that_cannot_be_removed_is_reported_not_failed(cli: Cli) -> None:
    cli.cluster.hosts["a"].commands.update(
        [fake.canned(rm_console_log("web1"), exit_status=1, stderr=b"rm: Read-only file system\n")]
    )
    assert cli("migrate", "web1", "--to", "b", "--json") == 0
    assert cli.where("web1") == ["b"]
    steps = [line["text"] for line in cli.json_lines() if line["event"] == "step"]
    assert steps[-1].startswith("could not remove /var/log/libvirt/qemu/web1-console.log: a: ")
    assert "Read-only file system" in steps[-1]


def test_migrate_dry_run_moves_nothing(cli: Cli) -> None:
    assert cli("migrate", "web1", "--dry-run") == 0
    assert cli.stdout.startswith("web1: a → c (most free memory")
    assert cli.where("web1") == ["a"]


def test_migrate_a_shut_off_guest(cli: Cli) -> None:
    cli.cluster.hosts["a"].guests["off1"] = guest("off1", state=SHUTOFF)
    assert cli("migrate", "off1") == 1
    assert cli.stderr == (
        "mclu: error: a: off1 is shut off: only a running guest can be live-migrated\n"
    )


def test_migrate_to_its_own_host(cli: Cli) -> None:
    assert cli("migrate", "web1", "--to", "a") == 2
    assert cli.stderr == "mclu: error: --to a: web1 already runs on a\n"


def test_migrate_to_an_unknown_host(cli: Cli) -> None:
    assert cli("migrate", "web1", "--to", "zz") == 2
    assert "unknown host 'zz'" in cli.stderr
    assert cli.where("web1") == ["a"]


def test_migrate_to_a_host_that_is_down(cli: Cli) -> None:
    cli.cluster.fail(
        "b", errors.HostUnreachable(host="b", address="b.fake", reason="no route to host")
    )
    assert cli("migrate", "web1", "--to", "b") == 1
    assert cli.stderr == "mclu: error: b: unreachable at b.fake: no route to host\n"
    assert cli.where("web1") == ["a"]


def test_migrate_with_no_room_anywhere(cli: Cli) -> None:
    cli.cluster.hosts["a"].guests["big"] = guest("big", memory=7 * GIB)
    cli.cluster.hosts["b"].guests["fill"] = guest("fill", memory=15 * GIB)
    cli.cluster.hosts["c"].guests["fill2"] = guest("fill2", memory=23 * GIB)
    assert cli("migrate", "big") == 1
    assert cli.stderr.startswith("mclu: error: no host can take big (7 GiB memory")
    assert cli.where("big") == ["a"]


def test_migrate_to_a_host_too_small(cli: Cli) -> None:
    cli.cluster.hosts["a"].guests["big"] = guest("big", memory=7 * GIB)
    cli.cluster.hosts["b"].guests["fill"] = guest("fill", memory=15 * GIB)
    assert cli("migrate", "big", "--to", "b") == 1
    assert cli.stderr.startswith("mclu: error: b: no room for big: needs 7 GiB memory")


def test_migrate_refused_by_the_destination(cli: Cli) -> None:
    cli.cluster.hosts["b"].refuse_migration = "Storage pool not found"
    assert cli("migrate", "web1", "--to", "b") == 1
    assert cli.stderr == (
        "mclu: error: migration of web1 from a to b failed at 'migrate': a: migrate web1 to b: "
        "Storage pool not found (web1 runs on a)\n"
    )
    assert cli.where("web1") == ["a"]


def test_migrate_a_missing_guest(cli: Cli) -> None:
    assert cli("migrate", "nope") == 1
    assert cli.stderr == "mclu: error: no guest named 'nope'\n"


# --- drain -------------------------------------------------------------------------------------


def test_drain_spreads_the_guests_and_reports_each(cli: Cli) -> None:
    a = cli.cluster.hosts["a"]
    a.guests["web2"] = guest("web2", memory=2 * GIB)
    a.guests["db"] = guest("db", memory=4 * GIB)
    a.guests["old"] = guest("old", state=SHUTOFF)
    cli.cluster.hosts["c"].guests["fill"] = guest("fill", memory=8 * GIB)  # b, c: 15 GiB free
    assert cli("drain", "a") == 1  # the shut-off guest stays
    assert cli.where("old") == ["a"]
    lines = cli.stdout.splitlines()
    assert lines[0].split() == ["GUEST", "FROM", "TO", "RESULT"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"web1", "web2", "db", "old"}
    assert "not moved: shut off" in rows["old"]
    # Largest first, each to the most free memory counting the guests placed before it:
    # db → b (a tie, fewer guests), web2 → c (15 GiB against 11), web1 → c (13 against 11).
    assert [cli.where(n) for n in ("db", "web2", "web1")] == [["b"], ["c"], ["c"]]


def test_drain_removes_each_moved_guests_console_log_at_the_source(cli: Cli) -> None:
    a = cli.cluster.hosts["a"]
    a.guests["web2"] = guest("web2")
    a.guests["old"] = guest("old", state=SHUTOFF)
    a.commands.update([fake.canned(rm_console_log(n)) for n in ("web1", "web2", "old")])
    assert cli("drain", "a") == 1  # the shut-off guest stays, and so does its log
    assert sorted(a.ran) == [rm_console_log("web1"), rm_console_log("web2")]


def test_drain_never_overcommits(cli: Cli) -> None:
    a = cli.cluster.hosts["a"]
    a.guests.clear()
    for i in range(3):
        a.guests[f"g{i}"] = guest(f"g{i}", memory=6 * GIB)
    cli.cluster.hosts["c"].guests["fill"] = guest("fill", memory=17 * GIB)
    # b has 15 GiB free (two guests), c 6 GiB (one guest): all three fit, no host twice over.
    assert cli("drain", "a", "--json") == 0, cli.stdout
    done = cli.json_lines()[-1]
    assert [g["result"] for g in done["guests"]] == ["moved"] * 3
    assert sorted(g["to"] for g in done["guests"]) == ["b", "b", "c"]


def test_drain_with_too_little_room_moves_what_fits(cli: Cli) -> None:
    a = cli.cluster.hosts["a"]
    a.guests.clear()
    a.guests["huge"] = guest("huge", memory=7 * GIB)
    cli.cluster.hosts["b"].guests["fill"] = guest("fill", memory=14 * GIB)
    cli.cluster.hosts["c"].guests["fill2"] = guest("fill2", memory=22 * GIB)
    assert cli("drain", "a") == 1
    assert "not moved: no host can take huge" in cli.stdout
    assert cli.where("huge") == ["a"]


def test_drain_an_unknown_host(cli: Cli) -> None:
    assert cli("drain", "zz") == 2
    assert "unknown host 'zz'" in cli.stderr


def test_drain_a_host_that_is_down(cli: Cli) -> None:
    cli.cluster.fail(
        "a", errors.HostUnreachable(host="a", address="a.fake", reason="no route to host")
    )
    assert cli("drain", "a") == 1
    assert cli.stderr == "mclu: error: a: unreachable at a.fake: no route to host\n"


def test_drain_an_empty_host(cli: Cli) -> None:
    assert cli("drain", "b") == 0
    assert cli.stdout == "no guests on the host\n"
