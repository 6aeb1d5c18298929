"""Live migration: migrate and drain."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping

from mclu import errors, model
from mclu.act import build, migrate
from mclu.cli import commands, output, parsing
from mclu.config import inventory
from mclu.hosts.session import Session
from mclu.images import cache
from mclu.read import snapshot, storage


def register(sub: parsing.Subparsers) -> None:
    """Add this group's commands to the `mclu` parser."""
    move = parsing.add_command(
        sub, "migrate", migrate_guest, "live-migrate a running guest to another host"
    )
    move.add_argument("name", metavar="[HOST:]NAME", help="the guest")
    move.add_argument(
        "--to", metavar="HOST", help="the destination (default: the host with the most room)"
    )
    move.add_argument("--dry-run", action="store_true", help="say where it would go, move nothing")
    move.set_defaults(host=None, tag=None)
    drain = parsing.add_command(
        sub, "drain", drain_host, "live-migrate every running guest off a host"
    )
    drain.add_argument("source", metavar="HOST", help="the host to empty")
    drain.add_argument("--dry-run", action="store_true", help="show the plan, move nothing")
    drain.set_defaults(host=None, tag=None)


async def migrate_guest(args: argparse.Namespace, env: commands.Env) -> int:
    """Find the guest, choose its destination from one snapshot, move it, say how long it took."""
    ref = snapshot.split_ref(args.name)
    inv, hosts = commands.load_hosts(args, env)
    if ref.host is not None:
        inventory.select(inv, names=[ref.host])  # UnknownHost for a host not in the inventory
        if args.to is not None and inv.get(args.to) is not None:
            # Both ends named: no other host has a say (nor a slow answer to wait for).
            hosts = inventory.select(inv, names=sorted({ref.host, args.to}))
    async with snapshot.connected(hosts, env.open_session, limit=inv.parallel) as now:
        snap = await now.gather(snapshot.read_host)
        found = snapshot.find_guest(snap, ref)
        source = found.host.spec.name
        if not found.guest.state.active:
            raise errors.GuestNotRunning(source, found.guest.name, found.guest.state.value)
        if args.to is not None and args.to != source and args.to in snap.failed:
            raise snap.failed[args.to]
        disks, facts = await _disks_and_storage(now, snap, source, [found.guest])
        move = migrate.choose(
            found.guest,
            source,
            disks.get(found.guest.name, ()),
            snap,
            facts,
            to=args.to,
            inventory_path=inv.path,
        )
        if args.dry_run:
            _show_plan([move], args, env)
            return errors.EXIT_OK
        reporter = commands.progress_reporter(args, env)
        reporter.step(None, None, migrate.describe(move))
        try:
            moved = await migrate.execute(
                move, now.sessions, now.specs, cache.cache_dir(env.environ), reporter
            )
        finally:
            reporter.close()
    if args.json:
        env.printer.json_line(output.moved_json([moved]))
    else:
        env.printer.text(output.moved_text(moved))
    return errors.EXIT_OK


async def drain_host(args: argparse.Namespace, env: commands.Env) -> int:
    """Move every running guest off a host, one after another; a table of what moved."""
    inv, hosts = commands.load_hosts(args, env)
    inventory.select(inv, names=[args.source])  # UnknownHost for a host not in the inventory
    started = time.monotonic()
    async with snapshot.connected(hosts, env.open_session, limit=inv.parallel) as now:
        snap = await now.gather(snapshot.read_host)
        if args.source in snap.failed:
            raise snap.failed[args.source]
        running = [g for g in snap.ok[args.source].guests if g.state.active]
        disks, facts = await _disks_and_storage(now, snap, args.source, running)
        plan = migrate.plan_drain(args.source, snap, facts, disks)
        if args.dry_run:
            _show_plan(plan, args, env)
            return errors.EXIT_OK
        reporter = commands.progress_reporter(args, env)
        results: list[migrate.Moved | migrate.NotMoved] = []
        try:
            for item in plan:
                results.append(await _carry_out(item, now, env, reporter))
        finally:
            reporter.close()
    seconds = time.monotonic() - started
    if args.json:
        env.printer.json_line(output.drained_json(args.source, results, seconds))
    else:
        env.printer.text(output.drained_table(results))
    failed = any(isinstance(r, migrate.NotMoved) for r in results)
    return errors.EXIT_FAILED if failed else errors.EXIT_OK


async def _carry_out(
    item: migrate.Move | migrate.NotMoved,
    now: snapshot.Connected,
    env: commands.Env,
    reporter: build.Reporter,
) -> migrate.Moved | migrate.NotMoved:
    if isinstance(item, migrate.NotMoved):
        return item
    reporter.step(None, None, migrate.describe(item))
    try:
        return await migrate.execute(
            item, now.sessions, now.specs, cache.cache_dir(env.environ), reporter
        )
    except errors.MigrationFailed as e:
        return migrate.NotMoved(
            item.guest, item.source, f"{e.step} on the way to {e.dest}: {e.reason}"
        )
    except errors.GuestLocked as e:
        return migrate.NotMoved(item.guest, item.source, f"locked by {e.holder}")


async def _disks_and_storage(
    now: snapshot.Connected,
    snap: model.Snapshot,
    source: str,
    guests: list[model.Guest],
) -> tuple[dict[str, tuple[migrate.Disk, ...]], dict[str, model.StorageFacts]]:
    """The guests' disks (read on the source) and the other hosts' storage facts, unless every
    possible destination shares the source's storage (then nothing is copied)."""
    src = snap.ok[source].spec
    others = [h.spec for n, h in snap.ok.items() if n != source]
    if all(migrate.shared(src, spec) for spec in others):
        return {g.name: () for g in guests}, {}
    session = now.sessions[source]
    disks = {g.name: await migrate.read_disks(session, g) for g in guests}

    async def read(host: Session, spec: model.HostSpec) -> model.StorageFacts:
        if spec.name == source:
            return model.StorageFacts(image_dir=spec.image_dir, free=0)
        return await storage.read(host, spec)

    facts = await now.gather(read)
    snap.failed.update({h: e for h, e in facts.failed.items() if h != source})
    return disks, dict(_without(facts.ok, source))


def _without(facts: Mapping[str, model.StorageFacts], source: str) -> dict[str, model.StorageFacts]:
    return {h: f for h, f in facts.items() if h != source}


def _show_plan(
    plan: list[migrate.Move] | list[migrate.Move | migrate.NotMoved],
    args: argparse.Namespace,
    env: commands.Env,
) -> None:
    if args.json:
        env.printer.json(output.migration_plan_json(plan))
    else:
        env.printer.text(output.migration_plan_text(plan))
