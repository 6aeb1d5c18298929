"""The read pass: ask every host for its facts and guests at once, and find guests in the answer.

`take` is the only function here that talks to hosts; `find_guest` and `split_ref` (pure)
are `mclu.decide.guests`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TypeVar, cast

from mclu import errors, model
from mclu.decide.guests import Found as Found
from mclu.decide.guests import GuestRef as GuestRef
from mclu.decide.guests import find_guest as find_guest
from mclu.decide.guests import split_ref as split_ref
from mclu.hosts import session
from mclu.model import Snapshot
from mclu.read import addresses as guest_addresses
from mclu.read import fanout, storage

Opener = Callable[[model.HostSpec], AbstractAsyncContextManager[session.Session]]
T = TypeVar("T")


async def take(
    hosts: Sequence[model.HostSpec],
    open_session: Opener,
    *,
    limit: int,
    addresses: guest_addresses.Wanted | None = None,
) -> Snapshot:
    """One parallel read of every host: facts and guests, or the error that stopped it; and,
    at the same time over the same connection, what interrupted runs left there (one command;
    `leftovers` is None where the host could not say). With `addresses`, also the wanted
    guests' addresses (`read.addresses.read_host`), after the guests."""

    async def read(spec: model.HostSpec) -> model.HostSnapshot:
        async with open_session(spec) as host:
            scan = asyncio.ensure_future(storage.scan_quietly(host, spec))
            try:
                found = await read_host(host, spec)
                if addresses is not None:
                    known = await guest_addresses.read_host(host, found.guests, addresses)
                    found = dataclasses.replace(found, addresses=known)
            except BaseException:
                scan.cancel()
                await asyncio.gather(scan, return_exceptions=True)
                raise
            return dataclasses.replace(found, leftovers=await scan)

    return one_per_machine(await fanout.gather(hosts, read, limit=limit))


def one_per_machine(snap: Snapshot) -> Snapshot:
    """The snapshot with each host that reports the libvirt host UUID of an earlier one (in
    inventory order) failed as errors.SameMachine: one machine under two inventory entries
    (two names or addresses for it) would be counted twice by placement. Pure."""
    first: dict[str, str] = {}  # host UUID -> the first entry that reached it
    result: Snapshot = model.HostResults(failed=dict(snap.failed), order=list(snap.order))
    for name in snap.order:
        if name not in snap.ok:
            continue
        uuid = snap.ok[name].facts.host_uuid
        earlier = first.setdefault(uuid, name) if uuid else name
        if earlier == name:
            result.ok[name] = snap.ok[name]
        else:
            result.failed[name] = errors.SameMachine(host=name, first=earlier, uuid=uuid)
    return result


async def read_host(host: session.Session, spec: model.HostSpec) -> model.HostSnapshot:
    facts = await host.facts()
    guests = await host.guests()
    return model.HostSnapshot(spec=spec, facts=facts, guests=tuple(guests))


@dataclass
class Connected:
    """Sessions to every host that could be reached, kept open for a whole command."""

    specs: dict[str, model.HostSpec]
    sessions: dict[str, session.Session]
    failed: dict[str, errors.HostError]
    limit: int

    async def gather(
        self, work: Callable[[session.Session, model.HostSpec], Awaitable[T]]
    ) -> model.HostResults[T]:
        """`work` on every connected host at once; the hosts that did not connect stay failed."""
        reachable = [spec for name, spec in self.specs.items() if name in self.sessions]
        results = await fanout.gather(
            reachable,
            lambda spec: work(self.sessions[spec.name], spec),
            limit=self.limit,
            what=getattr(work, "__name__", None),
        )
        results.failed.update(self.failed)
        results.order = list(self.specs)
        if work is read_host:  # a read pass: one machine is counted once (one_per_machine)
            return cast(model.HostResults[T], one_per_machine(cast(Snapshot, results)))
        return results


@contextlib.asynccontextmanager
async def connected(
    hosts: Sequence[model.HostSpec], open_session: Opener, *, limit: int
) -> AsyncIterator[Connected]:
    """Connect to every host at once and keep the sessions open until the block ends.

    A command that reads and then acts uses the same connection per host for both.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def connect(spec: model.HostSpec) -> session.Session:
            return await stack.enter_async_context(open_session(spec))

        opened = await fanout.gather(hosts, connect, limit=limit)
        yield Connected(
            specs={h.name: h for h in hosts}, sessions=opened.ok, failed=opened.failed, limit=limit
        )
