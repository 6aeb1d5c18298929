"""One function per subcommand: arguments in, snapshot, output, exit code out.

Each reads as a paragraph: load the inventory, gather every host at once, render.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mclu import errors, images, model
from mclu.act import build as mclu_build
from mclu.act import cleanup, locks
from mclu.cli import output
from mclu.config import catalogue, inventory, sources
from mclu.decide import build as plan
from mclu.images import cache
from mclu.read import snapshot, storage


@dataclass
class Env:
    """What a command may use from the outside world; tests pass their own."""

    environ: Mapping[str, str]
    printer: output.Printer
    open_session: snapshot.Opener


def load_hosts(args: argparse.Namespace, env: Env) -> tuple[model.Inventory, list[model.HostSpec]]:
    inv = inventory.load(inventory.locate(args.config, env.environ))
    return inv, inventory.select(inv, names=args.host or None, tags=args.tag or None)


async def read_templates(
    args: argparse.Namespace, env: Env
) -> tuple[dict[str, catalogue.Template], sources.Found]:
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


async def build(args: argparse.Namespace, env: Env) -> int:
    """Plan the build from one snapshot, show it, then (unless --dry-run) carry it out."""
    inv, hosts = load_hosts(args, env)
    mine, found = await read_templates(args, env)
    template = sources.resolve(args.template, mine, found.templates)
    cache_dir = cache.cache_dir(env.environ)
    template = with_cached_size(template, cache.cached(template, cache_dir))
    request = plan.BuildRequest(
        template=args.template,
        names=tuple(args.names),
        on=args.on,
        size=args.size,
        memory=args.memory,
        vcpus=args.vcpus,
        full_copy=args.full_copy,
        transport=args.transport or images.DEFAULT,
    )
    inputs = build_inputs(args, env)
    async with (
        snapshot.connected(hosts, env.open_session, limit=inv.parallel) as hosts_now,
        contextlib.AsyncExitStack() as stack,
    ):
        if not args.dry_run:
            # The names are taken on every host before the snapshot: a concurrent build of
            # the same name (here or on another host) fails now, or sees this one's guest.
            names = [plan.split_name(text)[0] for text in args.names]
            await stack.enter_async_context(
                locks.everywhere(hosts_now.sessions, hosts_now.specs.values(), names, "build")
            )
        snap = await hosts_now.gather(snapshot.read_host)
        disks = await hosts_now.gather(storage.read)
        note_leftovers(snap, env, {h: d.leftovers for h, d in disks.ok.items()})
        snap.failed.update(disks.failed)  # a host whose image dir cannot be read can't build
        chosen = plan.plan_build(
            request, snap, disks.ok, template, now=mclu_build.now(), inventory_path=inv.path
        )
        if args.dry_run:
            show_plan(chosen, args, env)
            return errors.EXIT_OK
        reporter = progress_reporter(args, env)
        for line in output.plan_text(chosen).splitlines():
            reporter.step(None, None, line)
        started = time.monotonic()
        try:
            local = await asyncio.to_thread(
                cache.ensure,
                template,
                cache_dir,
                lambda done, total: reporter.transfer(f"download {args.template}", done, total),
            )
            built = await mclu_build.execute(
                chosen,
                local,
                hosts_now.sessions,
                inputs,
                reporter,
                mclu_build.Readiness(
                    wait=args.wait,
                    timeout=args.ready_timeout,
                    keep_failed=args.keep_failed,
                    autostart=args.autostart,
                ),
            )
        finally:
            reporter.close()
    seconds = time.monotonic() - started
    if args.json:
        env.printer.json_line(output.built_json(built, seconds))
    else:
        env.printer.text(output.built_text(built, seconds))
    return errors.EXIT_OK


def with_cached_size(
    template: model.ResolvedTemplate, local: cache.LocalBase | None
) -> model.ResolvedTemplate:
    """The template with its base's real data size when the controller has it cached."""
    if local is None:
        return template
    base = dataclasses.replace(template.base, data_bytes=local.data_bytes)
    return dataclasses.replace(template, base=base)


def build_inputs(args: argparse.Namespace, env: Env) -> mclu_build.Inputs:
    """Root's authorized keys (--ssh-key, else ~/.ssh/id_*.pub) and the password file.

    A guest given neither a key nor a password is one nobody can log in to: refused unless
    --no-login says that is meant (a build or rebuild on a controller whose ~/.ssh holds no
    key would otherwise make such guests without a word).
    """
    password = args.root_password_file
    if args.no_login:
        given = [
            o for o, v in (("--ssh-key", args.ssh_key), ("--root-password-file", password)) if v
        ]
        if given:
            raise errors.UsageError(f"--no-login and {given[0]} do not go together")
        return mclu_build.Inputs()
    home = Path(env.environ.get("HOME", "~")).expanduser()
    paths = [Path(p) for p in args.ssh_key] if args.ssh_key else sorted(home.glob(".ssh/id_*.pub"))
    keys = []
    for path in paths:
        keys += _key_lines(path)
    if password is not None and not Path(password).is_file():
        raise errors.UsageError(f"no root password file {password}")
    if not keys and password is None:
        raise errors.UsageError(
            f"no ssh key for the guests' root: {home}/.ssh has no id_*.pub; give --ssh-key "
            "FILE (or --root-password-file FILE), or --no-login for guests nobody logs in to"
        )
    return mclu_build.Inputs(ssh_authorized_keys=tuple(keys), root_password_file=password)


def _key_lines(path: Path) -> list[str]:
    """The public key lines of one key file; a private key or an empty file is refused."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not a text file"
        raise errors.UsageError(f"cannot read ssh key {path}: {reason}") from None
    if any(line.startswith("-----BEGIN") for line in lines):
        raise errors.UsageError(f"ssh key {path} is a private key: give its .pub file")
    if not lines:
        raise errors.UsageError(f"ssh key {path} holds no key")
    return lines


def show_plan(chosen: plan.BuildPlan, args: argparse.Namespace, env: Env) -> None:
    if args.json:
        env.printer.json(output.plan_json(chosen))
    else:
        env.printer.text(output.plan_text(chosen))


def progress_reporter(
    args: argparse.Namespace, env: Env
) -> output.LineReporter | output.JsonReporter:
    if args.json:
        return output.JsonReporter(env.printer.out)
    return output.LineReporter(env.printer.err, bars=env.printer.err.isatty())


def note_leftovers(
    snap: model.Snapshot, env: Env, scans: Mapping[str, model.LeftoverScan | None] | None = None
) -> None:
    """One stderr line when interrupted runs left something that `mclu cleanup` removes."""
    text = cleanup.note(cleanup.count(snap, scans))
    if text is not None:
        env.printer.note(text)


def note_failed_hosts(snap: model.HostResults[Any], env: Env) -> None:
    for error in snap.failed.values():
        env.printer.note(str(error))


def exit_code(snap: model.HostResults[Any]) -> int:
    """1 when a host failed; a host that is merely off is an answer, not a failure."""
    failed = [e for e in snap.failed.values() if e.state != "off"]
    return errors.EXIT_FAILED if failed else errors.EXIT_OK
