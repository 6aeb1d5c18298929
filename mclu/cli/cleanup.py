"""`mclu cleanup`: remove what interrupted runs of mclu left on the hosts.

Per host: read its guests and scan (mclu.read.storage.scan_leftovers), decide
(mclu.decide.cleanup), and unless --dry-run carry the plan out (mclu.act.cleanup); the
controller's own run directories first (mclu.runtmp). Then one report.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mclu import errors, model, runtmp
from mclu.act import cleanup as act_cleanup
from mclu.cli import commands, parsing
from mclu.decide import cleanup
from mclu.decide.cleanup import Item
from mclu.hosts.session import Session
from mclu.read import snapshot, storage


def register(sub: parsing.Subparsers) -> None:
    """Add `mclu cleanup` to the `mclu` parser."""
    parser = parsing.add_command(
        sub,
        "cleanup",
        run,
        "remove what interrupted runs left: guests still 'building', partial files, and "
        "the controller's temporary files of runs that are gone",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be removed, remove nothing"
    )
    parsing.add_host_filters(parser)


@dataclass(frozen=True)
class HostCleanup:
    plan: cleanup.CleanupPlan  # what the scan found
    done: act_cleanup.Done | None  # None with --dry-run


async def run(args: argparse.Namespace, env: commands.Env) -> int:
    inv, hosts = commands.load_hosts(args, env)

    async def one(session: Session, spec: model.HostSpec) -> HostCleanup:
        guests = await session.guests()
        scan = await storage.scan_leftovers(session, spec)
        plan = cleanup.plan(guests, scan)
        if args.dry_run:
            return HostCleanup(plan, None)
        return HostCleanup(plan, await act_cleanup.execute(session, spec, plan))

    # This controller's side first: the private run directories of mclu runs that are gone.
    runtmp.current().sweep_when_made = not args.dry_run
    local = [str(p) for p in runtmp.sweep(dry_run=args.dry_run)]
    async with snapshot.connected(hosts, env.open_session, limit=inv.parallel) as hosts_now:
        results = await hosts_now.gather(one)
    if args.json:
        env.printer.json(cleanup_json(results, dry_run=args.dry_run, controller=local))
    else:
        env.printer.text(cleanup_text(results, dry_run=args.dry_run, controller=local))
        commands.note_failed_hosts(results, env)
    failed = any(r.done is not None and r.done.failed for r in results.ok.values())
    return errors.EXIT_FAILED if failed else commands.exit_code(results)


def cleanup_text(
    results: model.HostResults[HostCleanup], *, dry_run: bool, controller: Sequence[str] = ()
) -> str:
    verb = "would remove" if dry_run else "removed"
    lines = [
        f"controller: {verb} {path} (temporary files of an mclu run that is gone)"
        for path in controller
    ]
    for host, result in results.ok.items():
        if result.done is None:
            lines += [f"{host}: would remove {i} ({i.reason})" for i in result.plan.removable]
            lines += [f"{host}: kept {i} ({i.reason})" for i in result.plan.kept]
            continue
        done = result.done
        lines += [describe_removed(host, i, done.files, "removed") for i in done.removed]
        lines += [f"{host}: kept {i} ({i.reason})" for i in done.kept]
        lines += [f"{host}: could not remove {i}: {why}" for i, why in done.failed]
    if lines:
        return "\n".join(lines)
    asked = "the hosts that answered" if results.failed else "any host"
    return f"nothing to clean up on {asked}" + (" (dry run)" if dry_run else "")


def cleanup_json(
    results: model.HostResults[HostCleanup], *, dry_run: bool, controller: Sequence[str] = ()
) -> dict[str, Any]:
    hosts = []
    for host, result in results.ok.items():
        if result.done is None:
            removed: Sequence[Item] = result.plan.removable
            kept: Sequence[Item] = result.plan.kept
            failed: Sequence[tuple[Item, str]] = ()
            files = None
        else:
            removed, kept, failed = result.done.removed, result.done.kept, result.done.failed
            files = result.done.files
        hosts.append(
            {
                "name": host,
                "removed": [item_json(i, files) for i in removed],
                "kept": [item_json(i) for i in kept],
                "failed": [{**item_json(i), "error": why} for i, why in failed],
            }
        )
    return {
        "dry_run": dry_run,
        "controller": {"removed": list(controller)},
        "hosts": hosts,
        "failed_hosts": [
            {"name": n, "state": e.state, "error": str(e)} for n, e in results.failed.items()
        ],
    }


def item_json(item: Item, files: Mapping[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    key = "name" if item.kind == "guest" else "path"
    found: dict[str, Any] = {"kind": item.kind, key: item.name, "reason": item.reason}
    if item.kind == "guest" and files is not None:
        found["files"] = list(files.get(item.name, ()))
    return found


def describe_removed(host: str, item: Item, files: Mapping[str, tuple[str, ...]], verb: str) -> str:
    extra = ""
    if item.kind == "guest" and files.get(item.name):
        extra = f" and {', '.join(files[item.name])}"
    return f"{host}: {verb} {item}{extra} ({item.reason})"
