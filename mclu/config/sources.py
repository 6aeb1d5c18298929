"""Template sources: virt-builder repositories (repos.d files → indexes) and mclu's own templates.

Finding the .conf files and fetching an index are I/O; turning a name into a
`model.ResolvedTemplate` (`resolve`) is pure. An index is used only after its gpg signature
checked out, when its source names a `gpgkey` (as virt-builder does).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mclu import errors, model
from mclu.config import catalogue, repo_index

FETCH_TIMEOUT = 30.0


@dataclass(frozen=True)
class RepoTemplate:
    """A repository entry together with the source it came from."""

    source: repo_index.Source
    entry: repo_index.Entry


@dataclass
class Found:
    """Every repository template that could be read, and the sources that failed."""

    templates: list[RepoTemplate]
    failed: dict[str, errors.MCLUError]


def default_repo_dirs(environ: Mapping[str, str]) -> list[Path]:
    """Where virt-builder looks for repos.d, in its order: XDG config home, XDG dirs, /etc."""
    home = environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    dirs = [Path(home)]
    dirs += [Path(d) for d in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":") if d]
    return [d / "virt-builder" / "repos.d" for d in dirs] + [Path("/etc/virt-builder/repos.d")]


def read_sources(locations: Sequence[Path]) -> list[repo_index.Source]:
    """The sources of every .conf file in `locations` (directories or files), in order."""
    sources: list[repo_index.Source] = []
    for location in locations:
        files = sorted(location.glob("*.conf")) if location.is_dir() else [location]
        for path in files:
            if path.is_file():
                sources += repo_index.parse_sources(_read_text(path), str(path))
    return sources


def find_templates(sources: Sequence[repo_index.Source]) -> Found:
    """Fetch (and verify) every source's index; a source that fails is reported, not fatal."""
    found = Found(templates=[], failed={})
    for source in sources:
        try:
            entries = repo_index.parse_index(fetch_index(source), source.uri)
        except errors.MCLUError as e:
            found.failed[source.name] = e
            continue
        found.templates += [RepoTemplate(source, e) for e in entries]
    return found


def fetch_index(source: repo_index.Source) -> str:
    """The index text of a source, checked against its gpgkey when it has one."""
    data = fetch(source.uri)
    if source.gpgkey is None:
        return data.decode("utf-8", errors="replace")
    return verified_text(data, fetch(source.gpgkey), source)


def fetch(uri: str) -> bytes:
    """Bytes at a file://, http:// or https:// URI (or a plain path)."""
    try:
        if "://" not in uri:
            return Path(uri).read_bytes()
        with urllib.request.urlopen(uri, timeout=FETCH_TIMEOUT) as response:
            data: bytes = response.read()
            return data
    except (OSError, urllib.error.URLError, ValueError) as e:
        raise errors.SourceUnavailable(uri=uri, reason=str(getattr(e, "reason", e))) from None


def verified_text(signed: bytes, key: bytes, source: repo_index.Source) -> str:
    """The signed content of a clear-signed index, if and only if `key` made the signature.

    gpg runs with a throw-away keyring holding only that key; the text returned is what gpg
    says was signed (not our own unwrapping), so nothing outside the signature gets in.
    """
    with tempfile.TemporaryDirectory(prefix="mclu-gpg-") as home:
        env = {**os.environ, "GNUPGHOME": home}
        gpg = ["gpg", "--batch", "--quiet", "--no-tty", "--no-autostart"]
        imported = subprocess.run([*gpg, "--import"], input=key, env=env, capture_output=True)
        if imported.returncode != 0:
            raise errors.SignatureInvalid(
                source=source.name, uri=source.gpgkey or "", reason="cannot import key"
            )
        checked = subprocess.run(
            [*gpg, "--status-fd", "2", "--output", "-", "--decrypt"],
            input=signed,
            env=env,
            capture_output=True,
        )
    status = checked.stderr.decode(errors="replace")
    if checked.returncode != 0 or "[GNUPG:] GOODSIG" not in status:
        reason = "not signed" if b"BEGIN PGP SIGNED" not in signed else "bad signature"
        raise errors.SignatureInvalid(source=source.name, uri=source.uri, reason=reason)
    return checked.stdout.decode("utf-8", errors="replace")


