"""`mclu templates prune`: remove template bases cached on hosts that no guest disk uses.

Per host: read the cache and what uses it (mclu.read.storage.cache_use), decide
(mclu.decide.prune), and unless --dry-run remove (mclu.act.prune); then one report.
"""

from __future__ import annotations

import argparse
from typing import Any

from mclu import model
from mclu.act import prune as act_prune
from mclu.cli import commands, output
from mclu.decide import prune
from mclu.hosts.session import Session
from mclu.read import snapshot, storage


async def run(args: argparse.Namespace, env: commands.Env) -> int:
    """Remove cached template bases that no guest disk on their host is an overlay on."""
    inv, hosts = commands.load_hosts(args, env)
    request = prune.PruneRequest(min_age=args.min_age)

    async def one(session: Session, spec: model.HostSpec) -> prune.PrunePlan:
        plan = prune.plan(request, spec.name, await storage.cache_use(session, spec))
        if not args.dry_run:
            await act_prune.execute(session, plan)
        return plan

    async with snapshot.connected(hosts, env.open_session, limit=inv.parallel) as hosts_now:
        results = await hosts_now.gather(one)
    if args.json:
        env.printer.json(pruned_json(results, dry_run=args.dry_run))
    else:
        env.printer.text(pruned_text(results, dry_run=args.dry_run))
        commands.note_failed_hosts(results, env)
    return commands.exit_code(results)


def pruned_text(results: model.HostResults[prune.PrunePlan], *, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    lines = []
    for host, plan in results.ok.items():
        lines += [f"{host}: {verb} {name}" for name in plan.remove]
        lines += [f"{host}: kept {name} (in use)" for name in plan.in_use]
        lines += [
            f"{host}: kept {name} (arrived in the last minutes: a build may need it)"
            for name in plan.too_new
        ]
    return "\n".join(lines) if lines else "no cached templates on any host"


def pruned_json(results: model.HostResults[prune.PrunePlan], *, dry_run: bool) -> dict[str, Any]:
    return {
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
