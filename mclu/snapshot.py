"""The read pass: ask every host for its facts and guests at once, and find guests in the answer.

`take` is the only function here that talks to hosts; `find_guest` and `split_ref` are pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from mclu import errors, fanout, model
from mclu.hosts import session

Opener = Callable[[model.HostSpec], AbstractAsyncContextManager[session.Session]]
Snapshot = fanout.HostResults[model.HostSnapshot]


async def take(hosts: Sequence[model.HostSpec], open_session: Opener, *, limit: int) -> Snapshot:
    """One parallel read of every host: facts and guests, or the error that stopped it."""

    async def read(spec: model.HostSpec) -> model.HostSnapshot:
        async with open_session(spec) as host:
            facts = await host.facts()
            guests = await host.guests()
        return model.HostSnapshot(spec=spec, facts=facts, guests=tuple(guests))

    return await fanout.gather(hosts, read, limit=limit)


@dataclass(frozen=True)
class GuestRef:
    """A guest as the user named it: NAME, or HOST:NAME."""

    name: str
    host: str | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.name}" if self.host else self.name


def split_ref(text: str) -> GuestRef:
    """`HOST:NAME` or `NAME` → GuestRef; raises UsageError on an empty part."""
    host, sep, name = text.rpartition(":")
    if (sep and not host) or not name:
        raise errors.UsageError(f"bad guest name {text!r}: use NAME or HOST:NAME")
    return GuestRef(name=name, host=host or None)


@dataclass(frozen=True)
class Found:
    host: model.HostSnapshot
    guest: model.Guest


def find_guest(snapshot: Snapshot, ref: GuestRef) -> Found:
    """The one guest `ref` names among the hosts that answered.

    Raises GuestNotFound (saying which hosts did not answer, since the guest may be there)
    or GuestAmbiguous when several hosts have a guest of that name.
    """
    if ref.host is not None and ref.host in snapshot.failed:
        raise snapshot.failed[ref.host]
    matches = [
        Found(host=snap, guest=guest)
        for name, snap in snapshot.ok.items()
        if ref.host in (None, name)
        for guest in snap.guests
        if guest.name == ref.name
    ]
    if not matches:
        unasked = [] if ref.host else list(snapshot.failed)
        raise errors.GuestNotFound(ref.name, host=ref.host, unreachable=unasked)
    if len(matches) > 1:
        raise errors.GuestAmbiguous(ref.name, [m.host.spec.name for m in matches])
    return matches[0]
