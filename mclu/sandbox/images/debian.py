"""Debian tool output and apt sources, parsed: pure text in, data out (the machine is read in
`inputs`)."""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
SUITE = "bookworm"


def parse_dpkg_versions(text: str) -> dict[str, str]:
    """Parse `dpkg-query -W -f '${Package}\\t${Version}\\n'` (or any `name<TAB>version`)."""
    versions: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, version = line.partition("\t")
        if sep and version:
            versions[name] = version
    return versions


def parse_apt_show(text: str) -> dict[str, str]:
    """Parse `apt-cache show --no-all-versions` records into {package: version}."""
    versions: dict[str, str] = {}
    for record in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", record, re.MULTILINE))
        if "Package" in fields and "Version" in fields:
            versions.setdefault(fields["Package"], fields["Version"])
    return versions


def kernel_from_depends(depends: str) -> str | None:
    """The kernel release that a `linux-image-amd64` Depends line names, e.g. 6.1.0-56-amd64."""
    match = re.search(r"\blinux-image-(\d[^\s,(|]*)", depends)
    return match.group(1) if match else None


def mirrors_from_sources(texts: Iterable[str], suite: str = SUITE) -> tuple[str, str]:
    """Pick (mirror, security mirror) for `suite` from apt sources, one-line or deb822.

    Falls back to deb.debian.org for what the sources do not name.
    """
    mirror = security = ""
    for text in texts:
        for uri, suites in _source_entries(text):
            uri = uri.rstrip("/")
            if not uri.startswith(("http://", "https://")):
                continue
            if not security and f"{suite}-security" in suites:
                security = uri
            elif not mirror and suite in suites:
                mirror = uri
    return mirror or DEFAULT_MIRROR, security or DEFAULT_SECURITY_MIRROR


def _source_entries(text: str) -> list[tuple[str, list[str]]]:
    """(uri, suites) of each `deb` entry of a sources.list or a deb822 .sources file."""
    entries: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
    for stanza in re.split(r"\n\s*\n", text):
        fields = {k.lower(): v for k, v in re.findall(r"^([\w-]+):[ \t]*(.*)$", stanza, re.M)}
        if "deb" in fields.get("types", "").split() and "uris" in fields:
            suites = fields.get("suites", "").split()
            entries.extend((uri, suites) for uri in fields["uris"].split())
    return entries
