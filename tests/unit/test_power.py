"""mclu.decide.power and mclu.act.power: MACs, the magic packet, the power-off command's
endings, and the waits."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mclu import errors, model
from mclu.act import power
from mclu.config import inventory
from mclu.decide import power as decide_power
from mclu.hosts import fake
from mclu.hosts.session import CommandResult
from tests.builders import SHUTOFF, guest

macs = st.binary(min_size=6, max_size=6)


def spaced(raw: bytes, sep: str) -> str:
    return sep.join(f"{b:02x}" for b in raw)


@given(macs, st.sampled_from([":", "-", ""]), st.booleans())
def test_any_mac_in_any_spelling_parses_to_its_bytes(raw: bytes, sep: str, upper: bool) -> None:
    text = spaced(raw, sep)
    assert decide_power.parse_mac(text.upper() if upper else text) == raw
    assert decide_power.format_mac(raw) == spaced(raw, ":")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "52:54:00:12:34",
        "52:54:00:12:34:56:78",
        "52:54-00:12:34:56",
        "5254.0012.3456",
        "52:54:00:12:34:5g",
        "52:54:00:12:34:5",
    ],
)
def test_what_is_not_a_mac_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a MAC address"):
        decide_power.parse_mac(text)


def test_magic_packet_is_six_ff_then_the_mac_sixteen_times() -> None:
    mac = bytes.fromhex("525400123456")
    packet = decide_power.magic_packet(mac)
    assert len(packet) == 102
    assert packet == b"\xff" * 6 + bytes.fromhex("525400123456" * 16)


@given(macs)
def test_magic_packet_property(raw: bytes) -> None:
    packet = decide_power.magic_packet(raw)
    assert packet[:6] == b"\xff" * 6
    assert [packet[6 + 6 * i : 12 + 6 * i] for i in range(16)] == [raw] * 16
    assert len(packet) == decide_power.PACKET_LENGTH


def test_magic_packet_needs_six_bytes() -> None:
    with pytest.raises(ValueError, match="6 bytes"):
        decide_power.magic_packet(b"\x01\x02")


def test_wake_sends_the_packet_by_udp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        port = listener.getsockname()[1]
        power.wake("ham3", "52:54:00:AB:cd:03", "127.0.0.1", port)
        data, _ = listener.recvfrom(1024)
    assert data == decide_power.magic_packet(bytes.fromhex("525400abcd03"))


def test_wake_that_cannot_send_names_host_and_address() -> None:
    # Port 0 is refused by the kernel before anything leaves: no packet goes anywhere.
    with pytest.raises(
        errors.WakeFailed, match=r"ham3: cannot send .* to 127\.0\.0\.1:0: invalid argument"
    ):
        power.wake("ham3", "52:54:00:12:34:56", "127.0.0.1", 0)


# --- when off refuses ------------------------------------------------------------------------


def test_off_refuses_while_guests_run_unless_forced_or_drained_first() -> None:
    guests = [guest("web2"), guest("db", state=SHUTOFF), guest("web1")]
    running = decide_power.running(guests)
    assert running == ["web2", "web1"]
    with pytest.raises(errors.GuestsRunning) as refused:
        decide_power.check_power_off("a", running, force=False)
    assert refused.value.guests == ("web1", "web2")
    decide_power.check_power_off("a", running, force=True)
    decide_power.check_power_off("a", running, force=False, drain_first=True)
    decide_power.check_power_off("a", [], force=False)


# --- the inventory's keys ------------------------------------------------------------------


def test_wol_keys_default_to_the_limited_broadcast_and_port_9() -> None:
    host = inventory.parse("[hosts.a]\n", "hosts.toml").hosts[0]
    assert (host.wol_address, host.wol_port) == ("255.255.255.255", 9)


def test_wol_keys_from_defaults_and_per_host() -> None:
    inv = inventory.parse(
        '[defaults]\nwol_address = "192.168.1.255"\nwol_port = 7\n'
        '[hosts.a]\n[hosts.b]\nwol_address = "10.0.0.255"\n',
        "hosts.toml",
    )
    assert [(h.wol_address, h.wol_port) for h in inv.hosts] == [
        ("192.168.1.255", 7),
        ("10.0.0.255", 7),
    ]


@pytest.mark.parametrize(
    ("line", "key", "problem"),
    [
        ('wol_address = "10.0.0"', "hosts.a.wol_address", "IPv4 address"),
        ('wol_address = "ff02::1"', "hosts.a.wol_address", "IPv4 address"),
        ('wol_address = "bcast.example"', "hosts.a.wol_address", "IPv4 address"),
        ("wol_address = 167772415", "hosts.a.wol_address", "IPv4 address"),
        ("wol_port = 0", "hosts.a.wol_port", "port number"),
        ("wol_port = 65536", "hosts.a.wol_port", "port number"),
        ('wol_port = "9"', "hosts.a.wol_port", "port number"),
    ],
)
def test_bad_wol_keys_are_one_clear_error(line: str, key: str, problem: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        inventory.parse(f"[hosts.a]\n{line}\n", "hosts.toml")
    assert caught.value.key == key and problem in str(caught.value)


# --- running the power-off command ---------------------------------------------------------


class Dropping(fake.FakeSession):
    """A fake session whose commands fail the way a host going down makes them fail."""

    def __init__(self, error: errors.HostError) -> None:
        super().__init__(fake.FakeHost("a"), "fake:///a")
        self.error = error

    async def run(self, *args: object, **kwargs: object) -> CommandResult:
        raise self.error


SPEC = model.HostSpec(name="a", address="a.fake", power_off_command=("poweroff", "-f"))


def canned_session(exit_status: int, stderr: bytes = b"") -> fake.FakeSession:
    host = fake.FakeHost(
        "a",
        commands=dict([fake.canned(["poweroff", "-f"], stderr=stderr, exit_status=exit_status)]),
    )
    return fake.FakeSession(host, "fake:///a")


async def test_power_off_that_returns_zero_completed() -> None:
    assert await power.power_off(canned_session(0), SPEC) is power.Ended.COMPLETED


@pytest.mark.parametrize("status", [-1, -9])
async def test_channel_closed_without_status_or_killed_is_a_disconnect(status: int) -> None:
    assert await power.power_off(canned_session(status), SPEC) is power.Ended.DISCONNECTED


@pytest.mark.parametrize(
    "error",
    [
        errors.HostError(host="a", detail="`poweroff -f`: Connection lost"),
        errors.HostTimeout(host="a", what="`poweroff -f`", seconds=30),
    ],
)
async def test_dropped_connection_or_silence_after_the_command_is_a_disconnect(
    error: errors.HostError,
) -> None:
    assert await power.power_off(Dropping(error), SPEC) is power.Ended.DISCONNECTED


async def test_power_off_command_that_fails_is_an_error() -> None:
    with pytest.raises(errors.HostCommandFailed, match="exit status 1: Permission denied"):
        await power.power_off(canned_session(1, b"Permission denied\n"), SPEC)


async def test_host_without_a_shell_is_not_a_disconnect() -> None:
    with pytest.raises(errors.Unsupported):
        await power.power_off(
            Dropping(errors.Unsupported(host="a", what="running", uri="test:///x")), SPEC
        )


# --- waiting -------------------------------------------------------------------------------


class Flaky:
    """An opener whose host fails with `errors` in turn, then opens."""

    def __init__(self, *failures: errors.HostError | None) -> None:
        self.failures = list(failures)
        self.cluster = fake.FakeCluster.of("a")
        self.opened = 0

    @asynccontextmanager
    async def open(self, spec: model.HostSpec) -> AsyncIterator[fake.FakeSession]:
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        self.opened += 1
        async with self.cluster.open(spec) as session:
            yield session


OFF = errors.HostUnreachable(host="a", address="a.fake", reason="no route to host")
A = model.HostSpec(name="a", address="a.fake")


async def test_wait_until_on_reports_each_attempt_until_it_answers() -> None:
    seen: list[power.Attempt] = []
    flaky = Flaky(OFF, errors.LibvirtUnavailable(host="a", reason="not yet"))
    waited = await power.wait_until_on(A, flaky.open, 10, seen.append)
    assert waited.attempts == 3 and flaky.opened == 1
    assert [a.number for a in seen] == [1, 2]
    assert "unreachable" in seen[0].answer and "libvirt" in seen[1].answer


async def test_wait_until_on_times_out_with_the_last_answer() -> None:
    flaky = Flaky(*[OFF] * 100)
    with pytest.raises(
        errors.PowerTimeout,
        match=r"a: not answering ssh after 0.3 s \(last: "
        r"a: unreachable at a.fake: no route to host\)",
    ):
        await power.wait_until_on(A, flaky.open, 0.3, lambda _a: None)


async def test_wait_until_on_stops_at_once_when_the_host_refuses_mclu() -> None:
    flaky = Flaky(
        errors.HostAuthFailed(host="a", user="root", address="a.fake", reason="publickey")
    )
    with pytest.raises(errors.HostAuthFailed):
        await power.wait_until_on(A, flaky.open, 10, lambda _a: None)


async def test_wait_until_off_waits_while_it_answers() -> None:
    seen: list[power.Attempt] = []
    flaky = Flaky(None, errors.LibvirtUnavailable(host="a", reason="going"), OFF)
    waited = await power.wait_until_off(A, flaky.open, 10, seen.append)
    assert waited.attempts == 3
    assert [a.answer for a in seen] == ["still answering", "a: libvirt is not answering: going"]


async def test_wait_until_off_times_out_while_it_still_answers() -> None:
    with pytest.raises(errors.PowerTimeout, match=r"a: still on after 0\.2 s"):
        await power.wait_until_off(A, Flaky().open, 0.2, lambda _a: None)
