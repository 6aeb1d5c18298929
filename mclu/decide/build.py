"""Planning `mclu build`: which host gets each new guest, its domain, its disk, what travels.

Pure: a request, a snapshot of the hosts, their storage facts and a resolved template in;
a BuildPlan out, or the error that stops the build before anything is touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from mclu import errors, hostpaths, sizes
from mclu.config import fields
from mclu.decide import cloudinit, placement
from mclu.model import (
    BaseImage,
    BuildState,
    GuestMeta,
    GuestSpec,
    GuestTraits,
    ResolvedTemplate,
    Snapshot,
    StorageFacts,
)

TRANSPORTS = ("stream", "nbd")


@dataclass(frozen=True)
class BuildRequest:
    """`mclu build` as the user asked it; None means the template's default."""

    template: str
    names: tuple[str, ...]  # NAME, or HOST:NAME to pin that guest to HOST
    on: str | None = None  # pin every guest not pinned by HOST:NAME
    size: int | None = None  # disk bytes
    memory: int | None = None  # bytes
    vcpus: int | None = None
    full_copy: bool = False
    transport: str = "stream"


@dataclass(frozen=True)
class GuestPlan:
    """One new guest: where it goes, why, its domain and its disk."""

    name: str
    host: str
    reason: str  # why this host, for people
    spec: GuestSpec
    base: BaseImage
    base_cached: bool  # the base was already in the host's cache before this build
    base_path: str  # the cached base on the host
    disk_path: str
    disk_size: int  # virtual size in bytes
    send_bytes: int  # base data this guest's step sends to the host; 0 if cached or sent earlier
    # Its NoCloud seed on the host when cloud-init personalises it (the template says so);
    # None: the libguestfs appliance does, before it boots.
    seed_path: str | None = None

    @property
    def full_copy(self) -> bool:
        return self.spec.disk_format == "raw"

    @property
    def personalise(self) -> str:
        """How its disk is made its own: `cloudinit.CLOUD_INIT` or `cloudinit.LIBGUESTFS`."""
        return cloudinit.CLOUD_INIT if self.seed_path else cloudinit.LIBGUESTFS


@dataclass(frozen=True)
class BuildPlan:
    """Every new guest of one `mclu build`, in the order the user named them."""

    template: ResolvedTemplate
    guests: tuple[GuestPlan, ...]
    transport: str
    # What the user should know but that does not stop the build: hosts that did not answer,
    # where the new names could not be checked (mclu keeps no state of its own to ask), and
    # hosts skipped for lacking a guest's network or having a file of its disk's name.
    warnings: tuple[str, ...] = ()
    # The base is fetched into the controller's cache first: some host chosen lacks it and
    # the controller has not cached it. Nothing is downloaded for hosts that hold it.
    download: bool = False

    @property
    def hosts_needing_base(self) -> tuple[str, ...]:
        """Hosts the base must travel to, in the order of their first guest."""
        return tuple(dict.fromkeys(g.host for g in self.guests if not g.base_cached))

    @property
    def send_bytes(self) -> int:
        """Base data to send in all, in bytes (holes do not travel)."""
        return sum(g.send_bytes for g in self.guests)


@dataclass(frozen=True)
class _Sizing:
    """The checked size options shared by every guest of a request."""

    memory: int
    vcpus: int
    disk_size: int
    full_copy: bool


@dataclass(frozen=True)
class _Build:
    """What every guest of one request shares: the template, the request, its checked sizes,
    and the build time (ISO 8601 UTC)."""

    template: ResolvedTemplate
    request: BuildRequest
    sizing: _Sizing
    now: str


def plan_build(
    request: BuildRequest,
    snapshot: Snapshot,
    storage: Mapping[str, StorageFacts],
    template: ResolvedTemplate,
    *,
    now: str,
    inventory_path: str = "the inventory",
    local_cached: bool = False,
) -> BuildPlan:
    """Place and describe every guest of `request`; `now` is the ISO 8601 UTC build time;
    `local_cached`: the controller's cache holds the template's base (by its digest).

    A host in `snapshot.ok` without `storage` facts is treated as one that did not answer
    (put the storage reading's error in `snapshot.failed` for a precise message).

    Raises, before any guest is placed: InvalidBuildOption, InvalidGuestName,
    DuplicateGuestName (exit code 2), UnknownHost, the pinned host's HostError, GuestExists;
    then the pinned host's NetworkMissing or DiskNameTaken, HostTooSmall, or NoCapacity.
    """
    sizing = _check_options(request, template)
    targets = _check_names(request, snapshot, storage, inventory_path)
    candidates = _candidates(snapshot, storage)
    # Hosts without the base need room for it once, whichever guest takes it there:
    # set that room aside up front so every fit check sees it.
    already = {c.name: _base_room(template.base, c) for c in candidates}
    build = _Build(template, request, sizing, now)
    guests: list[GuestPlan] = []
    skipped: dict[tuple[str, str], list[str]] = {}  # (host, why) → the guests it was refused
    for name, pinned in targets:
        need = _need(template.base, sizing)
        chosen = placement.place(
            need,
            candidates,
            pinned=pinned,
            already=already,
            guest=name,
            unreachable=_unasked(snapshot, storage),
            refused=_refused(name, candidates, template, sizing),
        )
        for host_why in chosen.skipped:
            skipped.setdefault(host_why, []).append(name)
        already[chosen.host] = already[chosen.host] + need
        host = next(c for c in candidates if c.name == chosen.host)
        guests.append(_guest_plan(name, chosen, host, build, guests))
    return BuildPlan(
        template=template,
        guests=tuple(guests),
        download=not local_cached and any(not g.base_cached for g in guests),
        transport=request.transport,
        warnings=_unchecked_names([name for name, _ in targets], snapshot)
        + tuple(
            f"{host} skipped for {', '.join(names)}: {why}"
            for (host, why), names in skipped.items()
        ),
    )


