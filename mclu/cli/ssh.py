"""`mclu ssh`, `mclu ssh-config`, `mclu list --ansible` and the hidden `mclu known-hosts`: the
user's own OpenSSH client, told how to reach each guest and which host keys it must present
(the ones mclu generated and recorded in its metadata; `mclu.decide.ssh`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from mclu import errors, model, runtmp
from mclu.cli import commands, completion, parsing, read_commands
from mclu.config import inventory
from mclu.decide import guests as guest_refs
from mclu.decide import ssh as reach
from mclu.read import addresses as guest_addresses
from mclu.read import snapshot

KNOWN_HOSTS_COMMAND = "known-hosts"


def register(sub: parsing.Subparsers, listing: argparse.ArgumentParser) -> None:
    """Add `ssh`, `ssh-config` and the hidden `known-hosts`; give `list` its --ansible."""
    ssh = parsing.add_command(sub, "ssh", ssh_guest, "log in to a guest with your own ssh")
    ssh.add_argument("name", metavar=completion.GUEST_METAVAR, help="the guest")
    ssh.add_argument(
        "-l",
        "--login",
        metavar="USER",
        default=reach.DEFAULT_USER,
        help="the guest's user (default: %(default)s)",
    )
    ssh.add_argument("remote", nargs="*", metavar="-- COMMAND", help="run this, not a shell")
    parsing.add_host_filters(ssh)
    config = parsing.add_command(
        sub, "ssh-config", ssh_config, "OpenSSH config blocks for guests (all without names)"
    )
    config.add_argument("names", nargs="*", metavar=completion.GUEST_METAVAR)
    config.add_argument(
        "-l",
        "--login",
        metavar="USER",
        default=reach.DEFAULT_USER,
        help="the guests' user (default: %(default)s)",
    )
    parsing.add_host_filters(config)
    # Run by ssh itself (KnownHostsCommand): not listed among the commands.
    known = sub.add_parser(KNOWN_HOSTS_COMMAND)
    parsing.global_options(known, default=argparse.SUPPRESS)
    known.add_argument("aliases", nargs="*", metavar="mclu-UUID")
    known.set_defaults(command=known_hosts, command_parser=known, json=False)
    listing.add_argument(
        "--ansible", action="store_true", help="Ansible's dynamic-inventory JSON instead"
    )
    listing.set_defaults(command=list_guests)


# --- the commands ----------------------------------------------------------------------------


async def ssh_guest(args: argparse.Namespace, env: commands.Env) -> int:
    """Run ssh with a config written for this run; its exit status is the remote command's."""
    ref = guest_refs.split_ref(args.name)
    inv, hosts = commands.load_hosts(args, env)
    if ref.host is not None:
        hosts = inventory.select(inv, names=[ref.host])
    snap = await _take(inv, hosts, env, names=frozenset([ref.name]))
    found = guest_refs.find_guest(snap, ref)
    target = _target(found.host, found.guest)
    if target.address is None:
        raise errors.NoGuestAddress(
            name=target.name, host=target.host.name, why=target.why_no_address
        )
    if not target.host_keys:
        raise errors.NoHostKeys(name=target.name, host=target.host.name)
    program = shutil.which("ssh", path=env.environ.get("PATH", os.defpath))
    if program is None:
        raise errors.NoSshClient(path=env.environ.get("PATH", os.defpath))
    with runtmp.tempdir("ssh-") as directory:
        known = Path(directory) / "known_hosts"
        known.write_text("".join(f"{line}\n" for line in reach.known_hosts_lines([target])))
        config = Path(directory) / "config"
        text = reach.render_config([target], reach.KnownHosts(file=str(known)), user=args.login)
        config.write_text(text + _user_config(env))
        argv = [program, "-F", str(config), target.name, *_remote(args.remote)]
        process = await asyncio.create_subprocess_exec(*argv, env=dict(env.environ))
        return await process.wait()


async def ssh_config(args: argparse.Namespace, env: commands.Env) -> int:
    inv, hosts = commands.load_hosts(args, env)
    refs = [guest_refs.split_ref(n) for n in args.names]
    snap = await _take(inv, hosts, env, names=frozenset(r.name for r in refs) or None)
    targets = _targets(snap, refs)
    known = reach.KnownHosts(command=_known_hosts_command(args, env))
    env.printer.text(reach.render_config(targets, known, user=args.login).rstrip("\n"))
    commands.note_failed_hosts(snap, env)
    return commands.exit_code(snap)


