"""Parsing helpers shared by every command group: global options, --json, host filters, and
the options of what makes a guest's disk (build and rebuild)."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from mclu import errors
from mclu.cli import commands
from mclu.decide import build as plan
from mclu.decide import readiness

Command = Callable[[argparse.Namespace, commands.Env], Coroutine[Any, Any, int]]


CLOSE = 0.7  # difflib's likeness for a suggestion: `--hots` is --host, `--bogus` not --verbose


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a UsageError: one line, like every other mclu error
    (exit status 2), printed (and given as JSON with --json) where every other error is.

    argparse's own error prints the whole usage, then the error: many lines, and not in
    mclu's `mclu: error: ...` form. Subparsers made from this parser are of this class too.
    A misspelt command, choice or option gets the nearest known one as a suggestion.
    """

    def error(self, message: str) -> NoReturn:
        # A command's parser names the command; the top one is `mclu`, which the line's own
        # `mclu: error:` already says.
        where = f"{self.prog}: " if " " in self.prog else ""
        line = " ".join(f"{where}{message}".split())  # a value's newlines stay out
        raise errors.UsageError(f"{line} (see `{self.prog} --help`)")

    def suggestion(self, unknown: Sequence[str]) -> str:
        """`; did you mean --dry-run?` for the first unknown option that is near a known one."""
        options = [o for action in self._actions for o in action.option_strings]
        for word in unknown:
            if word.startswith("-"):
                near = difflib.get_close_matches(word.partition("=")[0], options, n=1, cutoff=CLOSE)
                if near:
                    return f"; did you mean {near[0]}?"
        return ""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is not None and value not in choices:
            near = difflib.get_close_matches(
                str(value), [str(c) for c in choices], n=1, cutoff=CLOSE
            )
            if near:
                raise argparse.ArgumentError(
                    action, f"invalid choice: {value!r}; did you mean {near[0]}?"
                )
        super()._check_value(action, value)


def parse(parser: Parser, argv: Sequence[str]) -> argparse.Namespace:
    """`parser.parse_args(argv)`, but unknown options are reported by the command's own parser
    (argparse reports them from the top one), with the nearest option it knows."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        command: Parser = getattr(args, "command_parser", parser)
        command.error(f"unrecognized arguments: {' '.join(extras)}{command.suggestion(extras)}")
    return args


if TYPE_CHECKING:  # argparse's class is not subscriptable at run time
    Subparsers: TypeAlias = argparse._SubParsersAction[Parser]


def global_options(parser: argparse.ArgumentParser, default: object) -> None:
    """-c, -v and --wait-lock, accepted before and after the command name."""
    parser.add_argument(
        "--wait-lock",
        type=seconds,
        metavar="SECONDS",
        default=0.0 if default is None else default,
        help="when another mclu run holds a guest's lock, try again for up to "
        "SECONDS before giving up with exit 75 (default: 0, at once)",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=default,
        help="inventory file (default: $MCLU_CONFIG, then ~/.config/mclu/hosts.toml)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if default is None else default,
        help="log what mclu does: hosts asked, steps, commands run on hosts, "
        "timings (-vv: also the ssh and asyncio libraries)",
    )


def add_command(sub: Subparsers, name: str, command: Command, summary: str) -> Parser:
    parser = sub.add_parser(name, help=summary, description=summary)
    # After the command name they must not reset what was given before it.
    global_options(parser, default=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(command=command, command_parser=parser)
    return parser


def seconds(text: str) -> float:
    """An option's number of seconds, 0 or more (timeouts)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def add_host_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", action="append", metavar="HOST", help="only this host (repeatable)"
    )
    parser.add_argument(
        "--tag", action="append", metavar="TAG", help="only hosts with this tag (repeatable)"
    )


def add_templates_dir(parser: argparse.ArgumentParser, default: object = None) -> None:
    parser.add_argument(
        "--templates",
        metavar="DIR",
        default=default,
        help="mclu templates directory (default: $MCLU_TEMPLATES, then "
        "~/.config/mclu/templates, then the project's templates/)",
    )


def add_ready_timeout(parser: argparse.ArgumentParser) -> None:
    """How long a new guest gets to show it booted: `build` and `rebuild` take the same."""
    parser.add_argument(
        "--ready-timeout",
        type=seconds,
        metavar="SECONDS",
        help="how long a guest gets to become ready (default: the template's "
        f"ready_timeout, else {readiness.DEFAULT_TIMEOUT:g})",
    )


def add_disk_inputs(parser: argparse.ArgumentParser) -> None:
    """What a new guest disk is made from and given: `build` and `rebuild` take the same."""
    parser.add_argument(
        "--transport",
        choices=plan.TRANSPORTS,
        help="how a template base travels to a host that lacks it",
    )
    parser.add_argument(
        "--ssh-key",
        metavar="FILE",
        action="append",
        help="public key(s) for root (default: ~/.ssh/id_*.pub)",
    )
    parser.add_argument(
        "--root-password-file", metavar="FILE", help="set root's password to the first line of FILE"
    )
    parser.add_argument(
        "--user-data",
        metavar="FILE",
        help="your own #cloud-config, merged into the seed of a cloud-init template's guests",
    )
    parser.add_argument(
        "--no-login",
        action="store_true",
        help="give root no key and no password: for guests nobody logs in to "
        "(without a key or a password, mclu refuses to build)",
    )
    add_templates_dir(parser)
