"""Parsing helpers shared by every command group: global options, --json, host filters, and
the options of what makes a guest's disk (build and rebuild)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from mclu import plan
from mclu.cli import commands

Command = Callable[[argparse.Namespace, commands.Env], Coroutine[Any, Any, int]]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other mclu error (exit status 2).

    argparse's own error prints the whole usage, then the error: many lines, and not in
    mclu's `mclu: error: ...` form. Subparsers made from this parser are of this class too.
    """

    def error(self, message: str) -> NoReturn:
        line = " ".join(f"{self.prog}: {message}".split())  # a value's newlines stay out
        self.exit(2, f"mclu: error: {line} (see `{self.prog} --help`)\n")


if TYPE_CHECKING:  # argparse's class is not subscriptable at run time
    Subparsers: TypeAlias = argparse._SubParsersAction[Parser]


def global_options(parser: argparse.ArgumentParser, default: object) -> None:
    """-c and -v, accepted before and after the command name."""
    parser.add_argument("-c", "--config", metavar="FILE", default=default,
                        help="inventory file (default: $MCLU_CONFIG, then "
                             "~/.config/mclu/hosts.toml)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        default=False if default is None else default,
                        help="log what mclu does")


def add_command(sub: Subparsers, name: str,
                  command: Command, summary: str) -> Parser:
    parser = sub.add_parser(name, help=summary, description=summary)
    # After the command name they must not reset what was given before it.
    global_options(parser, default=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(command=command)
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
    parser.add_argument("--host", action="append", metavar="HOST",
                        help="only this host (repeatable)")
    parser.add_argument("--tag", action="append", metavar="TAG",
                        help="only hosts with this tag (repeatable)")


def add_templates_dir(parser: argparse.ArgumentParser, default: object = None) -> None:
    parser.add_argument("--templates", metavar="DIR", default=default,
                        help="mclu templates directory (default: $MCLU_TEMPLATES, then "
                             "~/.config/mclu/templates, then the project's templates/)")


def add_disk_inputs(parser: argparse.ArgumentParser) -> None:
    """What a new guest disk is made from and given: `build` and `rebuild` take the same."""
    parser.add_argument("--transport", choices=plan.TRANSPORTS,
                        help="how a template base travels to a host that lacks it")
    parser.add_argument("--ssh-key", metavar="FILE", action="append",
                        help="public key(s) for root (default: ~/.ssh/id_*.pub)")
    parser.add_argument("--root-password-file", metavar="FILE",
                        help="set root's password to the first line of FILE")
    parser.add_argument("--no-login", action="store_true",
                        help="give root no key and no password: for guests nobody logs in to "
                             "(without a key or a password, mclu refuses to build)")
    add_templates_dir(parser)
