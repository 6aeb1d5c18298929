"""`mclu build TEMPLATE NAME...`: plan from one snapshot, show the plan, then (unless
--dry-run) carry it out and say where each guest runs.

Gather (hosts, their storage, the templates) → plan (pure, `mclu.decide.build`) → show →
execute (`mclu.act.build`, its progress through a reporter) → one result line or document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from mclu import errors, images, model, sizes
from mclu.act import build as mclu_build
from mclu.act import locks
from mclu.cli import commands, output, parsing
from mclu.config import sources
from mclu.decide import build as plan
from mclu.decide.build import BuildPlan, GuestPlan
from mclu.images import cache
from mclu.read import snapshot, storage


def register(sub: parsing.Subparsers) -> None:
    """Add `mclu build` to the `mclu` parser."""
    parser = parsing.add_command(sub, "build", run, "make running guests from a template")
    parser.add_argument("template", metavar="TEMPLATE")
    parser.add_argument("names", metavar="[HOST:]NAME", nargs="+", help="the new guests")
    parser.add_argument(
        "--on", metavar="HOST", help="build on this host (else: the one with the most room)"
    )
    parser.add_argument("--size", type=_size, help="disk size, e.g. 10G (at least the template's)")
    parser.add_argument("--memory", type=_size, help="memory, e.g. 2G")
    parser.add_argument("--vcpus", type=int, help="virtual CPUs")
    parser.add_argument(
        "--full-copy",
        action="store_true",
        help="an independent copy of the template's disk, not an overlay",
    )
    parsing.add_disk_inputs(parser)
    parser.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="done once the guests are started, without waiting until they "
        "have booted (not checked: recorded as ready)",
    )
    parsing.add_ready_timeout(parser)
    parser.add_argument(
        "--keep-failed",
        action="store_true",
        help="keep a guest that did not become ready, for a look (else it is "
        "removed like any failed build)",
    )
    parser.add_argument(
        "--no-autostart",
        dest="autostart",
        action="store_false",
        help="do not start the guests when their host starts",
    )
    parser.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    parser.set_defaults(host=None, tag=None)


def _size(text: str) -> int:
    try:
        return sizes.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


async def run(args: argparse.Namespace, env: commands.Env) -> int:
    """Plan the build from one snapshot, show it, then (unless --dry-run) carry it out."""
    inv, hosts = commands.load_hosts(args, env)
    mine, found = await commands.read_templates(args, env)
    template = sources.resolve(args.template, mine, found.templates)
    commands.check_user_data(args, [template])
    cache_dir = cache.cache_dir(env.environ)
    local = cache.cached(template, cache_dir)
    template = with_cached_size(template, local)
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
    inputs = commands.build_inputs(args, env)
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
        commands.note_leftovers(snap, env, {h: d.leftovers for h, d in disks.ok.items()})
        snap.failed.update(disks.failed)  # a host whose image dir cannot be read can't build
        chosen = plan.plan_build(
            request,
            snap,
            disks.ok,
            template,
            now=mclu_build.now(),
            inventory_path=inv.path,
            local_cached=local is not None,
        )
        if args.dry_run:
            show_plan(chosen, args, env)
            return errors.EXIT_OK
        reporter = commands.progress_reporter(args, env)
        for line in plan_text(chosen).splitlines():
            reporter.step(None, None, line)
        started = time.monotonic()
        try:
            if chosen.hosts_needing_base:  # else no host needs it: nothing is downloaded
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
        env.printer.json_line(built_json(built, seconds))
    else:
        env.printer.text(built_text(built, seconds))
    return errors.EXIT_OK


def with_cached_size(
    template: model.ResolvedTemplate, local: cache.LocalBase | None
) -> model.ResolvedTemplate:
    """The template with its base's real data size when the controller has it cached."""
    if local is None:
        return template
    base = dataclasses.replace(template.base, data_bytes=local.data_bytes)
    return dataclasses.replace(template, base=base)


def show_plan(chosen: plan.BuildPlan, args: argparse.Namespace, env: commands.Env) -> None:
    if args.json:
        env.printer.json(plan_json(chosen))
    else:
        env.printer.text(plan_text(chosen))


# --- the plan (--dry-run, and before building) ---------------------------------------------


