"""Guest lifecycle commands: start, stop, reboot, destroy, delete, console, viewer.

Each finds the guest by name on whichever host has it (or HOST:NAME), over one connection
per host kept for the whole command, acts on that host, and reports one line (or --json).
start, stop, destroy and delete take several names: each is its own outcome, one line each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import os
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mclu import errors, hostpaths, model
from mclu.act import console, lifecycle, locks
from mclu.cli import commands, output, parsing
from mclu.config import inventory
from mclu.decide import connect
from mclu.decide import delete as delete_plan
from mclu.hosts import commands as host_commands
from mclu.hosts.session import Session, command_line
from mclu.read import snapshot, storage
from mclu.read.snapshot import GuestRef


def register(sub: parsing.Subparsers) -> None:
    """Add this group's commands to the `mclu` parser."""
    _guests_command(sub, "start", start, "start shut off guests")
    stop_ = _guests_command(
        sub, "stop", stop, "shut guests down (ACPI) and wait until they are off"
    )
    stop_.add_argument(
        "--timeout",
        type=parsing.seconds,
        default=lifecycle.STOP_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for the guest to power off (default: %(default)g)",
    )
    stop_.add_argument(
        "--force",
        action="store_true",
        help="power the guest off (destroy) when it is not off in time",
    )
    _guest_command(sub, "reboot", reboot, "restart a running guest (ACPI)")
    _guests_command(sub, "destroy", destroy, "power guests off at once, like pulling the plug")
    delete_ = _guests_command(
        sub, "delete", delete, "remove guests: their definitions, own disks and console logs"
    )
    delete_.add_argument(
        "--force", action="store_true", help="delete a running guest too (powered off first)"
    )
    delete_.add_argument(
        "--dry-run", action="store_true", help="say what would be removed and kept, change nothing"
    )
    console_parser = _guest_command(
        sub, "console", console_, "attach to a guest's serial console (Ctrl-] leaves)"
    )
    console_parser.add_argument(
        "--log", action="store_true", help="print the saved console log of its current boot instead"
    )
    _guest_command(sub, "viewer", viewer, "open a guest's graphical console with virt-viewer")


def _guest_command(
    sub: parsing.Subparsers, name: str, command: parsing.Command, summary: str
) -> argparse.ArgumentParser:
    parser = parsing.add_command(sub, name, command, summary)
    parser.add_argument("name", metavar="[HOST:]NAME", help="the guest")
    parsing.add_host_filters(parser)
    return parser


def _guests_command(
    sub: parsing.Subparsers, name: str, command: parsing.Command, summary: str
) -> argparse.ArgumentParser:
    parser = parsing.add_command(sub, name, command, summary)
    parser.add_argument("names", metavar="[HOST:]NAME", nargs="+", help="the guests")
    parsing.add_host_filters(parser)
    parser.set_defaults(action=name)
    return parser


# --- finding the guest ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The guest a command acts on, its host's session, and what the read pass saw."""

    session: Session
    host: model.HostSnapshot
    guest: model.Guest
    snapshot: model.Snapshot
    # (host, guest) this run has deleted already: the view's set, shared by its targets
    deleted: set[tuple[str, str]] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.guest.name


@dataclass
class View:
    """The hosts' sessions and what one read pass saw, for finding guests by name."""

    sessions: dict[str, Session]
    snapshot: model.Snapshot
    deleted: set[tuple[str, str]] = field(default_factory=set)  # (host, guest) this run deleted

    @contextlib.asynccontextmanager
    async def target(self, ref: GuestRef, *, lock: str | None = None) -> AsyncIterator[Target]:
        """The guest `ref` names. With `lock` (the command's name), the block holds the
        guest's lock (mclu.act.locks), so that no other mclu run changes the guest meanwhile.
        Raises GuestNotFound, GuestAmbiguous, GuestLocked, or the pinned host's HostError."""
        found = snapshot.find_guest(self.snapshot, ref)
        session = self.sessions[found.host.spec.name]
        async with contextlib.AsyncExitStack() as stack:
            if lock is not None:
                await stack.enter_async_context(
                    locks.guest(session, found.host.spec, found.guest.name, lock)
                )
            yield Target(
                session=session,
                host=found.host,
                guest=found.guest,
                snapshot=self.snapshot,
                deleted=self.deleted,
            )


