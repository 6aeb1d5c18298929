"""Guest locks as a user meets them: a second run fails at once with exit 75 naming the holder.

The holder is another mclu run; here a lock held on the fake host stands in for it (the
fake's locks behave as the real ones: tests/contract pins that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mclu import errors, model
from mclu.act import locks
from mclu.hosts import fake
from tests.builders import guest
from tests.cli.harness import SHARED_STORAGE, Cli

HOLDER = "ops@controller2 pid 4242 (mclu rebuild, since 2026-11-21T03:00:00Z)"


def hold(spec: model.HostSpec, fake_locks: dict[str, str], name: str) -> None:
    """Another run holds guest `name`'s lock on the host of `spec`."""
    fake_locks[locks.lock_path(spec, name)] = HOLDER


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path)
    c.host("a").guests["web1"] = guest("web1", own_disk=True)
    return c


@pytest.fixture
def shared(tmp_path: Path) -> Cli:
    """Hosts whose storage is shared: a migration moves no disk."""
    c = Cli(tmp_path, inventory=SHARED_STORAGE)
    c.host("a").guests["web1"] = guest("web1")
    return c


@pytest.mark.parametrize("verb", ["start", "stop", "reboot", "destroy", "delete"])
def test_a_locked_guest_is_left_alone(cli: Cli, verb: str) -> None:
    spec = cli.cluster.spec("a")
    hold(spec, cli.host("a").locks, "web1")
    before = cli.host("a").guests["web1"]
    assert cli(verb, "web1", "--force" if verb == "delete" else "--json") == errors.EXIT_LOCKED
    assert cli.stderr == (
        f"mclu: error: a: guest 'web1' is locked by {HOLDER}; try again when that run has ended\n"
    )
    assert cli.host("a").guests["web1"] == before


def test_the_lock_is_released_after_the_command(cli: Cli) -> None:
    assert cli("destroy", "web1") == 0
    assert cli.host("a").locks == {}
    assert cli("start", "web1") == 0


def test_a_lock_on_another_guest_does_not_matter(cli: Cli) -> None:
    hold(cli.cluster.spec("a"), cli.host("a").locks, "web2")
    assert cli("destroy", "web1") == 0


def test_migrate_a_locked_guest(shared: Cli) -> None:
    cli = shared
    hold(cli.cluster.spec("a"), cli.cluster.hosts["a"].locks, "web1")
    assert cli("migrate", "web1", "--to", "b") == errors.EXIT_LOCKED
    assert "guest 'web1' is locked by ops@controller2" in cli.stderr
    assert cli.where("web1") == ["a"]


def test_migrate_to_a_host_where_the_name_is_locked(shared: Cli) -> None:
    cli = shared
    hold(cli.cluster.spec("b"), cli.cluster.hosts["b"].locks, "web1")  # a build of web1 on b
    assert cli("migrate", "web1", "--to", "b") == errors.EXIT_LOCKED
    assert cli.stderr.startswith("mclu: error: b: guest 'web1' is locked by")
    assert cli.where("web1") == ["a"]
    assert cli.cluster.hosts["a"].locks == {}  # the source's lock was let go


def test_drain_reports_a_locked_guest_and_moves_the_others(shared: Cli) -> None:
    cli = shared
    cli.cluster.hosts["a"].guests["web2"] = guest("web2")
    hold(cli.cluster.spec("a"), cli.cluster.hosts["a"].locks, "web1")
    assert cli("drain", "a") == errors.EXIT_FAILED
    assert "locked by ops@controller2" in cli.stdout
    assert cli.where("web1") == ["a"]
    assert cli.where("web2") != ["a"]


# --- --wait-lock -------------------------------------------------------------------------------


class Attempts(list[str]):
    """Each attempt at a lock, by path; the other run ends at attempt `release_at`."""

    release_at: int | None = 3


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> Attempts:
    """Retries every 10 ms instead of every few seconds, each one recorded."""
    monkeypatch.setattr(locks, "RETRY_INTERVAL", 0.01)
    tried = Attempts()
    original = fake.FakeSession.lock

    def lock(self: fake.FakeSession, path: str, holder: str) -> Any:
        tried.append(path)
        if len(tried) == tried.release_at:  # the other run ends meanwhile
            self.fake_host.locks.pop(path, None)
        return original(self, path, holder)

    monkeypatch.setattr(fake.FakeSession, "lock", lock)
    return tried


def test_wait_lock_waits_for_the_other_run_to_end(cli: Cli, attempts: Attempts) -> None:
    hold(cli.cluster.spec("a"), cli.host("a").locks, "web1")
    assert cli("--wait-lock", "30", "destroy", "web1") == 0
    assert cli.stdout == "web1 on a: powered off\n"
    assert len(attempts) == 3 and cli.host("a").locks == {}


def test_wait_lock_gives_up_when_its_time_is_up(cli: Cli, attempts: Attempts) -> None:
    attempts.release_at = None  # the other run goes on
    hold(cli.cluster.spec("a"), cli.host("a").locks, "web1")
    assert cli("destroy", "web1", "--wait-lock", "0.05") == errors.EXIT_LOCKED
    assert cli.stderr.startswith("mclu: error: a: guest 'web1' is locked by ")
    assert cli.state("a", "web1") == model.GuestState.RUNNING


def test_without_wait_lock_a_held_lock_fails_at_once(cli: Cli, attempts: Attempts) -> None:
    hold(cli.cluster.spec("a"), cli.host("a").locks, "web1")
    assert cli("destroy", "web1") == errors.EXIT_LOCKED
    assert len(attempts) == 1


def test_wait_lock_for_migrate(shared: Cli, attempts: Attempts) -> None:
    cli = shared
    hold(cli.cluster.spec("a"), cli.cluster.hosts["a"].locks, "web1")
    assert cli("migrate", "web1", "--to", "b", "--wait-lock", "30") == 0
    assert cli.where("web1") == ["b"]


def test_wait_lock_rejects_a_negative_time(cli: Cli) -> None:
    assert cli("destroy", "web1", "--wait-lock", "-1") == errors.EXIT_USAGE
    assert "must not be negative" in cli.stderr
