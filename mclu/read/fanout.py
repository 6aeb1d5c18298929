"""Run one coroutine per host, all at once under a bound, and keep every host's result or error.

This is the only place that gathers with `return_exceptions`: an expected failure of one
host (an `errors.HostError`) becomes that host's result and never stalls or hides the
others; anything else is a bug and is raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from mclu import errors, model
from mclu.model import HostResults

T = TypeVar("T")
log = logging.getLogger(__name__)


async def gather(
    hosts: Sequence[model.HostSpec],
    work: Callable[[model.HostSpec], Awaitable[T]],
    *,
    limit: int,
    deadline: Callable[[model.HostSpec], float] | None = None,
    what: str | None = None,
) -> HostResults[T]:
    """`work(host)` for every host, at most `limit` at once.

    `deadline(host)` bounds each host's whole work in seconds (default: its connect plus
    command timeout), so a host that stops answering halfway is reported, not waited for.
    `what` names the work in the log (-v; default: the function's name).
    """
    semaphore = asyncio.Semaphore(limit)
    seconds = deadline or _default_deadline
    name = what or getattr(work, "__name__", "work")
    log.debug(
        "%s on %d %s (at most %d at once): %s",
        name,
        len(hosts),
        "host" if len(hosts) == 1 else "hosts",
        limit,
        ", ".join(h.name for h in hosts),
    )

    async def one(host: model.HostSpec) -> T:
        async with semaphore:
            started = time.monotonic()
            try:
                async with asyncio.timeout(seconds(host)):
                    value = await work(host)
            except TimeoutError:
                log.debug("%s: %s stopped after %.2f s", host.name, name, seconds(host))
                raise errors.HostTimeout(
                    host=host.name, what="mclu", seconds=seconds(host)
                ) from None
            except errors.HostError as e:
                log.debug(
                    "%s: %s failed after %.2f s: %s", host.name, name, time.monotonic() - started, e
                )
                raise
            log.debug("%s: %s done in %.2f s", host.name, name, time.monotonic() - started)
            return value

    outcomes = await asyncio.gather(*(one(h) for h in hosts), return_exceptions=True)
    results: HostResults[T] = HostResults(order=[h.name for h in hosts])
    for host, outcome in zip(hosts, outcomes, strict=True):
        if isinstance(outcome, errors.HostError):
            results.failed[host.name] = outcome
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            results.ok[host.name] = outcome
    return results


def _default_deadline(host: model.HostSpec) -> float:
    return host.connect_timeout + host.command_timeout
