"""One function per subcommand: arguments in, snapshot, output, exit code out.

Each reads as a paragraph: load the inventory, gather every host at once, render.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mclu import catalogue, errors, inventory, model, snapshot, sources
from mclu.cli import output


@dataclass
class Env:
    """What a command may use from the outside world; tests pass their own."""

    environ: Mapping[str, str]
    printer: output.Printer
    open_session: snapshot.Opener


def load_hosts(args: argparse.Namespace, env: Env) -> tuple[model.Inventory, list[model.HostSpec]]:
    inv = inventory.load(inventory.locate(args.config, env.environ))
    return inv, inventory.select(inv, names=args.host or None, tags=args.tag or None)


async def status(args: argparse.Namespace, env: Env) -> int:
    inv, hosts = load_hosts(args, env)
    snap = await snapshot.take(hosts, env.open_session, limit=inv.parallel)
    if args.json:
        env.printer.json(output.status_json(snap))
    else:
        env.printer.text(output.status_table(snap))
    return exit_code(snap)


async def list_guests(args: argparse.Namespace, env: Env) -> int:
    inv, hosts = load_hosts(args, env)
    snap = await snapshot.take(hosts, env.open_session, limit=inv.parallel)
    if args.json:
        env.printer.json(output.list_json(snap))
    else:
        env.printer.text(output.list_table(snap))
        note_failed_hosts(snap, env)
    return exit_code(snap)


async def info(args: argparse.Namespace, env: Env) -> int:
    ref = snapshot.split_ref(args.name)
    inv, hosts = load_hosts(args, env)
    if ref.host is not None:
        hosts = inventory.select(inv, names=[ref.host])
    snap = await snapshot.take(hosts, env.open_session, limit=inv.parallel)
    found = snapshot.find_guest(snap, ref)
    if args.json:
        env.printer.json({"guest": output.guest_json(found.host.spec.name, found.guest)})
    else:
        env.printer.text(output.info_text(found))
    if snap.failed:
        # The name may also exist on a host that did not answer: say so, but the answer stands.
        env.printer.note(f"not asked, did not answer: {', '.join(snap.failed)}")
    return errors.EXIT_OK


async def templates(args: argparse.Namespace, env: Env) -> int:
    mine, found = await read_templates(args, env)
    if getattr(args, "name", None):
        template = sources.resolve(args.name, mine, found.templates)
        listed = next(r for r in sources.listing(mine, found.templates)
                      if r.name == args.name or r.base == template.base.template)
        if args.json:
            env.printer.json(output.template_info_json(template))
        else:
            env.printer.text(output.template_info_text(template, listed))
        return errors.EXIT_OK
    rows = sources.listing(mine, found.templates)
    if args.json:
        env.printer.json(output.templates_json(rows, found.failed))
    else:
        env.printer.text(output.templates_table(rows))
        for error in found.failed.values():
            env.printer.note(str(error))
    return errors.EXIT_FAILED if found.failed else errors.EXIT_OK


async def read_templates(args: argparse.Namespace,
                         env: Env) -> tuple[dict[str, catalogue.Template], sources.Found]:
    """mclu's templates and every repository's, fetched off the event loop."""
    mine = catalogue.load(catalogue.locate(args.templates, env.environ))
    repos = sources.read_sources(template_repos(args, env))
    return mine, await asyncio.to_thread(sources.find_templates, repos)


def template_repos(args: argparse.Namespace, env: Env) -> list[Path]:
    """The inventory's template_repos, else virt-builder's repos.d places.

    Listing templates needs no hosts, so a missing inventory is not an error here.
    """
    path = inventory.locate(args.config, env.environ)
    if path.exists():
        configured = inventory.load(path).template_repos
        if configured is not None:
            return [Path(p) for p in configured]
    return sources.default_repo_dirs(env.environ)


def note_failed_hosts(snap: snapshot.Snapshot, env: Env) -> None:
    for error in snap.failed.values():
        env.printer.note(str(error))


def exit_code(snap: snapshot.Snapshot) -> int:
    """1 when a host failed; a host that is merely off is an answer, not a failure."""
    failed = [e for e in snap.failed.values() if e.state != "off"]
    return errors.EXIT_FAILED if failed else errors.EXIT_OK
