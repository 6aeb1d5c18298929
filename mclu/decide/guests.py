"""Guests as the user names them, found in a snapshot (pure: every command that takes a guest's
name uses these, the planners of `mclu.decide` among them)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from mclu import errors, model
from mclu.model import Snapshot


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
        raise errors.GuestNotFound(name=ref.name, host=ref.host, unreachable=unasked)
    if len(matches) > 1:
        raise errors.GuestAmbiguous(name=ref.name, hosts=[m.host.spec.name for m in matches])
    return matches[0]


def guest_named(guests: Iterable[model.Guest], name: str) -> model.Guest | None:
    """The guest called `name` among one host's `guests`, or None."""
    return next((g for g in guests if g.name == name), None)


def is_file_path(source: str) -> bool:
    """Whether a disk source is a file mclu may replace or remove: an absolute path outside
    /dev. Block devices, storage pool volumes ("pool/volume") and network disks never are."""
    return posixpath.isabs(source) and not posixpath.normpath(source).startswith("/dev/")
