"""Rendering: snapshots, guests and templates as tables for people or JSON for programs.

Renderers take data and return text or JSON-ready dicts; `Printer` is the one place that
writes to the terminal. The JSON shapes are documented in docs/cli.md.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from tabulate import tabulate

from mclu import errors, model, sizes, sources
from mclu.snapshot import Found, Snapshot

JSON_VERSION = 1


@dataclass
class Printer:
    """Where output goes: results to `out`, notes and errors to `err`."""

    out: TextIO
    err: TextIO

    def text(self, text: str) -> None:
        print(text, file=self.out)

    def json(self, document: dict[str, Any]) -> None:
        print(json.dumps({"version": JSON_VERSION, **document}, indent=2), file=self.out)

    def note(self, text: str) -> None:
        print(f"mclu: {text}", file=self.err)

    def error(self, error: BaseException | str) -> None:
        print(f"mclu: error: {error}", file=self.err)


# --- status ------------------------------------------------------------------------------


def status_table(snapshot: Snapshot) -> str:
    rows = [_status_row(name, result) for name, result in snapshot.items()]
    headers = ["HOST", "STATE", "CPUS", "vCPUS", "MEMORY (guests / total)", "FREE", "GUESTS", ""]
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)


def _status_row(name: str, result: model.HostSnapshot | errors.HostError) -> list[str]:
    if isinstance(result, errors.HostError):
        return [name, result.state, "", "", "", "", "", _short(result)]
    memory = (f"{bar(result.memory_allocated, result.memory_total)} "
              f"{sizes.human(result.memory_allocated)} / {sizes.human(result.memory_total)}")
    guests = f"{len(result.active_guests)} running / {len(result.guests)}"
    return [name, "on", str(result.cpus), f"{result.vcpus_allocated} used",
            memory, sizes.human(result.memory_free), guests, ""]


def status_json(snapshot: Snapshot) -> dict[str, Any]:
    return {"hosts": [_host_json(name, result) for name, result in snapshot.items()]}


def _host_json(name: str, result: model.HostSnapshot | errors.HostError) -> dict[str, Any]:
    if isinstance(result, errors.HostError):
        return {"name": name, "state": result.state, "error": str(result)}
    return {
        "name": name,
        "state": "on",
        "error": None,
        "address": result.spec.address,
        "tags": list(result.spec.tags),
        "hostname": result.facts.hostname,
        "cpus": result.cpus,
        "vcpus_allocated": result.vcpus_allocated,
        "vcpus_free": result.vcpus_free,
        "memory_total": result.memory_total,
        "memory_allocated": result.memory_allocated,
        "memory_free": result.memory_free,
        "memory_reserved": result.spec.reserve_memory,
        "guests": len(result.guests),
        "guests_running": len(result.active_guests),
    }


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
    rows = [[g.name, host, g.state.value, str(g.vcpus), sizes.human(g.memory),
             _template(g), g.mclu.built if g.mclu else ""]
            for host, g in guest_rows(snapshot)]
    headers = ["NAME", "HOST", "STATE", "vCPUS", "MEMORY", "TEMPLATE", "BUILT"]
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)


def list_json(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "guests": [guest_json(host, g) for host, g in guest_rows(snapshot)],
        "failed_hosts": [_host_json(n, e) for n, e in snapshot.failed.items()],
    }


def guest_json(host: str, guest: model.Guest) -> dict[str, Any]:
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
        "mclu": None if meta is None else {
            "template": meta.template,
            "revision": meta.revision,
            "built": meta.built,
            "state": meta.state,
            "options": dict(meta.options),
        },
    }


def info_text(found: Found) -> str:
    g, host = found.guest, found.host.spec.name
    rows = [
        ("Name", g.name), ("Host", host), ("State", g.state.value), ("UUID", g.uuid),
        ("vCPUs", str(g.vcpus)), ("Memory", sizes.human(g.memory)),
        ("Max memory", sizes.human(g.max_memory)), ("Persistent", "yes" if g.persistent else "no"),
    ]
    rows += [("Disk", d) for d in g.disks]
    if g.mclu:
        rows += [("Template", _template(g)), ("Built", g.mclu.built), ("Build state", g.mclu.state)]
        rows += [(f"Option {k}", v) for k, v in g.mclu.options]
    else:
        rows.append(("Template", "(not built by mclu)"))
    return tabulate([(f"{k}:", v) for k, v in rows], tablefmt="plain", disable_numparse=True)


def _template(guest: model.Guest) -> str:
    if guest.mclu is None:
        return ""
    rev = f" r{guest.mclu.revision}" if guest.mclu.revision else ""
    return guest.mclu.template + rev


# --- templates -----------------------------------------------------------------------------


def templates_table(rows: Iterable[sources.Listed]) -> str:
    table = [[r.name, _from(r), "" if r.revision is None else str(r.revision),
              sizes.human(r.size) if r.size else "",
              sizes.human(r.download) if r.download else "", r.description] for r in rows]
    headers = ["NAME", "FROM", "REVISION", "SIZE", "DOWNLOAD", "DESCRIPTION"]
    return tabulate(table, headers=headers, tablefmt="plain", disable_numparse=True)


def _from(row: sources.Listed) -> str:
    if row.kind == "repository":
        return row.source if row.arch == "x86_64" else f"{row.source} ({row.arch})"
    missing = "" if row.revision is not None else " (base not found)"
    return f"mclu: {row.base}{missing}"


def templates_json(rows: Iterable[sources.Listed],
                   failed: Mapping[str, errors.MCLUError]) -> dict[str, Any]:
    return {
        "templates": [dataclasses.asdict(r) for r in rows],
        "failed_sources": [{"name": n, "error": str(e)} for n, e in failed.items()],
    }


def template_info_text(template: model.ResolvedTemplate, listed: sources.Listed) -> str:
    c = template.customization
    rows = [
        ("Name", template.name), ("From", _from(listed)), ("Description", listed.description),
        ("Base", f"{template.base.template} r{template.base.revision} ({template.base.arch})"),
        ("Image", template.source_uri),
        ("Disk size", sizes.human(template.disk_size or template.base.size)),
        ("Memory", sizes.human(template.memory)), ("vCPUs", str(template.vcpus)),
        ("Disk bus", template.disk_bus), ("Network", template.network or "(the host's)"),
        ("Disk", "full copy" if template.full_copy else "overlay on the cached base"),
    ]
    rows += [("Package", p) for p in c.packages] + [("File", f) for f, _ in c.files]
    rows += [("Run", r) for r in c.run] + [("First boot", r) for r in c.firstboot]
    return tabulate([(f"{k}:", v) for k, v in rows], tablefmt="plain", disable_numparse=True)


def template_info_json(template: model.ResolvedTemplate) -> dict[str, Any]:
    return {"template": dataclasses.asdict(template)}


def _short(error: errors.HostError) -> str:
    """The part of a host error that the HOST column does not already say."""
    text = str(error)
    prefix = f"{error.host}: "
    return text[len(prefix):] if text.startswith(prefix) else text
