"""Planning `mclu templates prune`: which template bases cached on a host no guest disk uses.

Pure: the request and what the host's cache and disks showed (`mclu.read.storage.cache_use`)
in; a PrunePlan out, which `mclu.act.prune` carries out without asking the host anything more.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Mapping
from dataclasses import dataclass

# A base younger than this may have just arrived for a build still making its guests' disks.
MIN_AGE = 600.0


@dataclass(frozen=True)
class PruneRequest:
    """`mclu templates prune` as the user asked it."""

    min_age: float = MIN_AGE  # seconds: younger bases are kept


@dataclass(frozen=True)
class CacheUse:
    """A host's template cache and what uses it, as one read found them."""

    cache_dir: str
    ages: Mapping[str, float]  # cached base file name → seconds since it was last modified
    used: Collection[str]  # backing files (absolute paths) of the host's disks


@dataclass(frozen=True)
class PrunePlan:
    """Which cached bases go on one host, and which stay and why (file names, sorted)."""

    host: str
    cache_dir: str
    remove: tuple[str, ...]
    in_use: tuple[str, ...]  # a disk is an overlay on it
    too_new: tuple[str, ...]  # unused, but it may have just arrived for a build under way

    @property
    def paths(self) -> tuple[str, ...]:
        """The files to remove, on the host."""
        return tuple(posixpath.join(self.cache_dir, name) for name in self.remove)


def plan(request: PruneRequest, host: str, use: CacheUse) -> PrunePlan:
    """The bases no disk of the host is an overlay on go, unless younger than min_age."""
    used = set(use.used)
    unused = sorted(n for n in use.ages if posixpath.join(use.cache_dir, n) not in used)
    remove = tuple(n for n in unused if use.ages[n] >= request.min_age)
    too_new = tuple(n for n in unused if use.ages[n] < request.min_age)
    return PrunePlan(
        host=host,
        cache_dir=use.cache_dir,
        remove=remove,
        in_use=tuple(sorted(set(use.ages) - set(unused))),
        too_new=too_new,
    )
