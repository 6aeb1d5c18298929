"""Host power: wake-on-LAN packets, the power-off command, and waiting for a host to come or go.

The packet is `mclu.decide.power`'s (pure). `wake` sends one UDP datagram. `power_off` and the
waits reach the host through sessions (`mclu.hosts.session.Session`), like every other command.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mclu import errors, model
from mclu.decide import power as decide_power
from mclu.hosts import session
from mclu.read import snapshot

POLL_FIRST = 0.5  # seconds between the first attempts of a wait; doubles up to POLL_MAX
POLL_MAX = 2.0


def wake(host: str, mac: str, address: str, port: int) -> None:
    """Send the magic packet for `mac` by UDP to address:port (broadcast allowed).

    Raises WakeFailed when the datagram cannot be sent (no route, no such network...).
    """
    packet = decide_power.magic_packet(decide_power.parse_mac(mac))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.sendto(packet, (address, port))
    except OSError as e:
        reason = e.strerror.lower() if e.strerror else str(e)
        raise errors.WakeFailed(host=host, address=address, port=port, reason=reason) from None


# --- powering off --------------------------------------------------------------------------


class Ended(enum.Enum):
    """How the power-off command's ssh session ended."""

    COMPLETED = "completed"  # the command exited 0
    DISCONNECTED = "disconnected"  # the connection dropped as the host went down


async def power_off(host: session.Session, spec: model.HostSpec) -> Ended:
    """Run spec.power_off_command on the host.

    A host that goes down may take the ssh session with it before the command reports back:
    once the command has been sent, a dropped connection, a channel closed without an exit
    status (sshd killed) or no answer within the command timeout count as success. Raises
    HostCommandFailed when the command exits non-zero (ToolMissing when it does not exist),
    and what the session raises for a host it cannot run commands on (Unsupported).
    """
    try:
        result = await host.run(spec.power_off_command, check=False)
    except errors.HostTimeout:
        return Ended.DISCONNECTED
    except errors.HostError as e:
        if type(e) is errors.HostError:  # the connection broke (hosts.ssh), nothing else
            return Ended.DISCONNECTED
        raise
    if result.exit_status == 0:
        return Ended.COMPLETED
    if result.exit_status < 0:  # killed, or the channel closed with no status at all
        return Ended.DISCONNECTED
    raise session.command_failed(spec.name, result)


# --- waiting for a host to come on or go off ------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One try of a wait: its number, seconds since the wait began, and what the host said."""

    number: int
    elapsed: float
    answer: str  # the error that kept the host from answering, or "still answering"


@dataclass(frozen=True)
class Waited:
    """How a wait ended: after how many attempts and seconds."""

    attempts: int
    seconds: float


Report = Callable[[Attempt], None]

# Errors that say the host is on and answers, but mclu may not log in: waiting will not help.
_ANSWERS_BUT_REFUSES = (errors.HostAuthFailed, errors.HostKeyUnknown, errors.HostKeyChanged)


async def wait_until_on(
    spec: model.HostSpec, open_session: snapshot.Opener, timeout: float, report: Report
) -> Waited:
    """Open sessions on the host until one succeeds (ssh and libvirt answer), at most `timeout` s.

    Raises PowerTimeout naming the last answer, or at once the error of a host that answers
    but refuses mclu (authentication, host key).
    """

    async def attempt() -> str | None:
        try:
            async with open_session(spec):
                return None
        except _ANSWERS_BUT_REFUSES:
            raise
        except errors.HostError as e:
            return str(e)

    return await _poll(spec, attempt, timeout, report, "not answering ssh")


async def wait_until_off(
    spec: model.HostSpec, open_session: snapshot.Opener, timeout: float, report: Report
) -> Waited:
    """Try to open sessions on the host until ssh no longer connects, at most `timeout` s.

    Raises PowerTimeout if it still answers then.
    """

    async def attempt() -> str | None:
        try:
            async with open_session(spec):
                return "still answering"
        except errors.HostError as e:
            return None if e.state == "off" else str(e)

    return await _poll(spec, attempt, timeout, report, "still on")


async def _poll(
    spec: model.HostSpec,
    attempt: Callable[[], Awaitable[str | None]],
    timeout: float,
    report: Report,
    what: str,
) -> Waited:
    """Call `attempt` until it returns None (done), each try bounded by the time left."""
    started = time.monotonic()
    deadline = started + timeout
    delay = POLL_FIRST
    number = 0
    while True:
        number += 1
        left = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(left, 0.1)):
                result = await attempt()
        except TimeoutError:
            result = "no answer in the time left"
        elapsed = time.monotonic() - started
        if result is None:
            return Waited(attempts=number, seconds=elapsed)
        answer = result
        report(Attempt(number=number, elapsed=elapsed, answer=answer))
        left = deadline - time.monotonic()
        if left <= 0:
            raise errors.PowerTimeout(host=spec.name, what=what, seconds=timeout, last=answer)
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, POLL_MAX)