def split_name(text: str) -> tuple[str, str | None]:
    """`HOST:NAME` → (NAME, HOST); `NAME` → (NAME, None). As `snapshot.split_ref` reads it.

    `:NAME` gives an empty host, which the name check refuses.
    """
    host, sep, name = text.rpartition(":")
    return name, host if sep else None


# --- checks --------------------------------------------------------------------------------


def _check_options(request: BuildRequest, template: ResolvedTemplate) -> _Sizing:
    if request.transport not in TRANSPORTS:
        raise errors.InvalidBuildOption(
            option="transport",
            value=request.transport,
            problem=f"use one of {', '.join(TRANSPORTS)}",
        )
    memory = template.memory if request.memory is None else request.memory
    if not fields.MIN_MEMORY <= memory <= fields.MAX_MEMORY:
        raise errors.InvalidBuildOption(
            option="memory",
            value=sizes.human(memory),
            problem=(
                f"must be from {sizes.human(fields.MIN_MEMORY)} to {sizes.human(fields.MAX_MEMORY)}"
            ),
        )
    vcpus = template.vcpus if request.vcpus is None else request.vcpus
    if not 1 <= vcpus <= fields.MAX_VCPUS:
        raise errors.InvalidBuildOption(
            option="vcpus", value=str(vcpus), problem=f"must be from 1 to {fields.MAX_VCPUS}"
        )
    default_size = template.disk_size or template.base.size
    disk_size = default_size if request.size is None else request.size
    if disk_size < template.base.size:
        raise errors.InvalidBuildOption(
            option="size",
            value=sizes.human(disk_size),
            problem=(
                f"smaller than the template's {sizes.human(template.base.size)} disk "
                "(disks can grow, not shrink)"
            ),
        )
    if disk_size > fields.MAX_DISK:
        raise errors.InvalidBuildOption(
            option="size",
            value=sizes.human(disk_size),
            problem=f"larger than {sizes.human(fields.MAX_DISK)}",
        )
    return _Sizing(memory, vcpus, disk_size, request.full_copy or template.full_copy)


def _check_names(
    request: BuildRequest,
    snapshot: Snapshot,
    storage: Mapping[str, StorageFacts],
    inventory_path: str,
) -> list[tuple[str, str | None]]:
    """(name, pinned host) per guest, after checking names and pinned hosts."""
    targets = []
    for text in request.names:
        name, host = split_name(text)
        if not fields.GUEST_NAME.fullmatch(name) or (
            host is not None and not fields.GUEST_NAME.fullmatch(host)
        ):
            raise errors.InvalidGuestName(name=text)
        targets.append((name, host or request.on))
    seen: set[str] = set()
    for name, _ in targets:
        if name in seen:
            raise errors.DuplicateGuestName(name=name)
        seen.add(name)
    for _, host in targets:
        _check_pinned(host, snapshot, storage, inventory_path)
    for name, _ in targets:
        _check_name_free(name, snapshot)
    return targets


def _check_pinned(
    host: str | None, snapshot: Snapshot, storage: Mapping[str, StorageFacts], inventory_path: str
) -> None:
    if host is None:
        return
    if host not in snapshot.order:
        raise errors.UnknownHost(name=host, path=inventory_path, known=snapshot.order)
    if host in snapshot.failed:
        raise snapshot.failed[host]
    if host not in storage:
        raise errors.HostError(host=host, detail="its image directory could not be read")


def _check_name_free(name: str, snapshot: Snapshot) -> None:
    """Guest names are unique across the cluster, so `mclu` commands can take a bare NAME."""
    for host, snap in snapshot.ok.items():
        if any(g.name == name for g in snap.guests):
            raise errors.GuestExists(host=host, name=name)


def _unchecked_names(names: Sequence[str], snapshot: Snapshot) -> tuple[str, ...]:
    """One warning per host whose guests are unknown: a guest of one of these names may be
    there (a host that is off keeps its guests), and the build would make a second one."""
    which = f"{'the name' if len(names) == 1 else 'the names'} {', '.join(names)}"
    return tuple(
        f"{host} did not answer ({snapshot.failed[host].state}): {which} could not be checked "
        "there; a guest there of that name would make two (`mclu list` flags them)"
        for host in snapshot.order
        if host not in snapshot.ok and host in snapshot.failed
    )


