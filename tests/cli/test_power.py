"""`mclu on` and `mclu off` end to end, in-process, against fake hosts and a local UDP socket."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from mclu import errors, model
from mclu.act import power
from mclu.hosts import fake
from mclu.hosts.session import CommandResult, Session
from mclu.read import snapshot
from tests.builders import SHUTOFF, guest
from tests.cli.harness import Cli

RUNNING = guest("web1", uuid="u1")
STOPPED = guest("old", uuid="u2", state=SHUTOFF)


class DroppingSession(fake.FakeSession):
    """Its commands end as a host going down ends them: the connection breaks."""

    async def run(self, *args: object, **kwargs: object) -> CommandResult:
        raise errors.HostError(host=self.host, detail="`poweroff`: Connection lost")


def dropping(opener: snapshot.Opener) -> snapshot.Opener:
    """`opener`, its sessions' commands ending in a broken connection."""

    @asynccontextmanager
    async def open(spec: model.HostSpec) -> AsyncIterator[fake.FakeSession]:
        async with opener(spec) as session:
            assert isinstance(session, fake.FakeSession)
            yield DroppingSession(session.fake_host, session.uri)

    return open


def shared_storage(cli: Cli) -> None:
    text = cli.inventory.read_text()
    cli.inventory.write_text(text.replace("[defaults]\n", "[defaults]\nshared_storage = true\n"))


