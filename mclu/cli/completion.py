"""Shell completion with argcomplete: commands and options come from the parser itself; host
names from the inventory; guest names from a quick look at the hosts, bounded in time.

`mclu.cli.main.main` calls `complete` before parsing; it returns at once unless the shell
asked for completions (argcomplete's environment), and then exits without running anything.
Completers never raise: a bad inventory or a host that does not answer completes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from mclu import model
from mclu.cli import commands
from mclu.config import inventory
from mclu.read import fanout

GUEST_LOOKUP_SECONDS = 2.0  # the whole look at the hosts: a shell must not hang on Tab
GUEST_METAVAR = "[HOST:]NAME"  # the positional of commands that take existing guests
HOST_OPTIONS = ("--host", "--on", "--to")
NEW_GUESTS = ("build",)  # their [HOST:]NAME are names to make: nothing to complete

Completer = Callable[..., list[str]]


def complete(parser: argparse.ArgumentParser, env: commands.Env) -> None:
    """Answer the shell's completion request, if this run is one (argcomplete exits then)."""
    if "_ARGCOMPLETE" not in env.environ:
        return
    import argcomplete  # only when completing: `mclu` runs need not load it

    attach(parser, env)
    argcomplete.autocomplete(parser)


def attach(parser: argparse.ArgumentParser, env: commands.Env) -> None:
    """Give the host and guest arguments of every command their completers."""
    for command, sub in _parsers(parser, ""):
        for action in sub._actions:
            completer: Completer | None = None
            if action.metavar == "HOST" or set(action.option_strings) & set(HOST_OPTIONS):
                completer = _hosts_completer(env.environ)
            elif action.metavar == GUEST_METAVAR:
                completer = _no_words if command in NEW_GUESTS else _guests_completer(env)
            if completer is not None:
                vars(action)["completer"] = completer  # what argcomplete looks for


def _parsers(
    parser: argparse.ArgumentParser, name: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, sub_name)


def host_names(parsed_args: argparse.Namespace, environ: Mapping[str, str]) -> list[str]:
    """The inventory's host names (the one -c names, else the usual places); [] if unreadable."""
    try:
        path = inventory.locate(getattr(parsed_args, "config", None), environ)
        return inventory.load(path).names()
    except Exception:  # completion must never fail the shell
        return []


def _no_words(**_: Any) -> list[str]:
    """For names that do not exist yet (argcomplete would offer file names otherwise)."""
    return []


def _hosts_completer(environ: Mapping[str, str]) -> Completer:
    def completer(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
        return [h for h in host_names(parsed_args, environ) if h.startswith(prefix)]

    return completer


def _guests_completer(env: commands.Env) -> Completer:
    def completer(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
        host, sep, _name = prefix.rpartition(":")
        try:
            found = guest_names(parsed_args, env, only=host if sep else None)
        except Exception:  # completion must never fail the shell
            return []
        words = [f"{h}:{g}" for h, g in found] if sep else sorted({g for _, g in found})
        return [w for w in words if w.startswith(prefix)]

    return completer


def guest_names(
    parsed_args: argparse.Namespace, env: commands.Env, *, only: str | None = None
) -> list[tuple[str, str]]:
    """(host, guest) for every guest of the hosts that answer within GUEST_LOOKUP_SECONDS
    (those of --host/--tag when given, or `only`); what answered by then is kept."""
    inv = inventory.load(inventory.locate(getattr(parsed_args, "config", None), env.environ))
    names = [only] if only else getattr(parsed_args, "host", None)
    tags = None if only else getattr(parsed_args, "tag", None)
    hosts = inventory.select(inv, names=names or None, tags=tags or None)
    with _quiet():
        return asyncio.run(_guest_names(hosts, env, inv.parallel))


async def _guest_names(
    hosts: list[model.HostSpec], env: commands.Env, limit: int
) -> list[tuple[str, str]]:
    async def read(spec: model.HostSpec) -> tuple[model.Guest, ...]:
        async with env.open_session(spec) as session:
            return await session.guests()

    results = await fanout.gather(
        hosts, read, limit=limit, deadline=lambda _spec: GUEST_LOOKUP_SECONDS
    )
    return [(host, g.name) for host, guests in results.ok.items() for g in guests]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No log lines into the shell's prompt while completing."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)