async def known_hosts(args: argparse.Namespace, env: commands.Env) -> int:
    """`mclu-UUID TYPE BASE64` lines of the guests the aliases name; nothing for the others
    (ssh then refuses them). Run by ssh for every connection to a guest of `ssh-config`."""
    uuids = {u for u in map(reach.uuid_of_alias, args.aliases) if u}
    inv = inventory.load(inventory.locate(args.config, env.environ))
    snap = await snapshot.take(inventory.select(inv), env.open_session, limit=inv.parallel)
    targets = [
        _target(host, g) for host in snap.ok.values() for g in host.guests if g.uuid in uuids
    ]
    for line in reach.known_hosts_lines(targets):
        env.printer.text(line)
    return errors.EXIT_OK


async def list_guests(args: argparse.Namespace, env: commands.Env) -> int:
    """`mclu list`, or with --ansible Ansible's dynamic inventory."""
    if not args.ansible:
        return await read_commands.list_guests(args, env)
    inv, hosts = commands.load_hosts(args, env)
    snap = await _take(inv, hosts, env, names=None)
    targets = _targets(snap, [])
    # Ansible reads every top-level key but _meta as a group: no "version" key here.
    inventory_json = reach.ansible_inventory(targets, _known_hosts_command(args, env))
    env.printer.text(json.dumps(inventory_json, indent=2))
    commands.note_failed_hosts(snap, env)
    return commands.exit_code(snap)


# --- from the snapshot to ssh's targets ------------------------------------------------------


async def _take(
    inv: model.Inventory,
    hosts: list[model.HostSpec],
    env: commands.Env,
    names: frozenset[str] | None,
) -> model.Snapshot:
    wanted = guest_addresses.Wanted(sources=guest_addresses.INFO_SOURCES, names=names)
    return await snapshot.take(hosts, env.open_session, limit=inv.parallel, addresses=wanted)


def _targets(snap: model.Snapshot, refs: Sequence[guest_refs.GuestRef]) -> list[reach.Target]:
    """The guests named (each must be found), else every guest, sorted by name then host."""
    if refs:
        found = [guest_refs.find_guest(snap, r) for r in refs]
        return [_target(f.host, f.guest) for f in found]
    return [_target(snap.ok[h], g) for h, g in read_commands.guest_rows(snap)]


def _target(host: model.HostSnapshot, guest: model.Guest) -> reach.Target:
    address, why = _address(host, guest)
    meta = guest.mclu
    return reach.Target(
        name=guest.name,
        host=host.spec,
        uuid=guest.uuid,
        networks=guest.networks,
        address=address,
        why_no_address=why,
        host_keys=meta.host_keys if meta else (),
        template=meta.template if meta else "",
        tags=host.spec.tags,
    )


def _address(host: model.HostSnapshot, guest: model.Guest) -> tuple[str | None, str]:
    """The guest's first address (IPv4 before IPv6, link-local last), or why none is known."""
    if not guest.state.active:
        return None, guest_addresses.NOT_RUNNING
    known = (host.addresses or {}).get(guest.name)
    if known is None:
        return None, "not asked"
    usable = [a for a in known.addresses if not a.ip.startswith("fe80:")]
    if usable:
        return usable[0].ip, ""
    if known.addresses:  # link-local only: not routable, and its interface is unknown here
        return None, "only IPv6 link-local addresses known (its DHCP may not be done yet)"
    return None, known.why_none


# --- ssh's command line and files ------------------------------------------------------------


def _known_hosts_command(args: argparse.Namespace, env: commands.Env) -> list[str]:
    """This mclu, with this inventory, as ssh's KnownHostsCommand (without the %H)."""
    path = inventory.locate(args.config, env.environ).resolve()
    return [sys.executable, "-m", "mclu", "-c", str(path), KNOWN_HOSTS_COMMAND]


def _user_config(env: commands.Env) -> str:
    """The user's own ~/.ssh/config, read after mclu's blocks (ssh takes the first value of
    each option): `-F` would otherwise leave it out."""
    home = env.environ.get("HOME")
    path = Path(home) / ".ssh" / "config" if home else None
    if path is None or not path.is_file():
        return ""
    return f'\nMatch all\n  Include "{path}"\n'


def _remote(command: Sequence[str]) -> list[str]:
    """The remote command after `--`, kept as one word list for ssh (ssh joins it with
    spaces; the remote shell splits it again, as with plain ssh)."""
    return ["--", *command] if command else []