def power_off_does(cli: Cli, exit_status: int, stderr: bytes = b"") -> None:
    cli.host("a").commands.update(
        [fake.canned(["poweroff", "--now"], stderr=stderr, exit_status=exit_status)]
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 standing in for the LAN's broadcast address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        yield sock


@pytest.fixture
def cli(tmp_path: Path, listener: socket.socket) -> Cli:
    """Hosts a (with a MAC and its own power-off command) and b; wake-on-LAN to `listener`."""
    port = listener.getsockname()[1]
    inventory = (
        f'[defaults]\nwol_address = "127.0.0.1"\nwol_port = {port}\n'
        '[hosts.a]\nmac = "52:54:00:12:34:56"\npower_off_command = ["poweroff", "--now"]\n'
        "[hosts.b]\n"
    )
    return Cli(tmp_path, hosts=("a", "b"), inventory=inventory)


# --- on ------------------------------------------------------------------------------------


def test_on_sends_the_magic_packet_for_the_hosts_mac(cli: Cli, listener: socket.socket) -> None:
    assert cli("on", "a") == 0
    data, _ = listener.recvfrom(1024)
    assert data == b"\xff" * 6 + bytes.fromhex("525400123456") * 16
    port = listener.getsockname()[1]
    assert cli.stdout.startswith(
        f"a: wake-on-LAN packet for 52:54:00:12:34:56 sent to 127.0.0.1:{port}"
    )
    assert cli.opened == []  # without --wait mclu does not wait for the host


def test_on_a_host_without_mac_is_a_one_line_usage_error(cli: Cli, listener: socket.socket) -> None:
    assert cli("on", "b") == 2
    assert cli.stderr.count("\n") == 1
    assert "mclu: error: b: no `mac` in " in cli.stderr
    listener.settimeout(0.2)
    with pytest.raises(TimeoutError):
        listener.recvfrom(1024)  # nothing was sent


def test_on_an_unknown_host_is_a_usage_error(cli: Cli) -> None:
    assert cli("on", "zz") == 2
    assert "unknown host 'zz'" in cli.stderr


def test_on_wait_polls_until_the_host_answers(cli: Cli, listener: socket.socket) -> None:
    cli.cluster.fail(
        "a", errors.HostUnreachable(host="a", address="a.fake", reason="no route to host")
    )
    heal = cli.opener

    @asynccontextmanager
    async def booting(spec: model.HostSpec) -> AsyncIterator[Session]:
        if len(cli.opened) == 1:
            cli.cluster.fail("a", None)  # it has booted by the second attempt
        async with heal(spec) as session:
            yield session

    cli.opener = booting
    assert cli("on", "a", "--wait", "--json") == 0
    listener.recvfrom(1024)
    doc = json.loads(cli.stdout)
    assert doc["host"] == "a" and doc["action"] == "on" and doc["waited"] is True
    assert doc["attempts"] == 2
    assert "a: attempt 1 (0 s): a: unreachable at a.fake: no route to host" in cli.stderr


def test_on_wait_times_out_with_a_clear_error(cli: Cli, listener: socket.socket) -> None:
    cli.cluster.fail(
        "a", errors.HostUnreachable(host="a", address="a.fake", reason="no route to host")
    )
    assert cli("on", "a", "--wait", "--timeout", "0.3") == 1
    last = cli.stderr.splitlines()[-1]
    assert last == (
        "mclu: error: a: not answering ssh after 0.3 s "
        "(last: a: unreachable at a.fake: no route to host)"
    )


# --- off -----------------------------------------------------------------------------------


def test_off_is_refused_while_guests_run(cli: Cli) -> None:
    cli.cluster.hosts["a"].guests.update(web1=RUNNING, old=STOPPED)
    power_off_does(cli, 0)
    assert cli("off", "a") == 1
    assert cli.stderr == (
        "mclu: error: a: refusing to power off: 1 running guest (web1); move them with "
        "--drain, or power off anyway with --force\n"
    )


def test_off_runs_the_power_off_command_when_no_guest_runs(cli: Cli) -> None:
    cli.cluster.hosts["a"].guests.update(old=STOPPED)
    power_off_does(cli, 0)
    assert cli("off", "a") == 0
    assert cli.stdout.startswith("a: `poweroff --now` sent; the command ran")


def test_off_force_powers_off_with_guests_and_says_which(cli: Cli) -> None:
    cli.cluster.hosts["a"].guests.update(web1=RUNNING)
    power_off_does(cli, 0)
    assert cli("off", "a", "--force", "--json") == 0
    doc = json.loads(cli.stdout)
    assert doc["guests_killed"] == ["web1"] and doc["ended"] == "completed"
    assert doc["command"] == ["poweroff", "--now"]


@pytest.mark.parametrize("how", ["exception", "no exit status"])
def test_off_counts_a_dropped_connection_as_success(cli: Cli, how: str) -> None:
    if how == "exception":
        cli.opener = dropping(cli.opener)
    else:
        power_off_does(cli, -1)
    assert cli("off", "a", "--json") == 0
    assert json.loads(cli.stdout)["ended"] == power.Ended.DISCONNECTED.value


def test_off_whose_command_fails_says_why(cli: Cli) -> None:
    power_off_does(cli, 1, b"poweroff: must be superuser.\n")
    assert cli("off", "a") == 1
    assert cli.stderr == (
        "mclu: error: a: `poweroff --now` failed with exit status 1: poweroff: must be superuser.\n"
    )


def test_off_wait_waits_until_the_host_is_unreachable(cli: Cli) -> None:
    power_off_does(cli, 0)
    real = cli.opener

    @asynccontextmanager
    async def going_down(spec: model.HostSpec) -> AsyncIterator[Session]:
        if len(cli.opened) == 2:  # the second opening: the host is gone
            cli.cluster.fail(
                "a", errors.HostUnreachable(host="a", address="a.fake", reason="no route to host")
            )
        async with real(spec) as session:
            yield session

    cli.opener = going_down
    assert cli("off", "a", "--wait") == 0
    assert cli.stdout.startswith("a: off, no longer answering after ")


def test_off_of_an_unreachable_host_is_its_error(cli: Cli) -> None:
    cli.cluster.fail(
        "a", errors.HostUnreachable(host="a", address="a.fake", reason="no route to host")
    )
    assert cli("off", "a") == 1
    assert "a: unreachable at a.fake" in cli.stderr


def test_off_drain_and_force_exclude_each_other(cli: Cli) -> None:
    assert cli("off", "a", "--drain", "--force") == 2


def test_off_drain_moves_the_guests_first_then_powers_off(cli: Cli) -> None:
    shared_storage(cli)  # nothing to copy: the fake hosts have no disks to read
    cli.cluster.hosts["a"].guests.update(web1=RUNNING)
    power_off_does(cli, 0)
    assert cli("off", "a", "--drain") == 0, cli.stderr
    assert cli.cluster.hosts["b"].guests["web1"].state is model.GuestState.RUNNING
    assert "web1     a       b     moved" in cli.stdout
    assert "a: `poweroff --now` sent" in cli.stdout


def test_off_drain_that_leaves_a_guest_running_is_refused(cli: Cli) -> None:
    shared_storage(cli)
    cli.cluster.hosts["a"].guests.update(web1=RUNNING)
    cli.cluster.fail(
        "b", errors.HostUnreachable(host="b", address="b.fake", reason="no route to host")
    )
    power_off_does(cli, 0)
    assert cli("off", "a", "--drain", "--json") == 1
    # The drain's report went to stderr; stdout holds only the error's document.
    assert json.loads(cli.stdout)["error"]["type"] == "GuestsRunning"
    assert "a: refusing to power off: 1 running guest (web1)" in cli.stderr
    assert "web1" in cli.cluster.hosts["a"].guests


# --- off --dry-run ---------------------------------------------------------------------------


def test_off_dry_run_says_what_it_would_run_and_runs_nothing(cli: Cli) -> None:
    cli.cluster.hosts["a"].guests.update(old=STOPPED)
    assert cli("off", "a", "--dry-run") == 0
    assert cli.stdout == "a: would power off with `poweroff --now`\n"
    assert cli.cluster.hosts["a"].ran == []


def test_off_dry_run_is_refused_as_the_real_run_would_be(cli: Cli) -> None:
    cli.cluster.hosts["a"].guests.update(web1=RUNNING)
    assert cli("off", "a", "--dry-run") == 1
    assert "a: refusing to power off: 1 running guest (web1)" in cli.stderr
    assert cli("off", "a", "--dry-run", "--force") == 0
    assert cli.stdout == (
        "a: would power off with `poweroff --now`; running guests "
        "would die with it (--force): web1\n"
    )
    assert cli.cluster.hosts["a"].ran == []


def test_off_drain_dry_run_prints_the_plan_and_moves_nothing(cli: Cli) -> None:
    shared_storage(cli)
    cli.cluster.hosts["a"].guests.update(web1=RUNNING)
    assert cli("off", "a", "--drain", "--dry-run") == 0, cli.stderr
    out = cli.stdout
    assert out.startswith("web1: a → b (")
    assert out.endswith(
        "a: would power off with `poweroff --now` once its running guests are moved away: web1\n"
    )
    assert "web1" in cli.cluster.hosts["a"].guests and cli.cluster.hosts["a"].ran == []
    assert cli("off", "a", "--drain", "--dry-run", "--json") == 0
    assert json.loads(cli.stdout) == {
        "version": 1,
        "host": "a",
        "action": "off",
        "dry_run": True,
        "command": ["poweroff", "--now"],
        "running": ["web1"],
        "drain": True,
    }
