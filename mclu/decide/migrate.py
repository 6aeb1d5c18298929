"""Where running guests go when they are live-migrated (`mclu migrate`) or a host is emptied
(`mclu drain`): pure functions from a request and what was read (the snapshot, the guests'
disks, the other hosts' storage, the controller's cache) to a plan.

A guest's disks are local files unless both hosts say `shared_storage = true`; then nothing
of its storage moves. Otherwise the destination needs room for the guest's overlays' data
and for each template base it does not have cached, which comes from the controller's cache
when it is there (raw), else from the source host. The executor (`mclu.act.migrate`) asks
the hosts again only what its locks make necessary: whether the disks' paths are free on the
destination once the guest's name is locked there (`Move.steps`), and, undoing a failed
move, whether a disk there has come to use a base it sent (`Move.undo`).

A cloud-init guest that still holds its NoCloud seed (built with `--no-wait`: mclu could not
know when cloud-init had read it) has it in a read-only CD-ROM, which libvirt's storage
migration does not copy: the destination would start it without its medium (the drive's
startupPolicy is optional), cloud-init there finding no seed if it had not read it yet, and
the seed file would stay on the source. So the move carries it (`Move.seeds`): copied to the
same path on the destination before libvirt is asked, removed from the source after.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mclu import errors
from mclu.decide import placement
from mclu.decide.delete import seeds as held_seeds
from mclu.model import Guest, HostSpec, Snapshot, StorageFacts

MIN_RATE = 1 << 20  # bytes per second below which a migration counts as hung
# What undoing a failed move asks the destination again: a base this move sent stays when a
# disk there has come to use it meanwhile (another run's guest, made under its own lock).
UNDO_CHECKS = ("re-read the destination's guests and overlays",)


@dataclass(frozen=True)
class Disk:
    """One disk file of a guest, as `qemu-img info --backing-chain` on its host describes it."""

    path: str
    format: str  # "qcow2", "raw"
    virtual_size: int
    data_bytes: int  # allocated bytes of this file alone (what an incremental copy moves)
    backing: str | None = None  # the backing file's absolute path
    backing_format: str | None = None
    backing_bytes: int = 0  # allocated bytes of the backing file


@dataclass(frozen=True)
class Facts:
    """What a migration plan is made from: one snapshot, the source's guests' disks (empty
    when every destination shares the source's storage), the other hosts' storage facts, and
    the names of the template bases in the controller's cache."""

    snapshot: Snapshot
    disks: Mapping[str, Sequence[Disk]] = field(default_factory=dict)  # guest name → disks
    storage: Mapping[str, StorageFacts] = field(default_factory=dict)  # host → its storage
    local_bases: frozenset[str] = frozenset()  # base file names in the controller's cache


@dataclass(frozen=True)
class MigrateRequest:
    """`mclu migrate` as the user asked it."""

    name: str  # NAME or HOST:NAME
    to: str | None = None  # the destination; None: the host with the most room
    inventory_path: str = "the inventory"


@dataclass(frozen=True)
class Move:
    """One guest's planned migration."""

    guest: Guest
    source: str
    dest: str
    reason: str  # why this destination, for people
    shared: bool  # both hosts share the guest's storage: no disk work, no storage copy
    disks: tuple[Disk, ...] = ()  # empty when shared
    from_cache: tuple[str, ...] = ()  # bases (backing paths) sent from the controller's cache
    # The cloud-init seeds the guest holds (its CD-ROM's medium), copied to the same path on
    # the destination and removed from the source; empty when shared.
    seeds: tuple[str, ...] = ()

    @property
    def bases(self) -> tuple[Disk, ...]:
        """One disk per distinct backing file (what the destination must hold)."""
        seen: dict[str, Disk] = {}
        for disk in self.disks:
            if disk.backing is not None:
                seen.setdefault(disk.backing, disk)
        return tuple(seen.values())

    @property
    def steps(self) -> tuple[str, ...]:
        """What the executor does, in order (a failure names its step). Under both hosts'
        locks on the guest's name, the destination is asked again which of the disks' and
        bases' paths exist ("check disks": another run may have made them since the plan
        was read); a disk or seed path taken fails the move, a base there is not sent. Once
        moved, the source's copies of its disks and seeds are removed (`mclu.act.migrate`)."""
        if self.shared:
            return ("lock", "migrate")
        sends = ("send template base",) if self.bases else ()
        creates = ("create disk",) if self.disks else ()
        seeds = ("send seed",) if self.seeds else ()
        return ("lock", "check disks", *sends, *creates, *seeds, "migrate")

    @property
    def undo(self) -> tuple[str, ...]:
        """What a failure undoes, newest first: the seeds sent, the disks made, then each
        base this move sent, unless the destination, asked again (`UNDO_CHECKS`), has a disk
        using it."""
        seeds = ("remove seed",) if self.seeds else ()
        removes = ("remove disk",) if self.disks else ()
        bases = (*UNDO_CHECKS, "remove template base if unused") if self.bases else ()
        return () if self.shared else (*seeds, *removes, *bases)


@dataclass(frozen=True)
class NotMoved:
    """A guest a drain leaves where it is, and why."""

    guest: Guest
    source: str
    reason: str


@dataclass(frozen=True)
class DrainPlan:
    source: str
    items: tuple[Move | NotMoved, ...]


def local_disk_problem(guest: Guest) -> str | None:
    """Why the guest's disks cannot be read and copied (a disk that is not a local file
    would need shared storage), or None."""
    for path in guest.disks:
        if not path.startswith("/"):
            return (
                f"{guest.name}: disk {path} is not a file: "
                "live migration needs shared storage for it"
            )
    return None


# --- choosing destinations -------------------------------------------------------------------


def shared(source: HostSpec, dest: HostSpec) -> bool:
    """Whether a guest's disks stay where they are: both hosts see the same storage."""
    return source.shared_storage and dest.shared_storage


def all_shared(snapshot: Snapshot, source: str) -> bool:
    """Whether every host that answered shares the source's storage: then no disk is read,
    no storage facts are needed, nothing is copied."""
    src = snapshot.ok[source].spec
    return all(shared(src, h.spec) for n, h in snapshot.ok.items() if n != source)


def need(guest: Guest, disks: Sequence[Disk], dest: placement.Candidate) -> placement.Need:
    """What the guest takes from `dest`: its memory and vCPUs, its overlays' data, and the
    data of each base `dest` does not have cached yet."""
    cached = set(dest.storage.cached_bases)
    bases = {
        d.backing: d.backing_bytes
        for d in disks
        if d.backing is not None and posixpath.basename(d.backing) not in cached
    }
    return placement.Need(
        memory=guest.memory,
        vcpus=guest.vcpus,
        disk=sum(d.data_bytes for d in disks) + sum(bases.values()),
    )


def candidates(
    snapshot: Snapshot, storage_facts: Mapping[str, StorageFacts], source: str
) -> list[placement.Candidate]:
    """Every host that answered, except the source; a host sharing the source's storage needs
    no storage facts (nothing is written to it)."""
    found = []
    src = snapshot.ok[source].spec
    for name in snapshot.order:
        host = snapshot.ok.get(name)
        if name == source or host is None:
            continue
        facts = storage_facts.get(name)
        if facts is None and shared(src, host.spec):
            facts = StorageFacts(image_dir=host.spec.image_dir, free=0)
        if facts is not None:
            found.append(placement.Candidate(host, facts))
    return found


def check_source(guest: Guest, source: str, to: str | None, snapshot: Snapshot) -> None:
    """What rules a migration out before the guest's disks are read: a guest that does not
    run (GuestNotRunning), a destination that did not answer (its HostError)."""
    if not guest.state.active:
        raise errors.GuestNotRunning(host=source, name=guest.name, state=guest.state.value)
    if to is not None and to != source and to in snapshot.failed:
        raise snapshot.failed[to]


def plan_migrate(request: MigrateRequest, source: str, guest: Guest, facts: Facts) -> Move:
    """`mclu migrate`: the guest found on `source` (see `check_source`), moved to
    `request.to` if it has room, else to the host with the most."""
    return choose(guest, source, facts, to=request.to, inventory_path=request.inventory_path)


def choose(
    guest: Guest,
    source: str,
    facts: Facts,
    *,
    to: str | None = None,
    already: Mapping[str, placement.Need] | None = None,
    inventory_path: str = "the inventory",
) -> Move:
    """The destination of one running guest: `to` if it has room, else the host with the most.

    A host lacking one of the guest's networks, or (storage not shared) with a file of one
    of its disks' or seeds' names, is never chosen: `to` such a host is its refusal (NetworkMissing,
    DiskNameTaken), other such hosts are skipped and the reason says so.

    Raises GuestNotRunning, UnknownHost, BadDestination (to is the source), the destination's
    HostError when it did not answer, NetworkMissing, DiskNameTaken, HostTooSmall, NoCapacity.
    """
    snapshot = facts.snapshot
    if not guest.state.active:
        raise errors.GuestNotRunning(host=source, name=guest.name, state=guest.state.value)
    if to is not None:
        if to not in snapshot.order:
            raise errors.UnknownHost(name=to, path=inventory_path, known=snapshot.order)
        if to == source:
            raise errors.BadDestination(host=to, reason=f"{guest.name} already runs on {to}")
        if to in snapshot.failed:
            raise snapshot.failed[to]
    disks = tuple(facts.disks.get(guest.name, ()))
    found = candidates(snapshot, facts.storage, source)
    if to is not None and not any(c.name == to for c in found):
        raise errors.HostError(host=to, detail="its image directory could not be read")
    placed = dict(already or {})
    # Each host's need differs (a base it lacks): fold that into what it already holds.
    extra = {c.name: need(guest, disks, c) for c in found}
    own = placement.Need(memory=guest.memory, vcpus=guest.vcpus, disk=0)
    room = {
        c.name: placed.get(c.name, placement.NOTHING)
        + placement.Need(0, 0, extra[c.name].disk, guests=0)
        for c in found
    }
    unasked = [h for h in snapshot.order if h != source and h not in {c.name for c in found}]
    src = snapshot.ok[source].spec
    chosen = placement.place(
        own,
        found,
        pinned=to,
        already=room,
        guest=guest.name,
        unreachable=unasked,
        refused=_refused(guest, disks, found, src),
    )
    is_shared = shared(src, snapshot.ok[chosen.host].spec)
    kept = () if is_shared else disks
    skipped = "".join(f"; skipped {host}: {why}" for host, why in chosen.skipped)
    return Move(
        guest=guest,
        source=source,
        dest=chosen.host,
        reason=chosen.reason + skipped,
        shared=is_shared,
        disks=kept,
        from_cache=_from_cache(kept, facts.local_bases),
        seeds=() if is_shared else held_seeds(guest),
    )


def _refused(
    guest: Guest, disks: Sequence[Disk], found: Sequence[placement.Candidate], src: HostSpec
) -> dict[str, placement.Refusal]:
    """The hosts that may not take the guest: one of its networks missing there, or (its
    disks and seeds copied there) a file there already named like one of them."""
    refused: dict[str, placement.Refusal] = {}
    paths = (*(d.path for d in disks), *held_seeds(guest))
    for c in found:
        refusal: placement.Refusal | None = placement.networks_missing(guest.networks, c.snapshot)
        if refusal is None and not shared(src, c.snapshot.spec):
            taken = (placement.disk_name_taken(path, c) for path in paths)
            refusal = next((r for r in taken if r is not None), None)
        if refusal is not None:
            refused[c.name] = refusal
    return refused


def _from_cache(disks: Sequence[Disk], local_bases: frozenset[str]) -> tuple[str, ...]:
    """The bases the controller sends from its own cache (a raw file there of that name);
    the others are copied from the source host."""
    return tuple(
        dict.fromkeys(
            d.backing
            for d in disks
            if d.backing is not None
            and posixpath.basename(d.backing) in local_bases
            and d.backing_format in (None, "raw")
        )
    )


def plan_drain(source: str, facts: Facts) -> DrainPlan:
    """Where each guest of `source` goes, by capacity, guests spread and never overcommitted.

    Guests in the order of most memory first (the hardest to place go while there is most
    room). A shut-off guest, or one that fits nowhere, is NotMoved with the reason.
    """
    snapshot = facts.snapshot
    host = snapshot.ok[source]
    already: dict[str, placement.Need] = {}
    bases_sent: dict[str, set[str]] = {}
    plan: list[Move | NotMoved] = []
    for guest in sorted(host.guests, key=lambda g: (-g.memory, g.name)):
        if not guest.state.active:
            plan.append(
                NotMoved(
                    guest,
                    source,
                    f"{guest.state.value}: only running guests "
                    "are live-migrated; start it, or move its disk "
                    "and definition by hand",
                )
            )
            continue
        if guest.name not in facts.disks:
            plan.append(NotMoved(guest, source, "its disks could not be read"))
            continue
        now = Facts(
            snapshot, facts.disks, _with_bases(facts.storage, bases_sent), facts.local_bases
        )
        try:
            move = choose(guest, source, now, already=already)
        except errors.MCLUError as e:
            plan.append(NotMoved(guest, source, str(e)))
            continue
        dest = next(c for c in candidates(snapshot, now.storage, source) if c.name == move.dest)
        already[move.dest] = already.get(move.dest, placement.NOTHING) + need(
            guest, move.disks, dest
        )
        bases_sent.setdefault(move.dest, set()).update(
            posixpath.basename(d.backing) for d in move.bases if d.backing
        )
        plan.append(move)
    return DrainPlan(source, tuple(plan))


def _with_bases(
    facts: Mapping[str, StorageFacts], sent: Mapping[str, set[str]]
) -> dict[str, StorageFacts]:
    """Storage facts as they will be once the bases this plan sends have arrived."""
    return {
        h: StorageFacts(f.image_dir, f.free, tuple(sorted({*f.cached_bases, *sent.get(h, set())})))
        for h, f in facts.items()
    }


def timeout_for(move: Move) -> float:
    """A bound on the migration: only a hung one takes longer."""
    return 120.0 + (move.guest.memory + sum(d.data_bytes for d in move.disks)) / MIN_RATE
