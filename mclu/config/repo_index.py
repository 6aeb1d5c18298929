"""virt-builder repositories: `repos.d/*.conf` sources and their index files, parsed purely.

The index format is virt-builder's (see virt-builder(1), "CREATING YOUR OWN TEMPLATES"):
`[name]` sections of `key=value` fields, `key[subkey]=value` for checksums and translated
notes, continuation lines starting with a space, `#` comments, and optionally the whole file
clear-signed with gpg (index.asc). Signatures are checked elsewhere (gpg); this module only
strips the armour.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urljoin

from mclu import errors

_SECTION = re.compile(r"^\[([^\]]+)\]\s*$")
_FIELD = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[([A-Za-z0-9_.,-]+)\])?=(.*)$")
_SHA512 = re.compile(r"^[0-9a-f]{128}$")
_NUMBER = re.compile(r"^[0-9]{1,20}$")
# A template's name and arch become a file name on the controller and on every host
# (`<name>.<arch>.r<revision>.raw`): no "/", no leading "." or "-", nothing a shell splits.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$")
_FORMATS = ("raw", "qcow2")
_ARMOUR_START = "-----BEGIN PGP SIGNED MESSAGE-----"
_SIGNATURE_START = "-----BEGIN PGP SIGNATURE-----"


@dataclass(frozen=True)
class Source:
    """One repository as a repos.d .conf file declares it."""

    name: str
    uri: str  # the index (or index.asc) URI
    gpgkey: str | None = None  # None: the index is not signature-checked
    proxy: str | None = None
    format: str = "native"


@dataclass(frozen=True)
class Entry:
    """One template of an index."""

    name: str
    arch: str
    file_uri: str  # absolute: the index's own URI joined with `file=`
    revision: int
    sha512: str
    size: int  # virtual size of the disk, bytes
    format: str = "raw"
    compressed_size: int | None = None
    display_name: str = ""
    osinfo: str = ""
    expand: str | None = None
    notes: str = ""
    hidden: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def compressed(self) -> bool:
        return self.file_uri.endswith((".xz", ".gz", ".zst"))


Sections = list[tuple[str, int, dict[str, str]]]  # name, line number, fields


def parse_sources(text: str, path: str) -> list[Source]:
    """The repositories of one repos.d .conf file; raises ConfigError naming the line."""
    sources = []
    for name, line, fields in _sections(text, path):
        if not fields.get("uri", "").strip():
            raise errors.ConfigError(
                path=path, key=f"[{name}] (line {line})", problem="missing uri="
            )
        fmt = fields.get("format", "native")
        if fmt != "native":
            raise errors.ConfigError(
                path=path,
                key=f"[{name}].format",
                problem=f"only the native index format is supported, got {fmt!r}",
            )
        sources.append(
            Source(
                name=name,
                uri=fields["uri"],
                gpgkey=fields.get("gpgkey"),
                proxy=fields.get("proxy"),
                format=fmt,
            )
        )
    return sources


def parse_index(text: str, index_uri: str) -> list[Entry]:
    """The templates of an index (signed or not); `index_uri` resolves relative `file=`."""
    return [
        _entry(name, line, fields, index_uri)
        for name, line, fields in _sections(strip_signature(text, index_uri), index_uri)
    ]


def strip_signature(text: str, path: str = "index") -> str:
    """The signed text of a gpg clear-signed message (RFC 4880 7.1), or `text` unchanged."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != _ARMOUR_START:
        return text
    try:
        body_start = lines.index("", 1) + 1  # after the Hash: armour headers
        body_end = lines.index(_SIGNATURE_START, body_start)
    except ValueError:
        raise errors.ConfigError(
            path=path, key=None, problem="truncated gpg clear-signed message"
        ) from None
    # Clear-signing escapes lines starting with "-" as "- -".
    body = [line[2:] if line.startswith("- ") else line for line in lines[body_start:body_end]]
    return "\n".join(body) + "\n"


