"""`mclu rebuild`: guests made again in place from the newest revision of their template.

Gather (the hosts, the templates) → plan (pure, `mclu.decide.rebuild.plan_rebuild`) → read
the caches of the hosts the plan needs (and look in the controller's), and plan again with
them → show (`--dry-run` stops here, knowing which bases are downloaded) → execute
(`mclu.act.rebuild`: one guest at a time, each under its lock) → report: a line per guest on
stdout (none with `--quiet`), one line per failure on stderr, and an exit code a cron job can
act on.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Sequence
from typing import Any

from mclu import errors, images, model
from mclu.act import lifecycle
from mclu.act import rebuild as mclu_rebuild
from mclu.act.rebuild import Failed, Rebuilt
from mclu.cli import build as build_cli
from mclu.cli import commands, output, parsing
from mclu.config import sources
from mclu.decide import rebuild as plan
from mclu.decide.rebuild import RebuildPlan, Refused, Skipped
from mclu.images import cache
from mclu.read import rebuild as read_rebuild
from mclu.read import snapshot as mclu_snapshot


def register(sub: parsing.Subparsers) -> None:
    """Add `mclu rebuild` to the `mclu` parser."""
    parser = parsing.add_command(
        sub,
        "rebuild",
        rebuild,
        "make guests again, in place, from the newest revision of their template",
    )
    parser.add_argument("names", metavar="[HOST:]NAME", nargs="*", help="the guests")
    parser.add_argument(
        "--all",
        action="store_true",
        help="every guest mclu built on the hosts asked (guests mclu did not build are skipped)",
    )
    parsing.add_host_filters(parser)
    parser.add_argument(
        "--if-older-than",
        type=_age,
        metavar="AGE",
        dest="older_than",
        help="only guests built longer ago than AGE, e.g. 7d, 12h, 30m",
    )
    parser.add_argument(
        "--if-newer",
        action="store_true",
        help="only guests whose template has a newer revision than theirs",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="NAME",
        help="leave this guest out (repeat for more)",
    )
    parser.add_argument(
        "--revision",
        type=_revision,
        metavar="R",
        help="rebuild from this revision of the template instead of the newest "
        "(pin one, or go back to the last good one)",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not boot a shut-off guest to check its new disk (it is not "
        "checked, and the old disk is gone)",
    )
    parsing.add_ready_timeout(parser)
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="nothing on stdout; one line per failure on stderr (for cron)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be rebuilt and skipped, change nothing",
    )
    parser.add_argument(
        "--stop-timeout",
        type=parsing.seconds,
        default=lifecycle.STOP_TIMEOUT,
        metavar="SECONDS",
        help="how long the old guest gets to power off "
        "(ACPI) before it is powered off (default: "
        "%(default)g)",
    )
    parsing.add_disk_inputs(parser)


def _revision(text: str) -> int:
    if not text.removeprefix("r").isdigit():
        raise argparse.ArgumentTypeError(f"not a revision number: {text!r}")
    return int(text.removeprefix("r"))


def _age(text: str) -> float:
    try:
        return plan.parse_age(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


async def rebuild(args: argparse.Namespace, env: commands.Env) -> int:
    """Plan from one snapshot, show it, then (unless --dry-run) rebuild guest after guest."""
    if args.quiet and args.json:
        raise errors.UsageError("--quiet and --json do not go together")
    request = plan.RebuildRequest(
        names=tuple(args.names),
        all=args.all,
        older_than=args.older_than,
        if_newer=args.if_newer,
        exclude=tuple(args.exclude),
        verify=args.verify,
    )
    if request.all == bool(request.names):
        raise errors.UsageError("name the guests to rebuild, or give --all (not both)")
    inv, hosts = commands.load_hosts(args, env)
    mine, found = await commands.read_templates(args, env)
    if not args.quiet and not args.json:
        for error in found.failed.values():
            env.printer.note(str(error))
    inputs = commands.build_inputs(args, env)

    def resolve(name: str) -> model.ResolvedTemplate | errors.MCLUError:
        try:
            return sources.resolve(name, mine, found.templates, revision=args.revision)
        except errors.MCLUError as e:
            return e

    cache_dir = cache.cache_dir(env.environ)
    started = time.monotonic()
    async with mclu_snapshot.connected(hosts, env.open_session, limit=inv.parallel) as now:
        snap = await now.gather(mclu_snapshot.read_host)
        templates = {name: resolve(name) for name in plan.template_names(snap)}
        when = datetime.datetime.now(datetime.UTC)
        chosen = plan.plan_rebuild(request, snap, templates, now=when)
        commands.check_user_data(args, [r.template for r in chosen.rebuild])
        # A base is downloaded only when a host with a guest to rebuild lacks it and the
        # controller's cache does too: a dry run reads the caches as well, to say so.
        caches = await read_rebuild.read_caches(now, chosen)
        local = [
            r.template.base.cache_name
            for r in chosen.rebuild
            if cache.cached(r.template, cache_dir) is not None
        ]
        chosen = plan.plan_rebuild(
            request, snap, templates, now=when, storage=caches, local_cached=local
        )
        if args.dry_run:
            _show_plan(chosen, args, env)
            return exit_code([r.error for r in chosen.refused])
        reporter = _reporter(args, env)
        run = mclu_rebuild.Context(
            sessions=now.sessions,
            specs=now.specs,
            inputs=inputs,
            cache_dir=cache_dir,
            reporter=reporter,
            transport=args.transport or images.DEFAULT,
            stop_timeout=args.stop_timeout,
            ready_timeout=args.ready_timeout,
            personalise=env.personalise,
        )
        try:
            results = await mclu_rebuild.execute(chosen, run)
        finally:
            reporter.close()
    return _report(chosen, results, time.monotonic() - started, args, env)


def exit_code(failures: Sequence[errors.MCLUError]) -> int:
    """0: everything rebuilt or skipped as asked; 75: only locked guests (another run has
    them; try later); 1: anything else failed."""
    if not failures:
        return errors.EXIT_OK
    if all(isinstance(e, errors.GuestLocked) for e in failures):
        return errors.EXIT_LOCKED
    return errors.EXIT_FAILED


def _reporter(
    args: argparse.Namespace, env: commands.Env
) -> output.LineReporter | output.JsonReporter:
    if args.quiet:
        return output.LineReporter(env.printer.err, bars=False)  # says nothing
    return commands.progress_reporter(args, env)


# --- showing the plan --------------------------------------------------------------------------


def _show_plan(chosen: RebuildPlan, args: argparse.Namespace, env: commands.Env) -> None:
    for refused in chosen.refused:
        env.printer.error(refused.error)
    if args.json:
        env.printer.json(plan_json(chosen))
    elif not args.quiet:
        text = plan_text(chosen)
        if text:
            env.printer.text(text)


def plan_text(chosen: RebuildPlan) -> str:
    """A line per guest to rebuild, one per base a host lacks (downloaded into the controller's
    cache, or there already: as `mclu build` says it), one per guest skipped."""
    lines = [
        f"{r.name} on {r.host}: would rebuild from {r.template.name} r{r.revision} "
        f"(built from r{r.meta.revision or '?'} at {r.meta.built or 'an unknown time'})"
        for r in chosen.rebuild
    ]
    downloads = {t.base.cache_name for t in chosen.downloads}
    lines += [
        build_cli.download_line(t) if t.base.cache_name in downloads else build_cli.in_cache_line(t)
        for t in chosen.bases_needed
    ]
    lines += [_skipped_line(s) for s in chosen.skipped]
    return "\n".join(lines)


def plan_json(chosen: RebuildPlan) -> dict[str, Any]:
    return {
        "rebuild": [
            {
                "name": r.name,
                "host": r.host,
                "template": r.template.name,
                "revision": r.revision,
                "from_revision": r.meta.revision,
                "built": r.meta.built,
                "state": r.guest.state.value,
            }
            for r in chosen.rebuild
        ],
        # As build's "download", one per base: [] when every host with a guest to rebuild
        # holds its base or the controller's cache does.
        "download": [
            {
                "template": t.name,
                "revision": str(t.base.revision),
                "base": t.base.cache_name,
                **build_cli.download_json(t),
            }
            for t in chosen.downloads
        ],
        "skipped": [_skipped_json(s) for s in chosen.skipped],
        "failed": [_failed_json(r) for r in chosen.refused],
    }


def _skipped_line(skipped: Skipped) -> str:
    where = (
        f"{skipped.name} on {skipped.host}" if skipped.name else f"{skipped.host} (all its guests)"
    )
    return f"{where}: skipped: {skipped.reason}"


def _skipped_json(skipped: Skipped) -> dict[str, Any]:
    return {"name": skipped.name, "host": skipped.host, "reason": skipped.reason}


def _failed_json(failed: Refused | Failed) -> dict[str, Any]:
    return {
        "name": failed.name,
        "host": failed.host,
        "error": str(failed.error),
        "locked": isinstance(failed.error, errors.GuestLocked),
    }


# --- the report ----------------------------------------------------------------------------


def _report(
    chosen: RebuildPlan,
    results: Sequence[Rebuilt | Failed],
    seconds: float,
    args: argparse.Namespace,
    env: commands.Env,
) -> int:
    failed: list[Refused | Failed] = [
        *chosen.refused,
        *(r for r in results if isinstance(r, Failed)),
    ]
    rebuilt = [r for r in results if isinstance(r, Rebuilt)]
    for failure in failed:
        env.printer.error(failure.error)
    if args.json:
        env.printer.json_line(
            {
                "event": "done",
                "seconds": round(seconds, 3),
                "rebuilt": [
                    {
                        "name": r.name,
                        "host": r.host,
                        "template": r.template,
                        "revision": r.revision,
                        "from_revision": r.previous,
                        "running": r.running,
                        "seconds": round(r.seconds, 3),
                        "ready": r.ready or None,
                    }
                    for r in rebuilt
                ],
                "skipped": [_skipped_json(s) for s in chosen.skipped],
                "failed": [_failed_json(f) for f in failed],
            }
        )
    elif not args.quiet:
        lines = [rebuilt_line(r) for r in rebuilt] + [_skipped_line(s) for s in chosen.skipped]
        if lines:
            env.printer.text("\n".join(lines))
    return exit_code([f.error for f in failed])


def rebuilt_line(r: Rebuilt) -> str:
    """`web1 on ham0: rebuilt from tiny r3 (was r2), ready in 19.3 s by console:login:`"""
    text = (
        f"{r.name} on {r.host}: rebuilt from {r.template} r{r.revision} (was r{r.previous or '?'})"
    )
    if r.running:
        return f"{text}, ready in {r.seconds:.1f} s by {r.ready}"
    if r.ready:
        return f"{text} in {r.seconds:.1f} s; booted once, ready by {r.ready}, shut off again"
    return f"{text} in {r.seconds:.1f} s; shut off, as it was, not checked (--no-verify)"
