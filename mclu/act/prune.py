"""Carrying out a `templates prune` plan (mclu.decide.prune): its bases removed, one by one."""

from __future__ import annotations

from mclu.decide import prune
from mclu.hosts import commands
from mclu.hosts.session import Session


async def execute(session: Session, plan: prune.PrunePlan) -> None:
    """Remove the plan's bases from the host's cache (raises HostCommandFailed, the first
    that could not be removed; those before it are gone)."""
    for path in plan.paths:
        await session.run(commands.remove(path))
