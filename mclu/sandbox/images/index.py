"""virt-builder's repository files: the index, its parser, and the repos.d .conf.

Pure text in, text out. The format is virt-builder(1) "Creating and signing the index file":
INI-like sections, one per template, `key=value` lines, a value continued on following lines
that start with a space.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class IndexEntry:
    """One template of the index. Sizes are in bytes; `checksum` is the xz file's SHA-512."""

    name: str
    title: str
    osinfo: str
    file: str
    revision: int
    checksum: str
    size: int
    compressed_size: int
    notes: str = ""
    arch: str = "x86_64"
    format: str = "raw"
    expand: str = "/dev/sda1"


def render_entry(entry: IndexEntry) -> str:
    """The index section of one template, ending with a blank line."""
    fields = [
        ("name", entry.title),
        ("osinfo", entry.osinfo),
        ("arch", entry.arch),
        ("file", entry.file),
        ("revision", str(entry.revision)),
        ("checksum[sha512]", entry.checksum),
        ("format", entry.format),
        ("size", str(entry.size)),
        ("compressed_size", str(entry.compressed_size)),
        ("expand", entry.expand),
    ]
    if entry.notes:
        fields.append(("notes", entry.notes))
    lines = [f"[{entry.name}]"]
    for key, value in fields:
        if not value.strip():
            raise ValueError(f"{entry.name}: empty index field {key!r}")
        first, *rest = value.split("\n")
        lines.append(f"{key}={first}")
        # Continuation lines start with a space; an empty one is a lone space.
        lines.extend(" " + line for line in rest)
    return "\n".join(lines) + "\n\n"


def render_index(entries: Iterable[IndexEntry]) -> str:
    """The whole index, templates sorted by name so the same set renders the same text."""
    return "".join(render_entry(e) for e in sorted(entries, key=lambda e: e.name))


def parse_index(text: str) -> dict[str, dict[str, str]]:
    """Parse an index (not its clearsigned wrapper) into {template: {key: value}}.

    Raises ValueError on a line that is neither a section, a field nor a continuation.
    """
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    key = ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(" ") and current is not None and key:
            current[key] += "\n" + line[1:]
        elif line.startswith("#") or not line.strip():
            continue
        elif line.startswith("[") and line.rstrip().endswith("]"):
            current = sections.setdefault(line.strip()[1:-1], {})
            key = ""
        elif "=" in line and current is not None:
            key, value = line.split("=", 1)
            current[key] = value
        else:
            raise ValueError(f"index line {number}: cannot parse {line!r}")
    return sections


def entry_from_fields(name: str, fields: dict[str, str]) -> IndexEntry:
    """Turn one parsed section back into an IndexEntry (KeyError/ValueError if incomplete)."""
    return IndexEntry(
        name=name,
        title=fields["name"],
        osinfo=fields["osinfo"],
        file=fields["file"],
        revision=int(fields.get("revision", "1")),
        checksum=fields["checksum[sha512]"],
        size=int(fields["size"]),
        compressed_size=int(fields["compressed_size"]),
        notes=fields.get("notes", ""),
        arch=fields["arch"],
        format=fields.get("format", "raw"),
        expand=fields.get("expand", "/dev/sda1"),
    )


def render_repo_conf(repo_id: str, index_uri: str, gpgkey_uri: str) -> str:
    """A virt-builder repos.d .conf naming the signed index and the key that signed it."""
    return f"[{repo_id}]\nuri={index_uri}\ngpgkey={gpgkey_uri}\n"
