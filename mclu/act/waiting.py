"""Waiting until a started guest is ready by its rule (`mclu.decide.readiness`).

It looks at the guest's host about once a second: the guest's state (a guest that stopped or
crashed will not become ready), then its console log's end (a kernel panic there fails any
rule at once), its guest agent, or the ssh host keys its server presents (`ssh-keyscan` run
on its host, at each address mclu finds for it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from mclu import errors
from mclu.act import lifecycle
from mclu.decide import guests, readiness
from mclu.decide.readiness import Kind, Rule, console_lines, console_matches, panicked
from mclu.hosts import commands
from mclu.hosts.session import Session
from mclu.read import addresses

POLL = 0.5  # seconds between two looks: one command and one libvirt call each
CONSOLE_BYTES = 64 * 1024  # of the log's end read per look: a boot's last screens
CONSOLE_LINES = 8  # kept in the error
AGENT_TIMEOUT = 2  # seconds libvirt waits for the agent's answer to one ping


@dataclass(frozen=True)
class Ready:
    rule: Rule
    seconds: float  # from the start of the wait


async def wait(
    session: Session,
    name: str,
    rule: Rule,
    timeout: float,
    *,
    poll: float = POLL,
    host_keys: tuple[str, ...] = (),
) -> Ready:
    """Wait until the running guest `name` is ready by `rule` (`ssh`: presenting one of
    `host_keys`, the public keys mclu gave it).

    Raises NotReady, with the last lines of its console, when it is not within `timeout`
    seconds, when it stops (or crashes), or when its kernel panics.
    """
    started = time.monotonic()
    deadline = started + timeout
    why_not = ""  # the ssh rule's last answer, for the error
    while True:
        state = await lifecycle.state_of(session, name)
        if state is None or not state.active:
            why = f"it stopped ({state.value if state else 'gone'})"
            raise await _not_ready(session, name, rule, started, why)
        if rule.kind is Kind.STARTED:
            return Ready(rule, time.monotonic() - started)
        # The console, whatever the rule: a guest whose kernel panicked fails at once instead
        # of after the timeout (an ssh or agent check cannot tell a panic from a slow boot).
        text = await read_console(session, name)
        panic = panicked(text)
        if rule.kind is Kind.CONSOLE and console_matches(rule, text):
            return Ready(rule, time.monotonic() - started)
        if panic is not None:
            raise _error(session, name, rule, started, f"its kernel panicked ({panic})", text)
        if rule.kind is Kind.SSH:
            if not host_keys:  # no key to check the guest against will ever come: say so now
                reason = readiness.ssh_verdict((), host_keys) or ""
                raise await _not_ready(session, name, rule, started, reason)
            why_not = await _ssh_why_not(session, name, host_keys) or ""
            if not why_not:
                return Ready(rule, time.monotonic() - started)
        elif rule.kind is Kind.AGENT and await session.agent_ping(name, AGENT_TIMEOUT):
            return Ready(rule, time.monotonic() - started)
        if time.monotonic() >= deadline:
            reason = f"not ready within {timeout:g} s" + (f" ({why_not})" if why_not else "")
            raise await _not_ready(session, name, rule, started, reason)
        await asyncio.sleep(poll)


async def _ssh_why_not(session: Session, name: str, host_keys: tuple[str, ...]) -> str | None:
    """None when the guest's ssh server, asked from its host at an address mclu finds for it
    (the leases and the neighbour table, as `mclu list`), presents a key mclu gave it; else
    why not (`10.0.0.5: no ssh server answered`)."""
    guest = guests.guest_named(await session.guests(), name)
    if guest is None:
        return "gone"
    wanted = addresses.Wanted(names=frozenset([name]))
    known = (await addresses.read_host(session, [guest], wanted)).get(name)
    if known is None or not known.addresses:
        return f"no address known ({known.why_none if known else 'not asked'})"
    why = ""
    for address in known.addresses:
        if address.family != 4:  # the host reaches its guests' IPv4 addresses; enough
            continue
        result = await session.run(
            commands.ssh_keyscan(address.ip, readiness.keyscan_types(host_keys)),
            check=False,
            timeout=commands.KEYSCAN_TIMEOUT + AGENT_TIMEOUT,
        )
        presented = readiness.presented_keys(result.stdout.decode("utf-8", errors="replace"))
        verdict = readiness.ssh_verdict(presented, host_keys)
        if verdict is None:
            return None
        why = f"{address.ip}: {verdict}"
    return why or "no IPv4 address known"


async def read_console(session: Session, name: str) -> str:
    """The end of the guest's console log on its host; "" where there is none (yet)."""
    result = await session.run(commands.console_tail(name, CONSOLE_BYTES), check=False)
    return result.stdout.decode("utf-8", errors="replace") if result.exit_status == 0 else ""


async def _not_ready(
    session: Session, name: str, rule: Rule, started: float, reason: str
) -> errors.NotReady:
    try:
        text = await read_console(session, name)
    except errors.HostError:
        text = ""
    return _error(session, name, rule, started, reason, text)


def _error(
    session: Session, name: str, rule: Rule, started: float, reason: str, console: str
) -> errors.NotReady:
    return errors.NotReady(
        host=session.host,
        name=name,
        rule=str(rule),
        reason=reason,
        seconds=time.monotonic() - started,
        console=tuple(console_lines(console)[-CONSOLE_LINES:]),
    )
