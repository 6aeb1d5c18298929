"""`mclu templates prune` on fake hosts: read, decide, remove, report.

Host a caches three bases: one its guest's disk is an overlay on, one no disk uses, and one
that arrived a minute ago; host b caches nothing; c is off. The controller's cache holds
nothing unless a test puts bases there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mclu import errors, model
from mclu.hosts import commands, fake
from tests.cli.harness import SHA, Cli

IMAGES = "/var/lib/libvirt/images"
CACHE = f"{IMAGES}/mclu-templates"
OLD, USED, NEW = "tiny.x86_64.r1.raw", "tiny.x86_64.r3.raw", "debian-12.x86_64.r2.raw"


WEB1 = model.Guest(
    name="web1",
    uuid="uuid-web1",
    state=model.GuestState.RUNNING,
    vcpus=1,
    memory=1 << 30,
    disks=(f"{IMAGES}/web1.qcow2",),
)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path)
    a, b = c.cluster.hosts["a"], c.cluster.hosts["b"]
    a.guests["web1"] = WEB1
    a.commands.update(
        [
            fake.canned(
                commands.base_ages(CACHE),
                f"10000\n{OLD} 1000.5\n{USED} 2000\n{NEW} 9940\n".encode(),
            ),
            fake.canned(commands.qcow2_files(IMAGES), f"{IMAGES}/spare.qcow2\n".encode()),
            fake.canned(
                commands.backing_info([f"{IMAGES}/spare.qcow2", f"{IMAGES}/web1.qcow2"]),
                b'{"filename": "%s/web1.qcow2", "full-backing-filename": "%s/%s"}\n'
                % (IMAGES.encode(), CACHE.encode(), USED.encode()),
            ),
            fake.canned(commands.remove(f"{CACHE}/{OLD}")),
            fake.canned(commands.remove(f"{CACHE}/{NEW}")),
        ]
    )
    b.commands.update(
        [
            fake.canned(commands.base_ages(CACHE), b"10000\n"),
            fake.canned(commands.qcow2_files(IMAGES)),
        ]
    )
    c.cluster.fail(
        "c", errors.HostUnreachable(host="c", address="c", reason="connection timed out")
    )
    return c


def test_prune_dry_run_says_what_would_go_and_removes_nothing(cli: Cli) -> None:
    assert cli("templates", "prune", "--dry-run") == 0
    assert cli.stdout.splitlines() == [
        f"a: would remove {OLD}",
        f"a: kept {USED} (in use)",
        f"a: kept {NEW} (arrived in the last minutes: a build may need it)",
    ]
    assert cli.stderr == "mclu: c: unreachable at c: connection timed out\n"
    assert not any(argv[0] == "rm" for argv in cli.cluster.hosts["a"].ran)


def test_prune_removes_the_unused_bases_only(cli: Cli) -> None:
    assert cli("templates", "prune", "--json", "--min-age", "30") == 0
    assert cli.json() == {
        "version": 1,
        "dry_run": False,
        "hosts": [
            {"name": "a", "removed": [NEW, OLD], "in_use": [USED], "too_new": []},
            {"name": "b", "removed": [], "in_use": [], "too_new": []},
        ],
        "failed_hosts": [
            {"name": "c", "state": "off", "error": "c: unreachable at c: connection timed out"}
        ],
        "controller": {
            "cache_dir": str(cli.tmp / "cache"),
            "removed": [],
            "listed": [],
            "too_new": [],
            "unsure": [],
            "failed": [],
        },
    }
    ran = cli.cluster.hosts["a"].ran
    assert ran[-2:] == [
        tuple(commands.remove(f"{CACHE}/{NEW}")),
        tuple(commands.remove(f"{CACHE}/{OLD}")),
    ]


# --- the controller's cache ---------------------------------------------------------------------

LISTED = f"tiny.x86_64.r3.{SHA[:16]}.raw"  # the harness repository's tiny r3, by its digest
REPUBLISHED = "tiny.x86_64.r3.1111111111111111.raw"  # r3 as it was before it was published again
OLD_NAME = "tiny.x86_64.r3.raw"  # cached before bases carried their digest: content unknown
JUST_NOW = "tiny.x86_64.r2.2222222222222222.raw"


def controller_cache(cli: Cli) -> Path:
    """The controller's cache with a base each way it may be, all a day old but JUST_NOW."""
    directory = cli.tmp / "cache"
    directory.mkdir()
    (directory / ".lock").write_bytes(b"")
    (directory / ".partial-x").mkdir()
    day_ago = time.time() - 86400
    for name in (LISTED, REPUBLISHED, OLD_NAME, JUST_NOW):
        (directory / name).write_bytes(b"base")
        if name != JUST_NOW:
            os.utime(directory / name, (day_ago, day_ago))
    return directory


def test_prune_dry_run_shows_the_controllers_cache_too(cli: Cli) -> None:
    directory = controller_cache(cli)
    assert cli("templates", "prune", "--dry-run") == 0
    assert cli.stdout.splitlines()[3:] == [
        f"controller: would remove {REPUBLISHED} (no repository lists it)",
        f"controller: would remove {OLD_NAME} (no repository lists it)",
        f"controller: kept {LISTED} (a repository lists it)",
        f"controller: kept {JUST_NOW} (arrived in the last minutes: a build may need it)",
    ]
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [".lock", ".partial-x", LISTED, REPUBLISHED, OLD_NAME, JUST_NOW]
    )


def test_prune_removes_from_the_controllers_cache_what_no_repository_lists(cli: Cli) -> None:
    directory = controller_cache(cli)
    assert cli("templates", "prune", "--json") == 0
    assert cli.json()["controller"] == {
        "cache_dir": str(directory),
        "removed": [REPUBLISHED, OLD_NAME],
        "listed": [LISTED],
        "too_new": [JUST_NOW],
        "unsure": [],
        "failed": [],
    }
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [".lock", ".partial-x", LISTED, JUST_NOW]
    )


def test_prune_keeps_the_controllers_bases_when_a_repository_does_not_answer(cli: Cli) -> None:
    directory = controller_cache(cli)
    (cli.repos_d / "gone.conf").write_text(f"[gone]\nuri=file://{cli.tmp}/missing/index\n")
    assert cli("templates", "prune") == 0
    assert f"controller: kept {OLD_NAME} (a repository did not answer: it may list it)" in (
        cli.stdout.splitlines()
    )
    assert "cannot fetch" in cli.stderr
    assert {LISTED, REPUBLISHED, OLD_NAME, JUST_NOW} <= {p.name for p in directory.iterdir()}
