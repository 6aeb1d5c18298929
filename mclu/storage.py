"""A host's image directory as a build sees it: free bytes and the template bases cached there.

`read` asks the host (two commands over its session); the parsers are pure.
"""

from __future__ import annotations

import json
import posixpath

from mclu import errors, model
from mclu.hosts.session import Session

CACHE_SUBDIR = "mclu-templates"


def cache_dir(image_dir: str) -> str:
    """Where a host keeps template bases: a directory of mclu's own inside the image dir."""
    return posixpath.join(image_dir, CACHE_SUBDIR)


async def read(session: Session, spec: model.HostSpec) -> model.StorageFacts:
    """Free space of the host's image directory and the bases in its cache."""
    df = await session.run(["df", "--output=avail", "-B1", spec.image_dir], check=False)
    if df.exit_status != 0:
        raise errors.HostCommandFailed(spec.name, df.command, df.exit_status,
                                       df.stderr.decode(errors="replace"))
    listing = await session.run(
        ["find", cache_dir(spec.image_dir), "-maxdepth", "1", "-type", "f", "-name", "*.raw",
         "-printf", "%f\\n"], check=False)  # a missing cache dir is an empty cache
    return model.StorageFacts(image_dir=spec.image_dir, free=parse_df_avail(df.stdout.decode()),
                              cached_bases=parse_names(listing.stdout.decode()))


def parse_df_avail(text: str) -> int:
    """Bytes available from `df --output=avail -B1 DIR` (a header line, then the number)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) != 2 or not lines[1].isdigit():
        raise ValueError(f"unexpected df output: {text!r}")
    return int(lines[1])


def parse_names(text: str) -> tuple[str, ...]:
    """Sorted file names, one per line; blank lines ignored."""
    return tuple(sorted(line for line in text.splitlines() if line.strip()))


# --- pruning the host's template cache ---------------------------------------------------------

# A base younger than this may have just arrived for a build still making its guests' disks.
PRUNE_MIN_AGE = 600.0


async def cached_bases_with_age(session: Session, spec: model.HostSpec) -> dict[str, float]:
    """Cached base file name → seconds since it was last modified, by the host's clock."""
    done = await session.run(
        ["sh", "-c", 'date +%s; find "$1" -maxdepth 1 -type f -name "*.raw" -printf "%f %T@\\n"',
         "sh", cache_dir(spec.image_dir)], check=False)
    return parse_ages(done.stdout.decode())


async def backing_files(session: Session, disks: list[str]) -> set[str]:
    """Every backing file (absolute) that any of `disks` is a qcow2 overlay on."""
    if not disks:
        return set()
    done = await session.run(
        ["sh", "-c", 'for f; do qemu-img info -U --output=json -- "$f" || true; done', "sh",
         *disks], check=False)
    return parse_backing(done.stdout.decode())


async def overlay_candidates(session: Session, spec: model.HostSpec) -> list[str]:
    """qcow2 files in the image directory: overlays a cached base may be under."""
    done = await session.run(["find", spec.image_dir, "-maxdepth", "1", "-type", "f",
                              "-name", "*.qcow2"], check=False)
    return list(parse_names(done.stdout.decode()))


def parse_ages(text: str) -> dict[str, float]:
    """`date +%s` then `NAME MTIME` lines → name → age in seconds."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip().isdigit():
        return {}
    now = float(lines[0])
    ages = {}
    for line in lines[1:]:
        name, _, mtime = line.rpartition(" ")
        if name:
            ages[name] = now - float(mtime)
    return ages


def parse_backing(text: str) -> set[str]:
    """Backing files named by concatenated `qemu-img info --output=json` documents."""
    decoder = json.JSONDecoder()
    found, pos = set(), 0
    text = text.strip()
    while pos < len(text):
        doc, end = decoder.raw_decode(text, pos)
        backing = doc.get("full-backing-filename") or doc.get("backing-filename")
        if backing:
            found.add(str(backing))
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return found


def unused_bases(ages: dict[str, float], used: set[str], cache: str,
                 min_age: float = PRUNE_MIN_AGE) -> tuple[list[str], list[str]]:
    """(removable, kept because too new): cached bases no overlay uses."""
    unused = sorted(n for n in ages if posixpath.join(cache, n) not in used)
    return ([n for n in unused if ages[n] >= min_age],
            [n for n in unused if ages[n] < min_age])
