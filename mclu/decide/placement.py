"""Choosing a host for a new guest: fit first, then spread by free memory.

Pure: snapshots in, a host name out. Memory and disk are never overcommitted:
- memory: a host's `HostSnapshot.memory_free` (capacity less its reserve and its running
  guests) less what this plan already put there;
- vCPUs: `cpu_ratio` vCPUs per physical CPU (default 4, as Ganeti's vcpu-ratio), less
  `reserve_cpus`, less the vCPUs of running guests (`HostSnapshot.vcpus_free`) and of this
  plan's earlier guests. Shut-off guests hold nothing, as libvirt sees it;
- disk: the image directory's free bytes less this plan's earlier guests' disks there.
A host that lacks the guest's network, or has a file of its new disk's name, is never chosen
(`network_missing`, `disk_name_taken`): pinned to it, the refusal is the error; else it is
skipped and the plan says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mclu import errors, sizes
from mclu.decide import readiness
from mclu.model import HostSnapshot, StorageFacts

# Why a host may not take a guest whatever its room.
Refusal = errors.NetworkMissing | errors.DiskNameTaken | errors.NoAddressForSsh


@dataclass(frozen=True)
class Need:
    """What one guest takes from a host: memory and disk in bytes, vCPUs in whole CPUs.

    Needs add up; `guests` counts the guests a sum stands for, so that ties between hosts
    go to the one with fewer guests, counting those this plan has already put there.
    """

    memory: int
    vcpus: int
    disk: int
    guests: int = 1

    def __add__(self, other: Need) -> Need:
        return Need(
            self.memory + other.memory,
            self.vcpus + other.vcpus,
            self.disk + other.disk,
            self.guests + other.guests,
        )

    def __str__(self) -> str:
        return (
            f"{sizes.human(self.memory)} memory, {_vcpus(self.vcpus)}, "
            f"{sizes.human(self.disk)} disk"
        )


NOTHING = Need(memory=0, vcpus=0, disk=0, guests=0)


@dataclass(frozen=True)
class Candidate:
    """A host that answered, with its image directory's storage facts."""

    snapshot: HostSnapshot
    storage: StorageFacts

    @property
    def name(self) -> str:
        return self.snapshot.spec.name


@dataclass(frozen=True)
class Placement:
    """The chosen host, and why, in words for the plan shown to the user."""

    host: str
    reason: str
    skipped: tuple[tuple[str, str], ...] = ()  # (host, why) of those refused the guest


def network_missing(network: str, host: HostSnapshot) -> errors.NetworkMissing | None:
    """The refusal when the host lacks `network` ("network:NAME": an active libvirt network,
    "bridge:NAME": a bridge); None when it has it, when the guest needs none ("user",
    "none"), and when the host could not say (libvirt will, at start)."""
    kind, _, name = network.partition(":")
    have = {"network": host.facts.networks, "bridge": host.facts.bridges}.get(kind)
    if have is None or name in have:
        return None
    return errors.NetworkMissing(
        host=host.spec.name,
        network=network,
        networks=host.facts.networks,
        bridges=host.facts.bridges,
    )


def networks_missing(networks: Sequence[str], host: HostSnapshot) -> errors.NetworkMissing | None:
    """The refusal for the first of a guest's NICs' networks the host lacks, or None."""
    return next((r for n in networks if (r := network_missing(n, host)) is not None), None)


def no_address_for_ssh(
    declared: str | None, network: str, host: str
) -> errors.NoAddressForSsh | None:
    """The refusal when the template declares ready = "ssh" and the guest's network on this
    host ("user", "none") hides its address from mclu; None otherwise."""
    if declared is None or readiness.parse(declared).kind is not readiness.Kind.SSH:
        return None
    if readiness.addressable((network,)):
        return None
    return errors.NoAddressForSsh(host=host, network=network)


def disk_name_taken(path: str, candidate: Candidate) -> errors.DiskNameTaken | None:
    """The refusal when a file in the image directory already has the new disk's name (None
    when the scan did not list the directory's files, or the disk is not in it)."""
    files = candidate.storage.files
    directory, _, name = path.rpartition("/")
    if files is None or directory != candidate.storage.image_dir.rstrip("/") or name not in files:
        return None
    return errors.DiskNameTaken(host=candidate.name, path=path)


def room(candidate: Candidate, already: Need = NOTHING) -> Need:
    """What the host can still give after `already`; negative when already overcommitted."""
    return Need(
        memory=candidate.snapshot.memory_free - already.memory,
        vcpus=candidate.snapshot.vcpus_free - already.vcpus,
        disk=candidate.storage.free - already.disk,
    )