def newest(entries: Iterable[Entry], name: str, arch: str = "x86_64") -> Entry | None:
    """The highest revision of `name` (or an alias of it) for `arch`."""
    matches = [e for e in entries if e.arch == arch and (e.name == name or name in e.aliases)]
    return max(matches, key=lambda e: e.revision, default=None)


# --- the section format -------------------------------------------------------------------


def _sections(text: str, path: str) -> Sections:
    sections: Sections = []
    current: dict[str, str] | None = None
    last_key: str | None = None
    for number, line in _lines(text):
        if line.startswith(" ") and current is not None and last_key is not None:
            current[last_key] += "\n" + line[1:]
        elif m := _SECTION.match(line):
            current, last_key = {}, None
            sections.append((m[1], number, current))
        elif m := _FIELD.match(line):
            if current is None:
                raise errors.ConfigError(
                    path=path, key=f"line {number}", problem="a field before any [section]"
                )
            last_key = f"{m[1]}[{m[2]}]" if m[2] else m[1]
            current[last_key] = m[3]
        else:
            raise errors.ConfigError(
                path=path, key=f"line {number}", problem=f"cannot parse {line[:60]!r}"
            )
    return sections


def _cut(text: str, width: int = 40) -> str:
    """Text from a file for a message: at most `width` characters."""
    return text if len(text) <= width else text[: width - 3] + "..."


def _lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        # A line of one space is a continuation holding an empty line: keep it.
        if line.startswith(" ") or (line.strip() and not line.startswith("#")):
            yield number, line.rstrip("\r")


def _entry(name: str, line: int, fields: dict[str, str], index_uri: str) -> Entry:
    where = f"[{name}] (line {line})"

    def need(key: str) -> str:
        if key not in fields:
            raise errors.ConfigError(path=index_uri, key=where, problem=f"missing {key}=")
        return fields[key]

    def number(key: str) -> int:
        text = need(key).strip()
        if not _NUMBER.fullmatch(text):
            raise errors.ConfigError(
                path=index_uri,
                key=f"[{name}].{key}",
                problem=f"not a number: {_cut(fields[key])!r}",
            )
        return int(text)

    if not NAME.fullmatch(name):
        raise errors.ConfigError(
            path=index_uri,
            key=f"[{_cut(name)}] (line {line})",
            problem="a template's name is letters, digits, '.', '_', '+', '-'",
        )
    arch = fields.get("arch", "x86_64")
    if not NAME.fullmatch(arch):
        raise errors.ConfigError(
            path=index_uri, key=f"[{name}].arch", problem=f"not an architecture: {_cut(arch)!r}"
        )
    if not need("file").strip():
        raise errors.ConfigError(path=index_uri, key=f"[{name}].file", problem="empty")
    try:
        file_uri = urljoin(index_uri, fields["file"].strip())
    except ValueError as e:  # urllib refuses, e.g. "http://[::1"
        raise errors.ConfigError(
            path=index_uri, key=f"[{name}].file", problem=f"not a URI: {e}"
        ) from None
    sha512 = need("checksum[sha512]").strip().lower()
    if not _SHA512.fullmatch(sha512):
        raise errors.ConfigError(
            path=index_uri, key=f"[{name}].checksum[sha512]", problem="not a sha512 hex digest"
        )
    fmt = fields.get("format", "raw")
    if fmt not in _FORMATS:
        raise errors.ConfigError(
            path=index_uri, key=f"[{name}].format", problem=f"unknown disk format {fmt!r}"
        )
    return Entry(
        name=name,
        arch=arch,
        file_uri=file_uri,
        revision=number("revision") if "revision" in fields else 1,
        sha512=sha512,
        size=number("size"),
        format=fmt,
        compressed_size=number("compressed_size") if "compressed_size" in fields else None,
        display_name=fields.get("name", name),
        osinfo=fields.get("osinfo", ""),
        expand=fields.get("expand"),
        notes=fields.get("notes", ""),
        hidden=fields.get("hidden", "false") == "true",
        aliases=tuple(fields.get("aliases", "").split()),
    )
