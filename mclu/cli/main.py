# PYTHON_ARGCOMPLETE_OK (argcomplete's global completion looks for this marker)
"""The `mclu` command: argument parsing, and the one place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import select
import signal
import sys
import time
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TextIO

from mclu import __version__, errors, runtmp
from mclu.act import locks
from mclu.cli import (
    build,
    cleanup,
    commands,
    completion,
    import_,
    lifecycle,
    migration,
    output,
    parsing,
    power,
    read_commands,
    rebuild,
    templates,
)
from mclu.cli import prune as templates_prune
from mclu.cli import ssh as ssh_commands
from mclu.decide import prune as decide_prune

EXIT_INTERRUPTED = errors.EXIT_INTERRUPTED
EXIT_TERMINATED = errors.EXIT_TERMINATED
EXIT_HUNG_UP = 129  # 128 + SIGHUP: the terminal or ssh session went away


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `mclu` console script."""
    env = default_env()
    if "_ARGCOMPLETE" in env.environ:  # the shell asks for completions (docs/cli.md)
        completion.complete(build_parser(), env)
    sys.exit(run(sys.argv[1:] if argv is None else argv, env))


def default_env() -> commands.Env:
    from mclu import hosts  # imported late: asyncssh and libvirt cost time `--help` need not pay

    return commands.Env(
        environ=os.environ,
        printer=output.Printer(out=sys.stdout, err=sys.stderr),
        open_session=hosts.open_session,
    )


def run(argv: Sequence[str], env: commands.Env) -> int:
    """Run one mclu command line and return its exit code (docs/cli.md lists them)."""
    parser = build_parser()
    try:
        args = parsing.parse(parser, argv)
    except SystemExit as e:  # argparse has printed --help or --version
        return int(e.code or 0)
    except errors.UsageError as e:
        return _failed(env, e, wants_json(argv))
    command: parsing.Command = args.command
    with logging_to(env.printer.err, args.verbose):
        try:
            with locks.waiting(args.wait_lock):
                return asyncio.run(_cancelled_by_sigterm(command(args, env)))
        except errors.MCLUError as e:
            code = _failed(env, e, args.json)
            if args.verbose and e.__cause__ is not None:
                env.printer.note(f"caused by: {e.__cause__!r}")
            return code
        except KeyboardInterrupt:
            return _failed(env, errors.Interrupted(), args.json)
        except asyncio.CancelledError:
            return _failed(env, errors.Terminated(), args.json)


def _failed(env: commands.Env, error: errors.MCLUError, as_json: bool) -> int:
    """The one error line on stderr and, for --json, the error document on stdout."""
    env.printer.error(error)
    if as_json:
        env.printer.json_line(output.error_json(error))
    return error.exit_code


def wants_json(argv: Sequence[str]) -> bool:
    """Whether a command line that did not parse asked for --json (before any `--`)."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


@contextlib.contextmanager
def logging_to(stream: TextIO, verbosity: int) -> Iterator[None]:
    """Log records to `stream` while a command runs: mclu's warnings as `mclu: ...` lines;
    with -v everything mclu logs (hosts asked, steps, commands run, timings), with seconds
    since the start; with -vv the libraries' (asyncssh, asyncio) debug output too."""
    root, own = logging.getLogger(), logging.getLogger("mclu")
    saved = root.level, own.level
    handler = logging.StreamHandler(stream)
    plain = logging.Formatter("mclu: %(message)s")
    handler.setFormatter(VerboseFormatter() if verbosity else plain)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    own.setLevel(logging.DEBUG if verbosity >= 1 else logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        own.setLevel(saved[1])


_LAYER = re.compile(r"^(config|read|decide|act)\.")


class VerboseFormatter(logging.Formatter):
    """`mclu   0.153 fanout: a: read done in 0.04 s`: seconds since the command began, the
    module (without `mclu.` and its layer: `fanout`, not `read.fanout`) and the message, on
    one line (a command's script has newlines: shown as \\n); WARNING and ERROR say so."""

    def __init__(self) -> None:
        super().__init__("mclu %(elapsed)7.3f %(where)s: %(level)s%(message)s")
        self.started = time.time()

    def format(self, record: logging.LogRecord) -> str:
        record.elapsed = record.created - self.started
        record.where = _LAYER.sub("", record.name.removeprefix("mclu."))
        record.level = f"{record.levelname}: " if record.levelno >= logging.WARNING else ""
        return super().format(record).replace("\n", "\\n")


class HungUp(errors.MCLUError):
    """SIGHUP (the terminal or ssh session went away): undone as Ctrl-C is."""

    exit_code = EXIT_HUNG_UP


async def _cancelled_by_sigterm(work: Coroutine[Any, Any, int]) -> int:
    """Run `work` with this run's private temporary directory (mclu.runtmp: removed on every
    way out), turning SIGTERM and SIGHUP into its cancellation, as Ctrl-C is, so it cleans up."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    hung_up = False

    def hangup() -> None:
        nonlocal hung_up
        hung_up = True
        _drop_lost_output()
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        with runtmp.scope():
            return await work
    except asyncio.CancelledError:
        if hung_up:
            raise HungUp("hangup") from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGHUP)


def _drop_lost_output() -> None:
    """After a hangup, send stdout and stderr to /dev/null where their terminal (or the
    pipe's reader) is gone, so that writing the undo's progress cannot fail the undo."""
    for fd in (1, 2):
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        gone = select.POLLERR | select.POLLHUP | select.POLLNVAL
        if any(events & gone for _, events in poller.poll(0)):  # a hung-up tty: POLLERR|HUP
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)


def build_parser() -> parsing.Parser:
    parser = parsing.Parser(
        prog="mclu", description="A mini cloud for a handful of KVM hosts, over ssh and libvirt."
    )
    parser.add_argument("--version", action="version", version=f"mclu {__version__}")
    parsing.global_options(parser, default=None)
    sub = parser.add_subparsers(metavar="COMMAND", required=True)

    status = parsing.add_command(
        sub, "status", read_commands.status, "each host: on or off, CPUs, memory, guests"
    )
    parsing.add_host_filters(status)
    listing = parsing.add_command(
        sub, "list", read_commands.list_guests, "every guest on every host"
    )
    parsing.add_host_filters(listing)
    info = parsing.add_command(
        sub, "info", read_commands.info, "one guest, found on whichever host has it"
    )
    info.add_argument("name", metavar="[HOST:]NAME", help="the guest")
    parsing.add_host_filters(info)
    listing_t = parsing.add_command(
        sub, "templates", templates.show, "the templates: mclu's own and the repositories'"
    )
    parsing.add_templates_dir(listing_t)
    templates_sub = listing_t.add_subparsers(metavar="ACTION", required=False)
    info_t = parsing.add_command(templates_sub, "info", templates.show, "one template in full")
    info_t.add_argument("name", metavar="NAME")
    parsing.add_templates_dir(info_t, default=argparse.SUPPRESS)
    prune = parsing.add_command(
        templates_sub,
        "prune",
        templates_prune.run,
        "remove template bases cached on hosts that no guest uses, and on this "
        "machine that no repository lists",
    )
    prune.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    prune.add_argument(
        "--min-age",
        type=float,
        default=decide_prune.MIN_AGE,
        metavar="SECONDS",
        help="keep bases that arrived less than this long ago, for builds under "
        "way (default: %(default)g)",
    )
    parsing.add_host_filters(prune)
    import_.register(templates_sub)
    build.register(sub)
    lifecycle.register(sub)
    migration.register(sub)
    power.register(sub)
    rebuild.register(sub)
    cleanup.register(sub)
    ssh_commands.register(sub, listing)
    return parser
