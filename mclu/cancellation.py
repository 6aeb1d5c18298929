"""Work that must run to its end even when the task awaiting it is cancelled (Ctrl-C, SIGTERM)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def uninterrupted(work: Awaitable[T]) -> T:
    """Await `work` to its end even when cancelled meanwhile, then re-raise the cancellation.

    For bounded work whose effect must be known: cleanup that must finish, or a short step
    (a domain defined, a disk linked) that would otherwise exist with no undo registered.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
