"""`mclu cleanup`, and the leftover note and states of `list` and `status`, on fake hosts.

The fake hosts answer the one scan command (mclu.hosts.commands.leftover_scan) with canned
output, as a real host's shell would.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

import pytest

from mclu import model, runtmp
from mclu.hosts import commands, fake
from tests.builders import SHUTOFF, guest
from tests.cli.harness import Cli

IMAGES = "/var/lib/libvirt/images"
CACHE = f"{IMAGES}/mclu-templates"
BUILDING = model.GuestMeta(
    template="tiny", revision="1", built="2026-11-21T02:00:00Z", state="building"
)
BUILT = int(datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC).timestamp())
PARTIAL = f"{CACHE}/tiny.x86_64.r1.raw.partial-0a1b2c3d-web9"
STAT_ARGV = commands.change_times([f"{IMAGES}/web9.qcow2"])


def scan_argv() -> list[str]:
    return commands.leftover_scan(IMAGES)


def scan_output(partial: bool = True, locked: bool = False) -> bytes:
    lines = ["@now 1795200000", "@partial"]
    if partial:
        lines.append(f"1795199990.0 {PARTIAL}")
    lines += ["@locks", "65024 77 web9.lock", "@proclocks"]
    if locked:
        lines.append("1: FLOCK  ADVISORY  WRITE 4242 fe:00:77 0 EOF")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path)
    c.cluster.hosts["a"].guests["web1"] = guest("web1")
    b = c.cluster.hosts["b"]
    b.guests["web9"] = guest("web9", state=SHUTOFF, own_disk=True, meta=BUILDING)
    b.commands.update([fake.canned(scan_argv(), scan_output())])
    for name in ("a", "c"):
        c.cluster.hosts[name].commands.update([fake.canned(scan_argv(), b"@now 1\n@partial\n")])
    return c


def test_list_marks_the_interrupted_build_and_notes_the_leftovers(cli: Cli) -> None:
    assert cli("list") == 0
    row = next(line for line in cli.stdout.splitlines() if line.startswith("web9"))
    assert "shut off, interrupted build" in row
    assert cli.stderr == (
        "mclu: note: 2 leftovers of interrupted runs on b (mclu cleanup removes them)\n"
    )


def test_a_build_under_way_is_no_leftover(cli: Cli) -> None:
    cli.cluster.hosts["b"].commands.update([fake.canned(scan_argv(), scan_output(locked=True))])
    assert cli("list") == 0
    row = next(line for line in cli.stdout.splitlines() if line.startswith("web9"))
    assert row.split()[2:5] == ["shut", "off,", "building"]
    assert cli.stderr == ""


def test_status_counts_interrupted_builds_and_notes_the_leftovers(cli: Cli) -> None:
    assert cli("status") == 0
    row = next(line for line in cli.stdout.splitlines() if line.startswith("b "))
    assert "0 running / 1 (1 interrupted build)" in row  # the words `list` shows
    assert cli("list") == 0
    assert "shut off, interrupted build" in cli.stdout
    assert "mclu: note: 2 leftovers of interrupted runs on b" in cli.stderr


def test_a_host_that_cannot_scan_is_simply_not_noted(cli: Cli) -> None:
    cli.cluster.hosts["b"].commands.clear()  # no shell: the scan is Unsupported
    assert cli("list") == 0
    assert "leftover" not in cli.stderr


def test_cleanup_dry_run_changes_nothing(cli: Cli) -> None:
    assert cli("cleanup", "--dry-run") == 0
    assert cli.stdout.splitlines() == [
        "b: would remove guest web9 (left by an interrupted build)",
        f"b: would remove {PARTIAL} (partial file of an interrupted run for web9)",
    ]
    assert "web9" in cli.cluster.hosts["b"].guests


def test_cleanup_removes_the_guest_its_disk_and_the_partial_file(cli: Cli) -> None:
    b = cli.cluster.hosts["b"]
    b.commands.update(
        [
            fake.canned(STAT_ARGV, f"{BUILT + 10} {IMAGES}/web9.qcow2\n".encode()),
            fake.canned(
                ["rm", "-f", "--", f"{IMAGES}/web9.qcow2", "/var/log/libvirt/qemu/web9-console.log"]
            ),
            fake.canned(commands.remove_unused(), f"{PARTIAL}\n".encode()),
        ]
    )
    assert cli("cleanup", "--json") == 0, cli.stdout
    doc = cli.json()
    (host_b,) = [h for h in doc["hosts"] if h["name"] == "b"]
    assert host_b["removed"] == [
        {
            "kind": "guest",
            "name": "web9",
            "reason": "left by an interrupted build",
            "files": [f"{IMAGES}/web9.qcow2"],
        },
        {"kind": "file", "path": PARTIAL, "reason": "partial file of an interrupted run for web9"},
    ]
    assert host_b["kept"] == [] and host_b["failed"] == []
    assert "web9" not in b.guests
    assert b.locks == {}  # every lock cleanup took is released


def test_cleanup_keeps_what_a_run_has_locked_meanwhile(cli: Cli) -> None:
    b = cli.cluster.hosts["b"]
    b.locks[f"{IMAGES}/.mclu-locks/web9.lock"] = "root@ctl pid 7 (mclu build, since now)"
    assert cli("cleanup") == 0
    assert cli.stdout.splitlines() == [
        "b: kept guest web9 (a run is at it: locked by root@ctl pid 7 (mclu build, since now))",
        f"b: kept {PARTIAL} (a run is at it: locked by root@ctl pid 7 (mclu build, since now))",
    ]
    assert "web9" in b.guests


def test_cleanup_with_nothing_to_do(cli: Cli) -> None:
    cli.cluster.hosts["b"].guests.clear()
    cli.cluster.hosts["b"].commands.update([fake.canned(scan_argv(), scan_output(partial=False))])
    assert cli("cleanup") == 0
    assert cli.stdout == "nothing to clean up on any host\n"


# --- the controller's side: run directories of mclu runs that are gone -------------------------


def test_cleanup_removes_the_run_directories_of_dead_runs_only(
    cli: Cli, controller_tmp: Path
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = controller_tmp / f"{runtmp.PREFIX}{dead.pid}-abcdefgh"
    (stale / f"{runtmp.HOSTKEYS_PREFIX}x").mkdir(parents=True)
    (stale / runtmp.OWNER_FILE).write_text(f"{dead.pid} 1\n")
    live = controller_tmp / f"{runtmp.PREFIX}{os.getpid()}-ijklmnop"
    live.mkdir()
    (live / runtmp.OWNER_FILE).write_text(f"{os.getpid()} {runtmp.start_time(os.getpid())}\n")
    assert cli("cleanup", "--dry-run", "--json") == 0
    assert cli.json()["controller"] == {"removed": [str(stale)]}
    assert stale.exists()
    assert cli("cleanup", "--host", "a") == 0, cli.stderr  # a has nothing of its own
    assert cli.stdout.splitlines() == [
        (f"controller: removed {stale} (temporary files of an mclu run that is gone)")
    ]
    assert not stale.exists() and live.exists()
