"""Planning `mclu templates prune`: which template bases cached on a host no guest disk uses,
and which bases in the controller's cache no repository lists any more.

Pure: the request and what the host's cache and disks showed (`mclu.read.storage.cache_use`)
in; a PrunePlan out, which `mclu.act.prune` carries out without asking the host anything more.
A host's base is known as in use by the backing files of its disks, whatever its name (an
overlay made before bases were named by their digest names the old name). The controller's
cache backs no disk: its bases are kept while a repository lists them (`plan_local`).
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


@dataclass(frozen=True)
class LocalPrunePlan:
    """Which bases go from the controller's cache, and which stay and why (file names,
    sorted)."""

    cache_dir: str
    remove: tuple[str, ...]  # no repository lists it (by name, revision and digest)
    listed: tuple[str, ...]  # a repository lists it: a build may want it
    too_new: tuple[str, ...]  # unlisted, but it may have just arrived for a build under way
    unsure: tuple[str, ...]  # unlisted, but a repository did not answer: it may list it


def plan_local(
    request: PruneRequest,
    cache_dir: str,
    ages: Mapping[str, float],
    listed: Collection[str],
    *,
    sources_failed: bool = False,
) -> LocalPrunePlan:
    """The controller's bases (`ages`: file name → seconds since modified) go unless a
    repository lists them (`listed`: the cache names of every template the repositories
    list, `model.BaseImage.cache_name`), unless younger than min_age, or unless a repository
    did not answer (`sources_failed`: what it lists is unknown, so nothing unlisted goes). A
    base cached under its name and revision only (no digest) is never listed: what it holds
    is unknown."""
    unlisted = sorted(n for n in ages if n not in listed)
    old = [n for n in unlisted if ages[n] >= request.min_age]
    return LocalPrunePlan(
        cache_dir=cache_dir,
        remove=() if sources_failed else tuple(old),
        listed=tuple(sorted(n for n in ages if n in listed)),
        too_new=tuple(n for n in unlisted if ages[n] < request.min_age),
        unsure=tuple(old) if sources_failed else (),
    )
