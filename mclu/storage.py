"""A host's image directory as a build sees it: free bytes and the template bases cached there.

`read` asks the host (two commands over its session); the parsers are pure.
"""

from __future__ import annotations

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
