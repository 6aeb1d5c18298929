"""Carrying out a `templates prune` plan (mclu.decide.prune): its bases removed, one by one,
from a host's cache (`execute`) and from the controller's (`execute_local`)."""

from __future__ import annotations

from pathlib import Path

from mclu.decide import prune
from mclu.hosts import commands
from mclu.hosts.session import Session
from mclu.images import cache


async def execute(session: Session, plan: prune.PrunePlan) -> None:
    """Remove the plan's bases from the host's cache (raises HostCommandFailed, the first
    that could not be removed; those before it are gone)."""
    for path in plan.paths:
        await session.run(commands.remove(path))


def execute_local(plan: prune.LocalPrunePlan) -> dict[str, str]:
    """Remove the plan's bases from the controller's cache; returns those that could not be
    removed, each with why. Blocking: call from a thread."""
    if not plan.remove:
        return {}
    return cache.remove(Path(plan.cache_dir), plan.remove)