def resolve(
    name: str,
    mine: Mapping[str, catalogue.Template],
    available: Sequence[RepoTemplate],
    arch: str = "x86_64",
    revision: int | None = None,
) -> model.ResolvedTemplate:
    """The template `name`: an mclu template (its base from a repository), else a repository's.

    The newest revision of the base wins, or the one asked for. Raises UnknownTemplate,
    UnknownRevision.
    """
    own = mine.get(name)
    base_name = own.base if own else name
    entries = [t.entry for t in available]
    entry = repo_index.newest(entries, base_name, arch)
    if entry is None:
        known = sorted({*mine, *(e.name for e in entries if not e.hidden)})
        raise errors.UnknownTemplate(name=base_name if own else name, known=known)
    if revision is not None:
        same = [e for e in entries if e.arch == arch and e.name == entry.name]
        entry = next((e for e in same if e.revision == revision), None)
        if entry is None:
            raise errors.UnknownRevision(
                name=base_name, revision=revision, listed=sorted({e.revision for e in same})
            )
    base = base_image(entry)
    if own is None:
        return model.ResolvedTemplate(
            name=name,
            base=base,
            source_uri=entry.file_uri,
            sha512=entry.sha512,
            download_size=entry.compressed_size,
        )
    return model.ResolvedTemplate(
        name=name,
        base=base,
        source_uri=entry.file_uri,
        sha512=entry.sha512,
        download_size=entry.compressed_size,
        memory=own.memory,
        vcpus=own.vcpus,
        disk_bus=own.disk_bus,
        network=None if own.network == "default" else own.network,
        full_copy=own.full_copy,
        customization=own.customization,
        disk_size=own.size,
        ready=own.ready,
        ready_timeout=own.ready_timeout,
        autostart=own.autostart,
        personalise=own.personalise,
    )


def base_image(entry: repo_index.Entry) -> model.BaseImage:
    """The base an index entry describes, known by its sha512 as well as its revision (its
    data size unknown until it is unpacked: the virtual size stands in)."""
    return model.BaseImage(
        template=entry.name,
        revision=entry.revision,
        arch=entry.arch,
        size=entry.size,
        data_bytes=entry.size,
        expand=entry.expand,
        digest=entry.sha512,
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise errors.ConfigError(path=str(path), key=None, problem=f"cannot read: {e}") from None


@dataclass(frozen=True)
class Listed:
    """One line of `mclu templates`: an mclu template or a repository template."""

    name: str
    kind: str  # "mclu" or "repository"
    source: str  # the template file, or the repository's name
    base: str
    revision: int | None  # None: the base is in no repository that answered
    size: int | None  # the disk a guest gets by default
    download: int | None  # compressed bytes to fetch
    description: str
    arch: str = "x86_64"


def listing(
    mine: Mapping[str, catalogue.Template], available: Sequence[RepoTemplate], arch: str = "x86_64"
) -> list[Listed]:
    """mclu's templates first, then every visible repository template at its newest revision."""
    entries = [t.entry for t in available]
    rows = []
    for own in mine.values():
        entry = repo_index.newest(entries, own.base, arch)
        rows.append(
            Listed(
                name=own.name,
                kind="mclu",
                source=own.path,
                base=own.base,
                revision=entry.revision if entry else None,
                size=own.size or (entry.size if entry else None),
                download=entry.compressed_size if entry else None,
                description=own.description,
            )
        )
    newest: dict[tuple[str, str], RepoTemplate] = {}
    for t in available:
        key = (t.entry.name, t.entry.arch)
        if not t.entry.hidden and (
            key not in newest or t.entry.revision > newest[key].entry.revision
        ):
            newest[key] = t
    rows += [
        Listed(
            name=t.entry.name,
            kind="repository",
            source=t.source.name,
            base=t.entry.name,
            revision=t.entry.revision,
            size=t.entry.size,
            download=t.entry.compressed_size,
            arch=t.entry.arch,
            description=t.entry.display_name,
        )
        for t in sorted(newest.values(), key=lambda t: (t.entry.name, t.entry.arch))
    ]
    return rows
