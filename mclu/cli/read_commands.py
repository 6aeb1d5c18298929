"""`mclu status`, `list` and `info`: one snapshot of every host, rendered as a table for
people or JSON for programs (the JSON shapes are documented in docs/cli.md)."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from mclu import errors, model, sizes
from mclu.cli import commands, output
from mclu.config import inventory
from mclu.model import Snapshot
from mclu.read import addresses, snapshot
from mclu.read.snapshot import Found


async def status(args: argparse.Namespace, env: commands.Env) -> int:
    inv, hosts = commands.load_hosts(args, env)
    snap = await snapshot.take(hosts, env.open_session, limit=inv.parallel)
    if args.json:
        env.printer.json(status_json(snap))
    else:
        env.printer.text(status_table(snap))
    commands.note_leftovers(snap, env)
    return commands.exit_code(snap)


async def list_guests(args: argparse.Namespace, env: commands.Env) -> int:
    inv, hosts = commands.load_hosts(args, env)
    wanted = addresses.Wanted(addresses.LIST_SOURCES)
    snap = await snapshot.take(hosts, env.open_session, limit=inv.parallel, addresses=wanted)
    if args.json:
        env.printer.json(list_json(snap))
    else:
        env.printer.text(list_table(snap))
        commands.note_failed_hosts(snap, env)
        for line in duplicates_notes(snap):
            env.printer.note(line)
    commands.note_leftovers(snap, env)
    return commands.exit_code(snap)


async def info(args: argparse.Namespace, env: commands.Env) -> int:
    ref = snapshot.split_ref(args.name)
    inv, hosts = commands.load_hosts(args, env)
    if ref.host is not None:
        hosts = inventory.select(inv, names=[ref.host])
    wanted = addresses.Wanted(addresses.INFO_SOURCES, names=frozenset([ref.name]))
    snap = await snapshot.take(hosts, env.open_session, limit=inv.parallel, addresses=wanted)
    found = snapshot.find_guest(snap, ref)
    if args.json:
        known = _addresses_of(found.host, found.guest)
        env.printer.json({"guest": guest_json(found.host.spec.name, found.guest, known)})
    else:
        env.printer.text(info_text(found))
    if snap.failed:
        # The name may also exist on a host that did not answer: say so, but the answer stands.
        env.printer.note(
            f"did not answer (a guest of that name may be there too): {', '.join(snap.failed)}"
        )
    commands.note_leftovers(snap, env)
    return errors.EXIT_OK


# --- status ------------------------------------------------------------------------------


def status_table(snapshot: Snapshot) -> str:
    rows = [_status_row(name, result) for name, result in snapshot.items()]
    headers = [
        "HOST",
        "STATE",
        "CPUS",
        "vCPUS",
        "MEMORY (guests / total)",
        "FREE",
        "GUESTS",
        "NETWORKS",
        "",
    ]
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)


def _status_row(name: str, result: model.HostSnapshot | errors.HostError) -> list[str]:
    if isinstance(result, errors.HostError):
        return [name, result.state, "", "", "", "", "", "", _short(result)]
    memory = (
        f"{bar(result.memory_allocated, result.memory_total)} "
        f"{sizes.human(result.memory_allocated)} / {sizes.human(result.memory_total)}"
    )
    guests = f"{len(result.active_guests)} running / {len(result.guests)}"
    unfinished = Counter(_build_state(result, g) for g in result.guests)  # in guests' order
    notes = [f"{count} {word}" for word, count in unfinished.items() if word is not None]
    if notes:
        guests += f" ({', '.join(notes)})"
    return [
        name,
        "on",
        str(result.cpus),
        f"{result.vcpus_allocated} used",
        memory,
        sizes.human(result.memory_free),
        guests,
        networks_cell(result.facts),
        "",
    ]


def networks_cell(facts: model.HostFacts) -> str:
    """What guests' NICs can name on the host, as `network` says it (`network:default,
    bridge:br0`); `none`, or what the host could not say (`bridges unknown`)."""
    words = [f"network:{n}" for n in facts.networks or ()]
    words += [f"bridge:{b}" for b in facts.bridges or ()]
    unknown = [
        kind
        for kind, have in (("networks", facts.networks), ("bridges", facts.bridges))
        if have is None
    ]
    if unknown:
        words.append(f"{' and '.join(unknown)} unknown")
    return ", ".join(words) or "none"


def _short(error: errors.HostError) -> str:
    """The part of a host error that the HOST column does not already say."""
    text = str(error)
    prefix = f"{error.host}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def status_json(snapshot: Snapshot) -> dict[str, Any]:
    return {"hosts": [output.host_json(name, result) for name, result in snapshot.items()]}


INTERRUPTED = "interrupted build"


def _build_state(host: model.HostSnapshot, guest: model.Guest) -> str | None:
    """For a guest whose build has not finished, the word `list` and `status` both show: its
    metadata state while a run holds its lock, else "interrupted build" (a leftover that
    `mclu cleanup` removes); None for any other guest."""
    if guest.mclu is None or guest.mclu.state not in model.UNFINISHED:
        return None
    interrupted = host.leftovers is not None and guest.name not in host.leftovers.locked
    return INTERRUPTED if interrupted else str(guest.mclu.state)


def bar(used: int, total: int, width: int = 10) -> str:
    """A capacity bar like `[###.......]`; full when over capacity."""
    filled = width if total <= 0 else min(width, round(width * used / total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


# --- list and info -----------------------------------------------------------------------


def guest_rows(snapshot: Snapshot) -> list[tuple[str, model.Guest]]:
    """Every guest of every host that answered, sorted by name then host."""
    pairs = [(host, g) for host, snap in snapshot.ok.items() for g in snap.guests]
    return sorted(pairs, key=lambda p: (p[1].name, p[0]))


def list_table(snapshot: Snapshot) -> str:
    """The guests, one a row; an ADDRESSES column only when some guest has a known address,
    so that a cluster whose guests have none lists exactly as before addresses were read."""
    rows = [
        [
            g.name,
            host,
            _guest_state(snapshot.ok[host], g),
            str(g.vcpus),
            sizes.human(g.memory),
            _template(g),
            g.mclu.built if g.mclu else "",
        ]
        for host, g in guest_rows(snapshot)
    ]
    headers = ["NAME", "HOST", "STATE", "vCPUS", "MEMORY", "TEMPLATE", "BUILT"]
    shown = [address_cell(_addresses_of(snapshot.ok[host], g)) for host, g in guest_rows(snapshot)]
    if any(shown):
        headers.append("ADDRESSES")
        rows = [[*row, cell] for row, cell in zip(rows, shown, strict=True)]
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)


def _addresses_of(host: model.HostSnapshot, guest: model.Guest) -> model.GuestAddresses | None:
    return None if host.addresses is None else host.addresses.get(guest.name)


def address_cell(known: model.GuestAddresses | None) -> str:
    """`list`'s ADDRESSES cell: each address but IPv6 link-local ones, with its source
    (`192.168.122.7 (lease), 2001:db8::7 (arp)`); "" when none is known."""
    if known is None:
        return ""
    return ", ".join(
        f"{a.ip} ({a.source})" for a in known.addresses if not a.ip.lower().startswith("fe80:")
    )


def _guest_state(host: model.HostSnapshot, guest: model.Guest) -> str:
    """The run state, and for a guest whose build has not finished, the build's (_build_state)."""
    build = _build_state(host, guest)
    return guest.state.value if build is None else f"{guest.state.value}, {build}"


def list_json(snapshot: Snapshot) -> dict[str, Any]:
    twice = duplicate_names(snapshot)
    return {
        "guests": [
            {
                **guest_json(host, g, _addresses_of(snapshot.ok[host], g)),
                "duplicate": g.name in twice,
            }
            for host, g in guest_rows(snapshot)
        ],
        "failed_hosts": [output.host_json(n, e) for n, e in snapshot.failed.items()],
    }


def duplicate_names(snapshot: Snapshot) -> dict[str, list[str]]:
    """Names that more than one host has a guest of, each with those hosts (sorted).

    Names are meant to be unique in the cluster, and a build checks that, but only on the
    hosts that answer: a host that was off may come back with a guest of a name since taken.
    """
    hosts: dict[str, list[str]] = {}
    for host, g in guest_rows(snapshot):
        hosts.setdefault(g.name, []).append(host)
    return {name: on for name, on in hosts.items() if len(on) > 1}


def duplicates_notes(snapshot: Snapshot) -> list[str]:
    """One line per name two hosts have: commands need HOST:NAME for those guests."""
    return [
        f"{_count(len(on))} guests named {name}, on {_and(on)}: name them as HOST:{name}"
        for name, on in duplicate_names(snapshot).items()
    ]


def _count(n: int) -> str:
    return {2: "two", 3: "three"}.get(n, str(n))


def _and(words: Sequence[str]) -> str:
    return " and ".join(words) if len(words) < 3 else f"{', '.join(words[:-1])} and {words[-1]}"


def guest_json(
    host: str, guest: model.Guest, known: model.GuestAddresses | None = None
) -> dict[str, Any]:
    """GUEST of docs/cli.md; `addresses` [] and `addresses_unknown` null when not asked."""
    meta = guest.mclu
    return {
        "name": guest.name,
        "host": host,
        "uuid": guest.uuid,
        "state": guest.state.value,
        "vcpus": guest.vcpus,
        "memory": guest.memory,
        "max_memory": guest.max_memory,
        "disks": list(guest.disks),
        "persistent": guest.persistent,
        "autostart": guest.autostart,
        "mclu": None
        if meta is None
        else {
            "template": meta.template,
            "revision": meta.revision,
            "built": meta.built,
            "state": meta.state,
            "ready": meta.ready or None,
            "options": dict(meta.options),
        },
        "addresses": [] if known is None else [address_json(a) for a in known.addresses],
        "addresses_unknown": (known.why_none or None) if known is not None else None,
    }


def address_json(address: model.Address) -> dict[str, Any]:
    return {
        "ip": address.ip,
        "family": address.family,
        "prefix": address.prefix,
        "mac": address.mac or None,
        "source": str(address.source),
    }


def info_text(found: Found) -> str:
    g, host = found.guest, found.host.spec.name
    rows = [
        ("Name", g.name),
        ("Host", host),
        ("State", g.state.value),
        ("UUID", g.uuid),
        ("vCPUs", str(g.vcpus)),
        ("Memory", sizes.human(g.memory)),
        ("Max memory", sizes.human(g.max_memory)),
        ("Persistent", "yes" if g.persistent else "no"),
        ("Autostart", "yes" if g.autostart else "no"),
    ]
    rows += [("Disk", d) for d in g.disks]
    rows += _address_rows(_addresses_of(found.host, g))
    if g.mclu:
        rows += [("Template", _template(g)), ("Built", g.mclu.built), ("Build state", g.mclu.state)]
        if g.mclu.ready:
            rows.append(("Ready by", g.mclu.ready))
        rows += [(f"Option {k}", v) for k, v in g.mclu.options]
    else:
        rows.append(("Template", "(not built by mclu)"))
    return tabulate([(f"{k}:", v) for k, v in rows], tablefmt="plain", disable_numparse=True)


def _address_rows(known: model.GuestAddresses | None) -> list[tuple[str, str]]:
    """`IPv4: 192.168.122.7/24 (lease, 52:54:00:12:34:56)` per address, or why none is known."""
    if known is None:
        return []
    if not known.addresses:
        return [("Addresses", f"none known ({known.why_none})")]
    rows = []
    for a in known.addresses:
        prefix = f"/{a.prefix}" if a.prefix is not None else ""
        via = f"{a.source}, {a.mac}" if a.mac else str(a.source)
        rows.append((f"IPv{a.family}", f"{a.ip}{prefix} ({via})"))
    return rows


def _template(guest: model.Guest) -> str:
    if guest.mclu is None:
        return ""
    rev = f" r{guest.mclu.revision}" if guest.mclu.revision else ""
    return guest.mclu.template + rev