@contextlib.asynccontextmanager
async def connected(
    args: argparse.Namespace, env: commands.Env, refs: Sequence[snapshot.GuestRef]
) -> AsyncIterator[View]:
    """Connect to the hosts that may have the guests `refs` names and read them once; the
    sessions stay open for the block. The hosts are those of --host/--tag, and the hosts
    named in HOST:NAME (only those when every name has one)."""
    inv, hosts = commands.load_hosts(args, env)
    pinned = list(dict.fromkeys(ref.host for ref in refs if ref.host is not None))
    if pinned:
        chosen = inventory.select(inv, names=pinned)
        hosts = (
            chosen if len(pinned) == len(refs) else hosts + [h for h in chosen if h not in hosts]
        )
    async with snapshot.connected(hosts, env.open_session, limit=inv.parallel) as hosts_now:
        snap = await hosts_now.gather(snapshot.read_host)
        yield View(sessions=dict(hosts_now.sessions), snapshot=snap)


@contextlib.asynccontextmanager
async def guest_target(
    args: argparse.Namespace, env: commands.Env, *, lock: str | None = None
) -> AsyncIterator[Target]:
    """Connect to the hosts, find the guest args.name names; sessions stay open for the block.
    See View.target for `lock` and the errors."""
    ref = snapshot.split_ref(args.name)
    async with connected(args, env, [ref]) as view, view.target(ref, lock=lock) as target:
        yield target


Work = Callable[[argparse.Namespace, commands.Env, Target], Awaitable[int]]


async def each_guest(
    args: argparse.Namespace, env: commands.Env, work: Work, *, lock: str | None
) -> int:
    """Run `work` on each guest args.names names, in order, each its own outcome.

    One name: its errors are the command's. Several: a failure is one error line (a JSON
    line with --json) and the others are still done; the exit status is the failures'
    common one (75 when all were locked), else 1.
    """
    refs = list(dict.fromkeys(snapshot.split_ref(n) for n in args.names))
    if len(refs) == 1:
        async with connected(args, env, refs) as view, view.target(refs[0], lock=lock) as t:
            return await work(args, env, t)
    if args.json:
        env = dataclasses.replace(env, printer=_JsonLines(out=env.printer.out, err=env.printer.err))
    failed: list[errors.MCLUError] = []
    done: set[tuple[str, str]] = set()
    async with connected(args, env, refs) as view:
        for ref in refs:
            try:
                found = snapshot.find_guest(view.snapshot, ref)
                if (found.host.spec.name, found.guest.name) in done:
                    continue  # named twice (NAME and HOST:NAME): done once
                done.add((found.host.spec.name, found.guest.name))
                async with view.target(ref, lock=lock) as target:
                    await work(args, env, target)
            except errors.MCLUError as e:
                failed.append(e)
                _report_failure(args, env, ref, e)
    codes = {e.exit_code for e in failed}
    if not codes:
        return errors.EXIT_OK
    return codes.pop() if len(codes) == 1 else errors.EXIT_FAILED


class _JsonLines(output.Printer):
    """With several guests, each one's JSON document is one line (JSON Lines)."""

    def json(self, document: dict[str, Any]) -> None:
        self.json_line({"version": output.JSON_VERSION, **document})


def _report_failure(
    args: argparse.Namespace, env: commands.Env, ref: snapshot.GuestRef, error: errors.MCLUError
) -> None:
    if args.json:
        env.printer.json(
            {
                "guest": ref.name,
                "host": ref.host,
                "action": args.action,
                "changed": False,
                "error": str(error),
                "exit_status": error.exit_code,
            }
        )
    else:
        env.printer.error(error)


def require_running(target: Target) -> None:
    if not target.guest.state.active:
        raise errors.GuestOff(
            host=target.host.spec.name, name=target.name, state=target.guest.state.value
        )


# --- reporting -----------------------------------------------------------------------------


def report(
    args: argparse.Namespace,
    env: commands.Env,
    target: Target,
    *,
    action: str,
    changed: bool,
    state: str,
    text: str,
    **extra: Any,
) -> int:
    """One line `NAME on HOST: text`, or the JSON document of docs/cli.md; exit status 0."""
    if args.json:
        env.printer.json(
            {
                "guest": target.name,
                "host": target.host.spec.name,
                "action": action,
                "changed": changed,
                "state": state,
                **extra,
            }
        )
    else:
        env.printer.text(f"{target.name} on {target.host.spec.name}: {text}")
    return errors.EXIT_OK


