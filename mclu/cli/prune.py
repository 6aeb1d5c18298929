"""`mclu templates prune`: remove template bases cached on hosts that no guest disk uses, and
bases in the controller's cache that no repository lists any more.

Per host: read the cache and what uses it (mclu.read.storage.cache_use), decide
(mclu.decide.prune), and unless --dry-run remove (mclu.act.prune). The controller's cache:
its bases against what the repositories list now (mclu.decide.prune.plan_local). Then one
report.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from mclu import errors, model
from mclu.act import prune as act_prune
from mclu.cli import commands, output
from mclu.config import sources
from mclu.decide import prune
from mclu.hosts.session import Session
from mclu.images import cache
from mclu.read import snapshot, storage

CONTROLLER = "controller"  # how the report names this machine's cache


async def run(args: argparse.Namespace, env: commands.Env) -> int:
    """Remove cached template bases that no guest disk on their host is an overlay on, and
    the controller's that no repository lists."""
    inv, hosts = commands.load_hosts(args, env)
    request = prune.PruneRequest(min_age=args.min_age)
    local = await _plan_local(request, args, env)

    async def one(session: Session, spec: model.HostSpec) -> prune.PrunePlan:
        plan = prune.plan(request, spec.name, await storage.cache_use(session, spec))
        if not args.dry_run:
            await act_prune.execute(session, plan)
        return plan

    async with snapshot.connected(hosts, env.open_session, limit=inv.parallel) as hosts_now:
        results = await hosts_now.gather(one)
    failed = {} if args.dry_run else await asyncio.to_thread(act_prune.execute_local, local)
    if args.json:
        env.printer.json(pruned_json(results, local, failed, dry_run=args.dry_run))
    else:
        env.printer.text(pruned_text(results, local, failed, dry_run=args.dry_run))
        commands.note_failed_hosts(results, env)
    code = commands.exit_code(results)
    return errors.EXIT_FAILED if failed else code


async def _plan_local(
    request: prune.PruneRequest, args: argparse.Namespace, env: commands.Env
) -> prune.LocalPrunePlan:
    """The controller's cache against the bases the repositories list now (asked only when
    the cache holds any); a repository that does not answer keeps every unlisted base."""
    directory = cache.cache_dir(env.environ)
    ages = cache.ages(directory)
    listed: set[str] = set()
    failed = False
    if ages:
        repos = sources.read_sources(commands.template_repos(args, env))
        found = await asyncio.to_thread(sources.find_templates, repos)
        listed = {sources.base_image(t.entry).cache_name for t in found.templates}
        failed = bool(found.failed)
        if not args.json:
            for error in found.failed.values():
                env.printer.note(str(error))
    return prune.plan_local(request, str(directory), ages, listed, sources_failed=failed)


def pruned_text(
    results: model.HostResults[prune.PrunePlan],
    local: prune.LocalPrunePlan | None = None,
    failed: dict[str, str] | None = None,
    *,
    dry_run: bool,
) -> str:
    verb = "would remove" if dry_run else "removed"
    lines = []
    for host, plan in results.ok.items():
        lines += [f"{host}: {verb} {name}" for name in plan.remove]
        lines += [f"{host}: kept {name} (in use)" for name in plan.in_use]
        lines += [f"{host}: kept {name} ({_TOO_NEW})" for name in plan.too_new]
    if local is not None:
        failed = failed or {}
        lines += [
            f"{CONTROLLER}: could not remove {name}: {failed[name]}"
            if name in failed
            else f"{CONTROLLER}: {verb} {name} (no repository lists it)"
            for name in local.remove
        ]
        lines += [f"{CONTROLLER}: kept {name} (a repository lists it)" for name in local.listed]
        lines += [f"{CONTROLLER}: kept {name} ({_TOO_NEW})" for name in local.too_new]
        lines += [
            f"{CONTROLLER}: kept {name} (a repository did not answer: it may list it)"
            for name in local.unsure
        ]
    return "\n".join(lines) if lines else "no cached templates on any host"


_TOO_NEW = "arrived in the last minutes: a build may need it"


def pruned_json(
    results: model.HostResults[prune.PrunePlan],
    local: prune.LocalPrunePlan | None = None,
    failed: dict[str, str] | None = None,
    *,
    dry_run: bool,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "dry_run": dry_run,
        "hosts": [
            {
                "name": host,
                "removed": list(plan.remove),
                "in_use": list(plan.in_use),
                "too_new": list(plan.too_new),
            }
            for host, plan in results.ok.items()
        ],
        "failed_hosts": [output.host_json(n, e) for n, e in results.failed.items()],
    }
    if local is not None:
        failed = failed or {}
        document["controller"] = {
            "cache_dir": local.cache_dir,
            "removed": [n for n in local.remove if n not in failed],
            "listed": list(local.listed),
            "too_new": list(local.too_new),
            "unsure": list(local.unsure),
            "failed": [{"name": n, "error": why} for n, why in sorted(failed.items())],
        }
    return document