# --- placing and describing ----------------------------------------------------------------


def _candidates(
    snapshot: Snapshot, storage: Mapping[str, StorageFacts]
) -> list[placement.Candidate]:
    return [
        placement.Candidate(snapshot.ok[h], storage[h])
        for h in snapshot.order
        if h in snapshot.ok and h in storage
    ]


def _unasked(snapshot: Snapshot, storage: Mapping[str, StorageFacts]) -> list[str]:
    """Hosts that could not be considered: no answer, or no storage facts."""
    return [h for h in snapshot.order if h not in snapshot.ok or h not in storage]


def _refused(
    name: str,
    candidates: Sequence[placement.Candidate],
    template: ResolvedTemplate,
    sizing: _Sizing,
) -> dict[str, placement.Refusal]:
    """The hosts that may not take guest `name`: its network missing, its network hiding the
    address a declared ready = "ssh" needs, or its disk's name taken by a file there."""
    refused: dict[str, placement.Refusal] = {}
    for c in candidates:
        network = template.network or c.snapshot.spec.network
        path = hostpaths.disk_path(c.storage.image_dir, name, full_copy=sizing.full_copy)
        refusal = (
            placement.network_missing(network, c.snapshot)
            or placement.no_address_for_ssh(template.ready, network, c.name)
            or placement.disk_name_taken(path, c)
        )
        if refusal is None and cloudinit.uses_cloud_init(template):
            refusal = placement.disk_name_taken(hostpaths.seed_path(c.storage.image_dir, name), c)
        if refusal is not None:
            refused[c.name] = refusal
    return refused


def _base_room(base: BaseImage, candidate: placement.Candidate) -> placement.Need:
    cached = base.cache_name in candidate.storage.cached_bases
    return placement.Need(memory=0, vcpus=0, disk=0 if cached else base.data_bytes, guests=0)


def _need(base: BaseImage, sizing: _Sizing) -> placement.Need:
    """One guest's own need: a full copy may fill its whole disk; an overlay is estimated
    to grow to the base's data (what the guest rewrites of it, plus as much new data)."""
    disk = sizing.disk_size if sizing.full_copy else base.data_bytes
    return placement.Need(memory=sizing.memory, vcpus=sizing.vcpus, disk=disk)


def _guest_plan(
    name: str,
    chosen: placement.Placement,
    host: placement.Candidate,
    build: _Build,
    earlier: Sequence[GuestPlan],
) -> GuestPlan:
    template, sizing = build.template, build.sizing
    base, image_dir = template.base, host.storage.image_dir
    cached = base.cache_name in host.storage.cached_bases
    sent_before = any(g.host == host.name for g in earlier)
    path = hostpaths.disk_path(image_dir, name, full_copy=sizing.full_copy)
    seed = hostpaths.seed_path(image_dir, name) if cloudinit.uses_cloud_init(template) else None
    spec = GuestSpec(
        name=name,
        domain_type=host.snapshot.spec.domain_type,
        memory=sizing.memory,
        vcpus=sizing.vcpus,
        disk_path=path,
        meta=_meta(template, build.request, build.now),
        disk_format="raw" if sizing.full_copy else "qcow2",
        disk_bus=template.disk_bus,
        network=template.network or host.snapshot.spec.network,
        arch=base.arch,
        seed=seed,
    )
    return GuestPlan(
        name=name,
        host=host.name,
        reason=chosen.reason,
        spec=spec,
        base=base,
        base_cached=cached,
        base_path=hostpaths.base_path(image_dir, base),
        disk_path=path,
        disk_size=sizing.disk_size,
        send_bytes=0 if cached or sent_before else base.data_bytes,
        seed_path=seed,
    )


def _meta(template: ResolvedTemplate, request: BuildRequest, now: str) -> GuestMeta:
    return GuestMeta(
        template=template.name,
        revision=str(template.base.revision),
        built=now,
        state=BuildState.BUILDING,
        options=user_options(request),
    )


def user_options(request: BuildRequest) -> tuple[tuple[str, str], ...]:
    """The options the user gave, as text for the guest's metadata (sizes exact)."""
    options = []
    if request.size is not None:
        options.append(("size", _exact_size(request.size)))
    if request.memory is not None:
        options.append(("memory", _exact_size(request.memory)))
    if request.vcpus is not None:
        options.append(("vcpus", str(request.vcpus)))
    if request.full_copy:
        options.append(("full_copy", "true"))
    return tuple(options)


def _exact_size(n: int) -> str:
    """ "2 GiB" when that reads back as exactly n, else the bytes."""
    text = sizes.human(n)
    return text if sizes.parse(text) == n else str(n)


def with_traits(guest: GuestPlan, traits: GuestTraits) -> GuestPlan:
    """The guest whose metadata records what personalisation gave and found in its disk: the
    public ssh host keys it was given and the ssh server it has."""
    meta = replace(guest.spec.meta, host_keys=traits.host_keys, ssh_server=traits.ssh_server)
    return replace(guest, spec=replace(guest.spec, meta=meta))
