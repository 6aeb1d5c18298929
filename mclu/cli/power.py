"""Host power: `mclu on HOST` (wake-on-LAN) and `mclu off HOST` (the host's power-off command)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from mclu import errors, model
from mclu.act import power
from mclu.cli import commands, migration, output, parsing
from mclu.config import inventory
from mclu.decide import power as decide_power
from mclu.hosts.session import command_line

DEFAULT_TIMEOUT = 300.0  # seconds --wait waits by default


def register(sub: parsing.Subparsers) -> None:
    """Add this group's commands to the `mclu` parser."""
    on = parsing.add_command(sub, "on", power_on, "power a host on by wake-on-LAN")
    on.add_argument("host", metavar="HOST")
    _wait_options(on, "until the host answers ssh")

    off = parsing.add_command(sub, "off", power_off, "power a host off with its power_off_command")
    off.add_argument("host", metavar="HOST")
    guests = off.add_mutually_exclusive_group()
    guests.add_argument(
        "--drain",
        action="store_true",
        help="first migrate the host's running guests to other hosts",
    )
    guests.add_argument(
        "--force",
        action="store_true",
        help="power off even though guests run there (they die with it)",
    )
    _wait_options(off, "until the host stops answering ssh")
    off.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be done (with --drain, its plan), change nothing",
    )


def _wait_options(parser: argparse.ArgumentParser, until: str) -> None:
    parser.add_argument("--wait", action="store_true", help=f"wait {until}")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long --wait waits (default: %(default)g)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= 86400 seconds, got {text}")
    return value


def _host(args: argparse.Namespace, env: commands.Env) -> tuple[model.Inventory, model.HostSpec]:
    inv = inventory.load(inventory.locate(args.config, env.environ))
    return inv, inventory.select(inv, names=[args.host])[0]


async def power_on(args: argparse.Namespace, env: commands.Env) -> int:
    """Send the host's wake-on-LAN packet; with --wait, wait until it answers ssh."""
    inv, spec = _host(args, env)
    if spec.mac is None:
        raise errors.NoMacAddress(host=spec.name, path=inv.path)
    power.wake(spec.name, spec.mac, spec.wol_address, spec.wol_port)
    waited = None
    if args.wait:
        env.printer.note(wake_sent_text(spec))
        waited = await power.wait_until_on(
            spec, env.open_session, args.timeout, _reporter(spec, env)
        )
    if args.json:
        env.printer.json(power_on_json(spec, waited))
    else:
        env.printer.text(power_on_text(spec, waited))
    return errors.EXIT_OK


async def power_off(args: argparse.Namespace, env: commands.Env) -> int:
    """Run the host's power-off command unless guests run there (--force, --drain)."""
    _inv, spec = _host(args, env)
    if args.dry_run:
        return await _power_off_dry_run(spec, args, env)
    if args.drain:
        await _drain(spec, args, env)
    async with env.open_session(spec) as host:
        running = decide_power.running(await host.guests())
        decide_power.check_power_off(spec.name, running, force=args.force)
        ended = await power.power_off(host, spec)
    waited = None
    if args.wait:
        env.printer.note(power_off_sent_text(spec, ended))
        waited = await power.wait_until_off(
            spec, env.open_session, args.timeout, _reporter(spec, env)
        )
    if args.json:
        env.printer.json(power_off_json(spec, ended, running, waited))
    else:
        env.printer.text(power_off_text(spec, ended, running, waited))
    return errors.EXIT_OK


async def _power_off_dry_run(
    spec: model.HostSpec, args: argparse.Namespace, env: commands.Env
) -> int:
    """What `off` would do, from a look at the host's guests (and with --drain, the drain's
    plan); nothing is moved or powered off. Refused as the real run would be."""
    if args.drain:
        await _drain(spec, args, env, dry_run=True)
    async with env.open_session(spec) as host:
        running = sorted(decide_power.running(await host.guests()))
    decide_power.check_power_off(spec.name, running, force=args.force, drain_first=args.drain)
    if args.json:
        env.printer.json(
            {
                "host": spec.name,
                "action": "off",
                "dry_run": True,
                "command": list(spec.power_off_command),
                "running": running,
                "drain": args.drain,
            }
        )
        return errors.EXIT_OK
    text = f"{spec.name}: would power off with `{command_line(spec.power_off_command)}`"
    if running and args.drain:
        text += f" once its running guests are moved away: {', '.join(running)}"
    elif running:
        text += f"; running guests would die with it (--force): {', '.join(running)}"
    env.printer.text(text)
    return errors.EXIT_OK