def plan_text(plan: BuildPlan) -> str:
    """One line per guest (host, why, what it gets), one per cloud-init seed, the download
    into the controller's cache (or why there is none), one line per base transfer, then a
    warning per host that did not answer (the names could not be checked there)."""
    label = base_label(plan.template)
    lines = [
        f"build {len(plan.guests)} {'guest' if len(plan.guests) == 1 else 'guests'} from {label}:"
    ]
    lines += [f"  {_guest_line(plan, g)}" for g in plan.guests]
    lines += [
        f"personalise {g.name} by cloud-init: a NoCloud seed {g.seed_path} (no appliance)"
        for g in plan.guests
        if g.seed_path
    ]
    if plan.download:
        lines.append(download_line(plan.template))
    elif plan.hosts_needing_base:
        lines.append(in_cache_line(plan.template))
    sends = [g for g in plan.guests if g.send_bytes]
    lines += [f"send {label} to {g.host}: {sizes.human(g.send_bytes)}" for g in sends]
    if len(sends) > 1:
        lines.append(f"send in all: {sizes.human(plan.send_bytes)} over {plan.transport}")
    elif not plan.hosts_needing_base:
        lines.append(f"nothing to download or send: {label} is cached on every host chosen")
    lines += [f"{output.PLAN_WARNING}{w}" for w in plan.warnings]
    return "\n".join(lines)


def _guest_line(plan: BuildPlan, guest: GuestPlan) -> str:
    label = base_label(plan.template)
    if guest.base_cached:
        base = f"{label} cached there"
    elif guest.send_bytes:
        base = f"{label} sent there"
    else:
        first = next(g for g in plan.guests if g.host == guest.host and g.send_bytes)
        base = f"{label} sent there with {first.name}"
    kind = "raw full copy" if guest.full_copy else "overlay"
    vcpus = f"{guest.spec.vcpus} vCPU{'' if guest.spec.vcpus == 1 else 's'}"
    return (
        f"{guest.name} → {guest.host} ({guest.reason}; {base}): {vcpus}, "
        f"{sizes.human(guest.spec.memory)} memory, {sizes.human(guest.disk_size)} {kind} "
        f"{guest.disk_path}"
    )


def base_label(template: model.ResolvedTemplate) -> str:
    """`tiny r3`: a template's base as the plans name it."""
    return f"{template.name} r{template.base.revision}"


# What a plan says of a base the controller's cache gets, build's and rebuild's alike.


def download_line(template: model.ResolvedTemplate) -> str:
    """`download tiny r3 into the controller's cache: 10.5 MiB`"""
    size = template.download_size
    return (
        f"download {base_label(template)} into the controller's cache: "
        f"{sizes.human(size) if size is not None else 'size not listed'}"
    )


def in_cache_line(template: model.ResolvedTemplate) -> str:
    """`nothing to download: tiny r3 is in the controller's cache` (a host lacks it)."""
    return f"nothing to download: {base_label(template)} is in the controller's cache"


def download_json(template: model.ResolvedTemplate) -> dict[str, Any]:
    """A base downloaded into the controller's cache, for programs: bytes (or null), URI."""
    return {"bytes": template.download_size, "from": template.source_uri}


def plan_json(plan: BuildPlan) -> dict[str, Any]:
    """The plan for programs: sizes in bytes, one entry per guest in the order named."""
    base = plan.template.base
    return {
        "template": plan.template.name,
        "revision": base.revision,
        "transport": plan.transport,
        "base": base.cache_name,
        "download": download_json(plan.template) if plan.download else None,
        "send_bytes": plan.send_bytes,
        "hosts_needing_base": list(plan.hosts_needing_base),
        "guests": [
            {
                "name": g.name,
                "host": g.host,
                "reason": g.reason,
                "domain_type": g.spec.domain_type,
                "memory": g.spec.memory,
                "vcpus": g.spec.vcpus,
                "network": g.spec.network,
                "disk_path": g.disk_path,
                "disk_format": g.spec.disk_format,
                "disk_size": g.disk_size,
                "full_copy": g.full_copy,
                "base_path": g.base_path,
                "base_cached": g.base_cached,
                "send_bytes": g.send_bytes,
                "personalise": g.personalise,
                "seed_path": g.seed_path,
            }
            for g in plan.guests
        ],
        "warnings": list(plan.warnings),
    }


# --- the result ----------------------------------------------------------------------------


def built_text(built: Sequence[Any], seconds: float) -> str:
    """`web1 runs on ham0 (ready in 21.3 s, by console:login:)`; the rule is said when the
    guests passed one, `started in` when they were not waited for."""
    names = ", ".join(f"{b.name} runs on {b.host}" for b in built)
    rules = sorted({b.ready for b in built})
    if rules == [""]:
        return f"{names} (started in {seconds:.1f} s, not waited for)"
    return f"{names} (ready in {seconds:.1f} s, by {', '.join(rules)})"


def built_json(built: Sequence[Any], seconds: float) -> dict[str, Any]:
    return {
        "event": "done",
        "built": [{"name": b.name, "host": b.host, "ready": b.ready or None} for b in built],
        "seconds": round(seconds, 3),
    }
