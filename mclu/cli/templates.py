"""`mclu templates` and `mclu templates info NAME`: mclu's templates and the repositories',
as a table for people or JSON for programs (`templates prune` is in cli/prune.py)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from tabulate import tabulate

from mclu import errors, model, sizes
from mclu.cli import commands
from mclu.config import sources


async def show(args: argparse.Namespace, env: commands.Env) -> int:
    """Every template, or with a NAME that one in full."""
    mine, found = await commands.read_templates(args, env)
    if getattr(args, "name", None):
        template = sources.resolve(args.name, mine, found.templates)
        listed = next(
            r
            for r in sources.listing(mine, found.templates)
            if r.name == args.name or r.base == template.base.template
        )
        if args.json:
            env.printer.json(template_info_json(template))
        else:
            env.printer.text(template_info_text(template, listed))
        return errors.EXIT_OK
    rows = sources.listing(mine, found.templates)
    if args.json:
        env.printer.json(templates_json(rows, found.failed))
    else:
        env.printer.text(templates_table(rows))
        for error in found.failed.values():
            env.printer.note(str(error))
    return errors.EXIT_FAILED if found.failed else errors.EXIT_OK


def templates_table(rows: Iterable[sources.Listed]) -> str:
    table = [
        [
            r.name,
            _from(r),
            "" if r.revision is None else str(r.revision),
            sizes.human(r.size) if r.size else "",
            sizes.human(r.download) if r.download else "",
            r.description,
        ]
        for r in rows
    ]
    headers = ["NAME", "FROM", "REVISION", "SIZE", "DOWNLOAD", "DESCRIPTION"]
    return tabulate(table, headers=headers, tablefmt="plain", disable_numparse=True)


def _from(row: sources.Listed) -> str:
    if row.kind == "repository":
        return row.source if row.arch == "x86_64" else f"{row.source} ({row.arch})"
    missing = "" if row.revision is not None else " (base not found)"
    return f"mclu: {row.base}{missing}"


def templates_json(
    rows: Iterable[sources.Listed], failed: Mapping[str, errors.MCLUError]
) -> dict[str, Any]:
    return {
        "templates": [dataclasses.asdict(r) for r in rows],
        "failed_sources": [{"name": n, "error": str(e)} for n, e in failed.items()],
    }


def template_info_text(template: model.ResolvedTemplate, listed: sources.Listed) -> str:
    c = template.customization
    rows = [
        ("Name", template.name),
        ("From", _from(listed)),
        ("Description", listed.description),
        ("Base", f"{template.base.template} r{template.base.revision} ({template.base.arch})"),
        ("Image", template.source_uri),
        ("Disk size", sizes.human(template.disk_size or template.base.size)),
        ("Memory", sizes.human(template.memory)),
        ("vCPUs", str(template.vcpus)),
        ("Disk bus", template.disk_bus),
        ("Network", template.network or "(the host's)"),
        ("Disk", "full copy" if template.full_copy else "overlay on the cached base"),
    ]
    rows += [("Package", p) for p in c.packages] + [("File", f) for f, _ in c.files]
    rows += [("Run", r) for r in c.run] + [("First boot", r) for r in c.firstboot]
    return tabulate([(f"{k}:", v) for k, v in rows], tablefmt="plain", disable_numparse=True)


def template_info_json(template: model.ResolvedTemplate) -> dict[str, Any]:
    return {"template": dataclasses.asdict(template)}