async def _drain(
    spec: model.HostSpec, args: argparse.Namespace, env: commands.Env, *, dry_run: bool = False
) -> None:
    """`mclu drain HOST` first. Its exit status is not the verdict: it also reports shut-off
    guests it leaves; what counts is whether guests still run when mclu looks again."""
    drain_args = argparse.Namespace(
        source=spec.name,
        dry_run=dry_run,
        json=args.json,
        config=args.config,
        verbose=args.verbose,
        host=None,
        tag=None,
    )
    # With --json, stdout holds the one power-off document: the drain's report is progress.
    printer = output.Printer(out=env.printer.err, err=env.printer.err) if args.json else env.printer
    await migration.drain_host(drain_args, dataclasses.replace(env, printer=printer))


def _reporter(spec: model.HostSpec, env: commands.Env) -> power.Report:
    def report(attempt: power.Attempt) -> None:
        env.printer.note(wait_attempt_text(spec, attempt))

    return report


# --- rendering ---------------------------------------------------------------------------------


def wake_sent_text(spec: model.HostSpec) -> str:
    return (
        f"{spec.name}: wake-on-LAN packet for {spec.mac} sent to {spec.wol_address}:{spec.wol_port}"
    )


def power_on_text(spec: model.HostSpec, waited: power.Waited | None) -> str:
    if waited is None:
        return wake_sent_text(spec) + " (mclu on --wait waits until it answers)"
    return f"{spec.name}: on, answering ssh after {waited.seconds:.1f} s"


def power_on_json(spec: model.HostSpec, waited: power.Waited | None) -> dict[str, Any]:
    return {
        "host": spec.name,
        "action": "on",
        "mac": spec.mac,
        "sent_to": f"{spec.wol_address}:{spec.wol_port}",
        **_waited_json(waited),
    }


def power_off_sent_text(spec: model.HostSpec, ended: power.Ended) -> str:
    how = (
        "the command ran"
        if ended is power.Ended.COMPLETED
        else "the connection dropped as it went down"
    )
    return f"{spec.name}: `{' '.join(spec.power_off_command)}` sent; {how}"


def power_off_text(
    spec: model.HostSpec, ended: power.Ended, killed: Sequence[str], waited: power.Waited | None
) -> str:
    lines = []
    if killed:
        lines.append(
            f"{spec.name}: powered off with {len(killed)} running "
            f"{'guest' if len(killed) == 1 else 'guests'} (--force): {', '.join(killed)}"
        )
    if waited is None:
        lines.append(power_off_sent_text(spec, ended) + " (mclu off --wait waits until it is off)")
    else:
        lines.append(f"{spec.name}: off, no longer answering after {waited.seconds:.1f} s")
    return "\n".join(lines)


def power_off_json(
    spec: model.HostSpec, ended: power.Ended, killed: Sequence[str], waited: power.Waited | None
) -> dict[str, Any]:
    return {
        "host": spec.name,
        "action": "off",
        "command": list(spec.power_off_command),
        "ended": ended.value,
        "guests_killed": list(killed),
        **_waited_json(waited),
    }


def _waited_json(waited: power.Waited | None) -> dict[str, Any]:
    if waited is None:
        return {"waited": False}
    return {"waited": True, "attempts": waited.attempts, "seconds": round(waited.seconds, 3)}


def wait_attempt_text(spec: model.HostSpec, attempt: power.Attempt) -> str:
    return f"{spec.name}: attempt {attempt.number} ({attempt.elapsed:.0f} s): {attempt.answer}"