def shortfalls(need: Need, candidate: Candidate, already: Need = NOTHING) -> list[str]:
    """What the host lacks for `need`, one phrase per resource ("2 GiB memory, 1.5 GiB free")."""
    free = room(candidate, already)
    short = []
    if need.memory > free.memory:
        short.append(
            f"{sizes.human(need.memory)} memory, {_human(free.memory)} free"
            + _planned(sizes.human(already.memory), already.memory)
        )
    if need.vcpus > free.vcpus:
        short.append(
            f"{_vcpus(need.vcpus)}, {max(free.vcpus, 0)} free"
            + _planned(_vcpus(already.vcpus), already.vcpus)
        )
    if need.disk > free.disk:
        short.append(
            f"{sizes.human(need.disk)} disk in {candidate.storage.image_dir}, "
            f"{_human(free.disk)} free" + _planned(sizes.human(already.disk), already.disk)
        )
    return short


def _planned(text: str, amount: int) -> str:
    # Without this, "512 MiB free" would contradict what the user sees on the host.
    return f" after {text} this plan puts there first" if amount else ""


def fits(need: Need, candidate: Candidate, already: Need = NOTHING) -> bool:
    """Whether the host has room for `need` on top of `already`."""
    return not shortfalls(need, candidate, already)


def place(
    need: Need,
    candidates: Sequence[Candidate],
    *,
    pinned: str | None = None,
    already: Mapping[str, Need] | None = None,
    guest: str = "the guest",
    unreachable: Sequence[str] = (),
    refused: Mapping[str, Refusal] | None = None,
) -> Placement:
    """The host for one guest: `pinned` if it fits, else the best fit among `candidates`.

    `already` is what this plan has placed on each host before (summed per host). Among
    hosts that fit, the one with the most free memory after placing wins; ties go to fewer
    guests (counting those in `already`), then to inventory (candidate) order. `guest` and
    `unreachable` only word the errors. Hosts in `refused` are never chosen.

    Raises the pinned host's refusal, HostTooSmall when it lacks room, NoCapacity when no
    candidate fits. `pinned` must be one of the candidates: the caller reports unknown and
    unreachable hosts.
    """
    placed, barred = already or {}, refused or {}
    if pinned is not None:
        if pinned in barred:
            raise barred[pinned]
        return _place_pinned(need, _find(candidates, pinned), placed, guest)
    skipped = tuple((c.name, barred[c.name].lack) for c in candidates if c.name in barred)
    fitting = [
        c for c in candidates if c.name not in barred and fits(need, c, placed.get(c.name, NOTHING))
    ]
    if not fitting:
        rejected = [
            (c.name, barred[c.name].lack if c.name in barred else _rejection(need, c, placed))
            for c in candidates
        ]
        raise errors.NoCapacity(
            guest=guest, need=str(need), rejected=rejected, unreachable=unreachable
        )
    order = {c.name: i for i, c in enumerate(candidates)}
    best = min(
        fitting,
        key=lambda c: (-_memory_after(need, c, placed), _guest_count(c, placed), order[c.name]),
    )
    after = sizes.human(_memory_after(need, best, placed))
    if len(fitting) == 1 and len(candidates) - len(skipped) > 1:  # others lacked room
        return Placement(best.name, f"only host with room: {after} memory free after", skipped)
    return Placement(best.name, f"most free memory: {after} after", skipped)


def _place_pinned(
    need: Need, candidate: Candidate, placed: Mapping[str, Need], guest: str
) -> Placement:
    short = shortfalls(need, candidate, placed.get(candidate.name, NOTHING))
    if short:
        raise errors.HostTooSmall(host=candidate.name, guest=guest, shortfalls=short)
    after = sizes.human(_memory_after(need, candidate, placed))
    return Placement(candidate.name, f"as asked: {after} memory free after")


def _rejection(need: Need, candidate: Candidate, placed: Mapping[str, Need]) -> str:
    return "needs " + "; ".join(shortfalls(need, candidate, placed.get(candidate.name, NOTHING)))


def _find(candidates: Sequence[Candidate], name: str) -> Candidate:
    for candidate in candidates:
        if candidate.name == name:
            return candidate
    raise ValueError(f"pinned host {name!r} is not among the candidates")


def _memory_after(need: Need, candidate: Candidate, placed: Mapping[str, Need]) -> int:
    return room(candidate, placed.get(candidate.name, NOTHING)).memory - need.memory


def _guest_count(candidate: Candidate, placed: Mapping[str, Need]) -> int:
    return len(candidate.snapshot.guests) + placed.get(candidate.name, NOTHING).guests


def _human(n: int) -> str:
    return sizes.human(max(n, 0))


def _vcpus(n: int) -> str:
    return f"{n} vCPU" if n == 1 else f"{n} vCPUs"
