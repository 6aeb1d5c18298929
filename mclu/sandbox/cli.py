"""mclu-sandbox: fake KVM hosts (network namespaces + sshd + libvirtd) on this one machine.

Argument parsing and printing only; the work is in the other modules of mclu.sandbox.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence

from mclu.sandbox import (
    anchors,
    cluster,
    commands,
    config,
    daemons,
    images,
    power,
    state,
    status,
)
from mclu.sandbox.errors import SandboxError
from mclu.sandbox.state import Paths


def _say(line: str) -> None:
    print(line, flush=True)


def _host(name: str) -> config.HostSpec:
    try:
        return config.parse_host_name(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value < config.MAX_HOSTS:
        raise argparse.ArgumentTypeError(f"host count must be 1..{config.MAX_HOSTS - 1}")
    return value


def cmd_up(paths: Paths, args: argparse.Namespace) -> int:
    started = time.monotonic()
    with state.locked(paths):
        changed = cluster.up(paths, args.count, _say)
    total = time.monotonic() - started
    if not changed:
        _say(
            f"sandbox already up with {args.count} hosts (+1 powered off), healthy ({total:.1f} s)"
        )
    else:
        _say(f"sandbox up: {args.count} hosts (+1 powered off) in {total:.1f} s")
    _say(f'inventory: {paths.inventory}   (eval "$(mclu-sandbox env)")')
    return 0


def cmd_down(paths: Paths, args: argparse.Namespace) -> int:
    started = time.monotonic()
    with state.locked(paths):
        cluster.down(paths, _say)
    if args.purge:
        cluster.purge(paths)
        _say(f"removed {paths.state}")
    left = status.leftovers()
    if left:
        raise SandboxError("left behind: " + ", ".join(left))
    _say(f"sandbox down in {time.monotonic() - started:.1f} s")
    return 0


def cmd_templates(paths: Paths, args: argparse.Namespace) -> int:
    repo = images.build_repository(paths.state, names=args.names or None, force=args.force)
    _say(f"template repository: {repo} (mclu templates lists it)")
    return 0


def cmd_env(paths: Paths, _args: argparse.Namespace) -> int:
    sys.stdout.write(config.render_env(paths.state))
    return 0


def cmd_status(paths: Paths, _args: argparse.Namespace) -> int:
    hosts, recorded = status.hosts_to_show(paths)
    if not hosts:
        _say("sandbox is down")
        return 1
    if not recorded:
        _say("sandbox is incomplete (no successful `up` recorded)")
    result = status.statuses(paths, hosts)
    for st in result:
        _say(f"{st.host.name:<6} {st.host.address:<12} {st.state}")
    return 0 if all(st.state in ("up", "off") for st in result) else 1


def cmd_start(paths: Paths, args: argparse.Namespace) -> int:
    with state.locked(paths):
        elapsed = power.start_host(paths, args.host)
    _say(f"{args.host.name} up ({elapsed:.1f} s)")
    return 0


def cmd_stop(paths: Paths, args: argparse.Namespace) -> int:
    with state.locked(paths):
        was_on = power.stop_host(paths, args.host)
    _say(f"{args.host.name} {'powered off' if was_on else 'was already off'}")
    return 0


def cmd_daemon(paths: Paths, args: argparse.Namespace) -> int:
    host = args.host
    if args.action == "stop":
        sig = signal.SIGKILL if args.kill else signal.SIGTERM
        done = daemons.stop(paths, host, args.daemon, sig)
        _say(f"{host.name}: {args.daemon} {'stopped' if done else 'was not running'}")
    else:
        done = daemons.start(paths, host, args.daemon)
        _say(f"{host.name}: {args.daemon} {'started' if done else 'was already running'}")
    return 0


def cmd_exec(paths: Paths, args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise SandboxError("exec needs a command: mclu-sandbox exec HOST -- ARGV...")
    pid = anchors.require_anchor(paths, args.host)
    sys.stdout.flush()
    # Replace this process: the command's exit status, signals and terminal are its own.
    os.execvpe("nsenter", commands.nsenter_argv(pid, argv), {**os.environ, **commands.clean_env()})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mclu-sandbox",
        description="Fake KVM hosts (network namespaces with their own sshd and libvirtd) "
        f"on this machine. State: ${config.STATE_DIR_ENV} (default {config.DEFAULT_STATE_DIR}).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="start N hosts (ham0..) plus one powered-off host")
    p.add_argument("count", nargs="?", type=_count, default=3, metavar="N")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="remove every process, namespace, veth and the bridge")
    p.add_argument("--purge", action="store_true", help="also delete the state directory")
    p.set_defaults(func=cmd_down)

    sub.add_parser("env", help="print shell exports (MCLU_CONFIG, ...)").set_defaults(func=cmd_env)
    p = sub.add_parser(
        "templates",
        help="build (or find cached) the sandbox's template repository: tiny and debian-12 "
        "(also as debian-12-cloud), and debian-13 (also as debian-13-cloud) when named",
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="only these (default: tiny and debian-12)"
    )
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(func=cmd_templates)
    sub.add_parser("status", help="which hosts are up").set_defaults(func=cmd_status)

    for name, func, text in (
        ("start", cmd_start, "power a host on and wait for sshd and libvirtd"),
        ("stop", cmd_stop, "power a host off (kill everything in its namespace)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("host", type=_host)
        p.set_defaults(func=func)

    p = sub.add_parser("daemon", help="stop or start one daemon of a host (fault injection)")
    p.add_argument("host", type=_host)
    p.add_argument("daemon", choices=daemons.DAEMONS)
    p.add_argument("action", choices=("stop", "start"))
    p.add_argument("--kill", action="store_true", help="stop with SIGKILL instead of SIGTERM")
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser("exec", help="run a command inside a host: exec HOST -- ARGV...")
    p.add_argument("host", type=_host)
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("mclu-sandbox: must run as root (namespaces, bridge, mounts)", file=sys.stderr)
        return 2
    paths = Paths(state.state_dir_from_env())
    try:
        result: int = args.func(paths, args)
    except SandboxError as exc:
        print(f"mclu-sandbox {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mclu-sandbox {args.command}: interrupted", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