def _nothing_to_do(args: argparse.Namespace, env: commands.Env, target: Target, action: str) -> int:
    """The guest is in the state `action` would put it in already: a note, exit 0."""
    state = target.guest.state.value
    return report(
        args,
        env,
        target,
        action=action,
        changed=False,
        state=state,
        text=f"already {state}, nothing to do",
    )


def _after_power_off(guest: model.Guest) -> str:
    """The state a guest is in once powered off: a transient one no longer exists."""
    return model.GuestState.SHUTOFF.value if guest.persistent else "gone"


# --- start, stop, reboot, destroy ------------------------------------------------------------


async def start(args: argparse.Namespace, env: commands.Env) -> int:
    """Start shut off guests; one that is running already is left alone (a note, exit 0)."""
    return await each_guest(args, env, _start, lock="start")


async def _start(args: argparse.Namespace, env: commands.Env, target: Target) -> int:
    if target.guest.state.active:
        return _nothing_to_do(args, env, target, "start")
    await lifecycle.start(target.session, target.name)
    return report(
        args,
        env,
        target,
        action="start",
        changed=True,
        state=model.GuestState.RUNNING.value,
        text="started",
    )


async def stop(args: argparse.Namespace, env: commands.Env) -> int:
    """ACPI shutdown, waiting up to --timeout; then destroy with --force, else fail. Several
    guests are stopped one after another."""
    return await each_guest(args, env, _stop, lock="stop")


async def _stop(args: argparse.Namespace, env: commands.Env, target: Target) -> int:
    if not target.guest.state.active:
        return _nothing_to_do(args, env, target, "stop")
    stopped = await lifecycle.stop(
        target.session, target.name, timeout=args.timeout, force=args.force
    )
    if stopped.forced:
        text = f"did not shut off within {args.timeout:g} s; powered off (--force)"
    else:
        text = f"shut off ({stopped.seconds:.1f} s)"
    return report(
        args,
        env,
        target,
        action="stop",
        changed=True,
        state=_after_power_off(target.guest),
        text=text,
        forced=stopped.forced,
        seconds=round(stopped.seconds, 3),
    )


async def reboot(args: argparse.Namespace, env: commands.Env) -> int:
    """Ask a running guest's OS to restart (ACPI); returns before it has."""
    async with guest_target(args, env, lock="reboot") as target:
        require_running(target)
        await lifecycle.reboot(target.session, target.name)
        return report(
            args,
            env,
            target,
            action="reboot",
            changed=True,
            state=model.GuestState.RUNNING.value,
            text="rebooting (ACPI request sent)",
        )


async def destroy(args: argparse.Namespace, env: commands.Env) -> int:
    """Power guests off at once; one that is off already is left alone (a note, exit 0)."""
    return await each_guest(args, env, _destroy, lock="destroy")


async def _destroy(args: argparse.Namespace, env: commands.Env, target: Target) -> int:
    if not target.guest.state.active:
        return _nothing_to_do(args, env, target, "destroy")
    await lifecycle.destroy(target.session, target.name)
    return report(
        args,
        env,
        target,
        action="destroy",
        changed=True,
        state=_after_power_off(target.guest),
        text="powered off",
    )


# --- delete ----------------------------------------------------------------------------------


async def delete(args: argparse.Namespace, env: commands.Env) -> int:
    """Undefine guests, remove their own disks and console logs; --force for running ones;
    --dry-run says what would go and changes nothing (it takes no lock)."""
    return await each_guest(args, env, _delete, lock=None if args.dry_run else "delete")


async def _delete(args: argparse.Namespace, env: commands.Env, target: Target) -> int:
    request = delete_plan.DeleteRequest(
        host=target.host.spec.name,
        name=target.name,
        force=args.force,
        deleted=frozenset(target.deleted),
    )
    # The plan's refusals come before anything is read: a running guest is not looked at.
    disks = delete_plan.backing_to_read(request, target.snapshot)
    backing = await storage.backing_files(target.session, disks)
    planned = delete_plan.plan(request, target.snapshot, backing)
    if not args.dry_run:
        await lifecycle.delete(target.session, planned)
        target.deleted.add((target.host.spec.name, target.name))
    kept = [{"path": k.path, "reason": k.reason} for k in planned.keep]
    extra: dict[str, Any] = {"dry_run": True} if args.dry_run else {}
    return report(
        args,
        env,
        target,
        action="delete",
        changed=not args.dry_run,
        state=target.guest.state.value if args.dry_run else "deleted",
        text=_deleted_text(planned, dry_run=args.dry_run),
        destroyed=planned.destroy,
        removed=list(planned.remove),
        kept=kept,
        **extra,
    )


