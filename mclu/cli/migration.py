"""Live migration: migrate and drain, and how their plans and results are shown.

Read (one snapshot; the guests' disks and the other hosts' storage: `mclu.read.migrate.gather`)
→ plan (pure, `mclu.decide.migrate`) → show (`--dry-run` stops here) → move, guest by guest.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from mclu import errors, sizes
from mclu.act import migrate
from mclu.act.build import Reporter
from mclu.cli import commands, parsing
from mclu.config import inventory
from mclu.decide import migrate as plan
from mclu.images import cache
from mclu.read import migrate as read_migrate
from mclu.read import snapshot


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
    request = plan.MigrateRequest(args.name, to=args.to, inventory_path=inv.path)
    cache_dir = cache.cache_dir(env.environ)
    async with snapshot.connected(hosts, env.open_session, limit=inv.parallel) as now:
        snap = await now.gather(snapshot.read_host)
        found = snapshot.find_guest(snap, ref)
        source = found.host.spec.name
        plan.check_source(found.guest, source, args.to, snap)
        local = cache.names(cache_dir)
        facts = await read_migrate.gather(now, snap, source, [found.guest], local)
        move = plan.plan_migrate(request, source, found.guest, facts)
        if args.dry_run:
            _show_plan([move], args, env)
            return errors.EXIT_OK
        reporter = commands.progress_reporter(args, env)
        reporter.step(None, None, describe(move))
        try:
            moved = await migrate.execute(move, now.sessions, now.specs, cache_dir, reporter)
        finally:
            reporter.close()
    if args.json:
        env.printer.json_line(moved_json([moved]))
    else:
        env.printer.text(moved_text(moved))
    return errors.EXIT_OK


async def drain_host(args: argparse.Namespace, env: commands.Env) -> int:
    """Move every running guest off a host, one after another; a table of what moved."""
    inv, hosts = commands.load_hosts(args, env)
    inventory.select(inv, names=[args.source])  # UnknownHost for a host not in the inventory
    started = time.monotonic()
    cache_dir = cache.cache_dir(env.environ)
    async with snapshot.connected(hosts, env.open_session, limit=inv.parallel) as now:
        snap = await now.gather(snapshot.read_host)
        if args.source in snap.failed:
            raise snap.failed[args.source]
        running = [g for g in snap.ok[args.source].guests if g.state.active]
        local = cache.names(cache_dir)
        facts = await read_migrate.gather(now, snap, args.source, running, local)
        drain = plan.plan_drain(args.source, facts)
        if args.dry_run:
            _show_plan(drain.items, args, env)
            return errors.EXIT_OK
        reporter = commands.progress_reporter(args, env)
        results: list[migrate.Moved | plan.NotMoved] = []
        try:
            for item in drain.items:
                results.append(await _carry_out(item, now, cache_dir, reporter))
        finally:
            reporter.close()
    seconds = time.monotonic() - started
    if args.json:
        env.printer.json_line(drained_json(args.source, results, seconds))
    else:
        env.printer.text(drained_table(results))
    failed = any(isinstance(r, plan.NotMoved) for r in results)
    return errors.EXIT_FAILED if failed else errors.EXIT_OK


async def _carry_out(
    item: plan.Move | plan.NotMoved,
    now: snapshot.Connected,
    cache_dir: Path,
    reporter: Reporter,
) -> migrate.Moved | plan.NotMoved:
    if isinstance(item, plan.NotMoved):
        return item
    reporter.step(None, None, describe(item))
    try:
        return await migrate.execute(item, now.sessions, now.specs, cache_dir, reporter)
    except errors.MigrationFailed as e:
        return plan.NotMoved(
            item.guest, item.source, f"{e.step} on the way to {e.dest}: {e.reason}"
        )
    except errors.GuestLocked as e:
        return plan.NotMoved(item.guest, item.source, f"locked by {e.holder}")


def _show_plan(
    items: Sequence[plan.Move | plan.NotMoved], args: argparse.Namespace, env: commands.Env
) -> None:
    if args.json:
        env.printer.json(migration_plan_json(items))
    else:
        env.printer.text(migration_plan_text(items))


# --- rendering ---------------------------------------------------------------------------------


def describe(move: plan.Move) -> str:
    """One line for people: where the guest goes and why."""
    data = sum(d.data_bytes for d in move.disks)
    disks = "shared storage" if move.shared else f"{sizes.human(data)} of disk data to copy"
    return f"{move.guest.name}: {move.source} → {move.dest} ({move.reason}; {disks})"


def migration_plan_text(items: Sequence[plan.Move | plan.NotMoved]) -> str:
    """One line per guest: where it goes and why, or why it stays."""
    lines = [
        describe(item)
        if isinstance(item, plan.Move)
        else f"{item.guest.name}: stays on {item.source} ({item.reason})"
        for item in items
    ]
    return "\n".join(lines) if lines else "no guests to move"


def migration_plan_json(items: Sequence[plan.Move | plan.NotMoved]) -> dict[str, Any]:
    return {"moves": [_move_json(item) for item in items]}


def _move_json(item: plan.Move | plan.NotMoved) -> dict[str, Any]:
    if isinstance(item, plan.NotMoved):
        return {"name": item.guest.name, "from": item.source, "to": None, "reason": item.reason}
    return {
        "name": item.guest.name,
        "from": item.source,
        "to": item.dest,
        "reason": item.reason,
        "shared_storage": item.shared,
        "disk_bytes": sum(d.data_bytes for d in item.disks),
    }


def moved_text(moved: migrate.Moved) -> str:
    return f"{moved.name} moved {moved.source} → {moved.dest} in {moved.seconds:.1f} s"


def moved_json(moved: Sequence[migrate.Moved]) -> dict[str, Any]:
    return {
        "event": "done",
        "moved": [
            {"name": m.name, "from": m.source, "to": m.dest, "seconds": round(m.seconds, 3)}
            for m in moved
        ],
    }


def drained_table(results: Sequence[migrate.Moved | plan.NotMoved]) -> str:
    if not results:
        return "no guests on the host"
    rows = [
        [r.name, r.source, r.dest, f"moved in {r.seconds:.1f} s"]
        if isinstance(r, migrate.Moved)
        else [r.guest.name, r.source, "", f"not moved: {r.reason}"]
        for r in results
    ]
    return tabulate(
        rows, headers=["GUEST", "FROM", "TO", "RESULT"], tablefmt="plain", disable_numparse=True
    )


def drained_json(
    host: str, results: Sequence[migrate.Moved | plan.NotMoved], seconds: float
) -> dict[str, Any]:
    return {
        "event": "done",
        "host": host,
        "seconds": round(seconds, 3),
        "guests": [
            {
                "name": r.name,
                "from": r.source,
                "to": r.dest,
                "result": "moved",
                "reason": None,
                "seconds": round(r.seconds, 3),
            }
            if isinstance(r, migrate.Moved)
            else {
                "name": r.guest.name,
                "from": r.source,
                "to": None,
                "result": "not moved",
                "reason": r.reason,
                "seconds": None,
            }
            for r in results
        ],
    }