def _deleted_text(planned: delete_plan.DeletePlan, *, dry_run: bool = False) -> str:
    if dry_run:
        text = "would power off and delete" if planned.destroy else "would delete"
        text += "; would remove " + ", ".join(planned.remove)
        return text + "".join(f"; would keep {k.path} ({k.reason})" for k in planned.keep)
    text = "powered off and deleted" if planned.destroy else "deleted"
    text += "; removed " + ", ".join(planned.remove)
    text += "".join(f"; kept {k.path} ({k.reason})" for k in planned.keep)
    return text


# --- console ---------------------------------------------------------------------------------


async def console_(args: argparse.Namespace, env: commands.Env) -> int:
    """The guest's serial console on this terminal, over its host's ssh connection; with
    --log, its saved console log printed."""
    if args.log:
        return await _console_log(args, env)
    async with guest_target(args, env) as target:
        require_running(target)
        stdin_fd, stdout_fd = _terminal_fds()
        env.printer.text(
            f"Connected to {target.name} on {target.host.spec.name}.\n"
            f"Escape character is {console.ESCAPE_NAME}"
        )
        env.printer.out.flush()  # before the relay writes to the terminal itself
        argv = host_commands.serial_console(target.name)
        async with target.session.open_terminal(
            argv, term=env.environ.get("TERM") or "vt100", size=console.terminal_size(stdout_fd)
        ) as remote:
            with console.raw_mode(stdin_fd):
                relayed = await console.relay(remote, stdin_fd, stdout_fd)
        status = remote.exit_status()  # final once the block has closed the channel
        if relayed.ending == console.Ending.ENDED and status not in (0, None):
            raise errors.HostCommandFailed(
                host=target.host.spec.name,
                command=command_line(argv),
                exit_status=status,
                stderr=relayed.tail.decode(errors="replace"),
            )
        if args.json:
            return report(
                args,
                env,
                target,
                action="console",
                changed=False,
                state=target.guest.state.value,
                text="",
                ending=relayed.ending.value,
            )
        env.printer.text("")  # the guest's last line may have no end
        return errors.EXIT_OK


async def _console_log(args: argparse.Namespace, env: commands.Env) -> int:
    """Print the guest's console log as it is (a guest that is off still has its last boot's)."""
    async with guest_target(args, env) as target:
        text = (await lifecycle.console_log(target.session, target.name)).decode(errors="replace")
    if args.json:
        return report(
            args,
            env,
            target,
            action="console",
            changed=False,
            state=target.guest.state.value,
            text="",
            path=hostpaths.console_log(target.name),
            log=text,
        )
    env.printer.out.write(text if not text or text.endswith("\n") else text + "\n")
    return errors.EXIT_OK


def _terminal_fds() -> tuple[int, int]:
    """stdin's and stdout's file descriptors; NotATerminal unless stdin is a terminal."""
    try:
        stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        raise errors.NotATerminal(command="mclu console") from None
    if not os.isatty(stdin_fd):
        raise errors.NotATerminal(command="mclu console")
    return stdin_fd, stdout_fd


# --- viewer ----------------------------------------------------------------------------------


async def viewer(args: argparse.Namespace, env: commands.Env) -> int:
    """Run virt-viewer on this machine for the guest, over qemu+ssh to its host; waits for it."""
    program = shutil.which(lifecycle.VIEWER, path=env.environ.get("PATH", os.defpath))
    if program is None:
        raise errors.LocalToolMissing(
            tool=lifecycle.VIEWER, purpose="the graphical console; install the virt-viewer package"
        )
    async with guest_target(args, env) as target:
        require_running(target)
        argv = connect.viewer_argv(program, target.host.spec, target.name)
    # The hosts' connections are closed by now: the viewer makes its own, for as long as it runs.
    process = await asyncio.create_subprocess_exec(*argv, env=dict(env.environ))
    status = await process.wait()
    if status != 0:
        raise errors.LocalCommandFailed(command=command_line(argv), exit_status=status, stderr="")
    return report(
        args,
        env,
        target,
        action="viewer",
        changed=False,
        state=target.guest.state.value,
        text="viewer closed",
        argv=argv,
    )
