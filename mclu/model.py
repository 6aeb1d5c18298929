"""The data every layer shares: frozen dataclasses, no I/O, no libvirt or asyncssh import.

Sizes are bytes, CPU counts are whole CPUs, times are seconds, everywhere.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mclu import errors

T = TypeVar("T")

DEFAULT_LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"
# Hosts talked to at once: the 50 hosts mclu is made for, in one wave.
DEFAULT_PARALLEL = 50


@dataclass(frozen=True)
class HostSpec:
    """One host as the inventory describes it."""

    name: str
    address: str
    user: str | None = None  # None: from ~/.ssh/config, else the local user
    port: int | None = None  # None: from ~/.ssh/config, else 22
    mac: str | None = None
    tags: tuple[str, ...] = ()
    domain_type: str = "kvm"  # libvirt <domain type=...>: "kvm", or "qemu" for TCG
    image_dir: str = "/var/lib/libvirt/images"
    storage_pool: str | None = None
    shared_storage: bool = False
    reserve_memory: int = 1 << 30
    reserve_cpus: int = 0
    cpu_ratio: float = 4.0  # vCPUs planned per physical CPU (CPU overcommit)
    # Capacity overrides: what mclu plans with instead of what the host reports.
    cpus: int | None = None
    memory: int | None = None
    uri: str | None = None  # libvirt URI reached directly instead of through ssh
    libvirt_socket: str = DEFAULT_LIBVIRT_SOCKET
    # A host that does not answer at the TCP level within tcp_timeout is off; once TCP is
    # connected, the ssh handshake and login get the whole connect_timeout (a slow host).
    # A live host answers a SYN within milliseconds on a LAN; a lost SYN is sent again
    # within the bound (mclu.hosts.ssh).
    tcp_timeout: float = 0.75
    connect_timeout: float = 5.0
    command_timeout: float = 30.0
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    ssh_config: str | None = None  # None: ~/.ssh/config when it exists; "none": no file
    power_off_command: tuple[str, ...] = ("poweroff",)
    # Where `mclu on` sends the wake-on-LAN packet (UDP): the host's LAN broadcast, usually.
    wol_address: str = "255.255.255.255"
    wol_port: int = 9
    network: str = "network:default"  # guests' NIC: "network:NAME", "bridge:NAME", "user", "none"

    @property
    def ssh_port(self) -> int:
        return self.port if self.port is not None else 22


@dataclass(frozen=True)
class Inventory:
    """The hosts of one inventory file, in file order."""

    path: str
    hosts: tuple[HostSpec, ...]
    parallel: int = DEFAULT_PARALLEL
    # virt-builder repos.d directories or .conf files; None: virt-builder's own places.
    template_repos: tuple[str, ...] | None = None

    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def get(self, name: str) -> HostSpec | None:
        return next((h for h in self.hosts if h.name == name), None)


@dataclass(frozen=True)
class HostFacts:
    """What a host reports about itself."""

    hostname: str
    arch: str
    cpus: int  # physical (logical) CPUs
    memory_total: int
    memory_free: int  # available to new guests now, as the kernel sees it
    domain_types: tuple[str, ...] = ()  # e.g. ("qemu", "kvm")
    libvirt_version: str = ""
    # libvirt's host UUID (capabilities host/uuid): two inventory entries reaching the same
    # UUID are one machine. "" when not known.
    host_uuid: str = ""
    # Active libvirt networks and the host's bridges, sorted, as guests' NICs name them
    # ("network:NAME", "bridge:NAME"); None when the host could not say (unknown).
    networks: tuple[str, ...] | None = None
    bridges: tuple[str, ...] | None = None


class GuestState(enum.StrEnum):
    """A guest's run state, libvirt's states named in words."""

    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutting down"
    SHUTOFF = "shut off"
    CRASHED = "crashed"
    PMSUSPENDED = "suspended"
    NOSTATE = "no state"

    @property
    def active(self) -> bool:
        """Whether the guest holds its CPUs and memory on the host."""
        return self not in (GuestState.SHUTOFF, GuestState.CRASHED)


class BuildState(enum.StrEnum):
    """mclu's build state of a guest, in its metadata."""

    BUILDING = "building"  # its disk is being made
    STARTED = "started"  # started, not yet shown that it booted
    READY = "ready"


# States a finished run never leaves: a guest in one whose lock no run holds is a leftover.
UNFINISHED = frozenset({BuildState.BUILDING, BuildState.STARTED})


@dataclass(frozen=True)
class GuestMeta:
    """mclu's own record in a guest's domain XML metadata (the only record mclu keeps)."""

    template: str
    revision: str = ""
    built: str = ""  # ISO 8601 UTC
    # A BuildState's word: "building" while its disk is made, "started" while it boots, "ready"
    # once it has shown it booted (`mclu.decide.readiness`). A guest left "building" or "started"
    # by a killed run is a leftover (`mclu cleanup`). A str, as the metadata may hold any word.
    state: str = BuildState.READY
    options: tuple[tuple[str, str], ...] = ()
    ready: str = ""  # the readiness rule it passed when it became ready, e.g. "console:login:"
    # The public halves of the ssh host keys mclu generated for it ("ssh-ed25519 AAAA...", no
    # comment): what `mclu ssh` checks the guest against. () for a guest made before mclu
    # recorded them, or one mclu did not personalise.
    host_keys: tuple[str, ...] = ()
    # Its addresses when it became ready (`read.addresses.of_running`), shown as source
    # "ready" when no live source knows one. () when none was known then, or before mclu
    # recorded them.
    addresses: tuple[str, ...] = ()
    # The ssh server personalisation found in its disk ("sshd", "dropbear"; GuestTraits);
    # "" when none, or before mclu looked for one.
    ssh_server: str = ""


@dataclass(frozen=True)
class Guest:
    """One guest (libvirt domain) on one host."""

    name: str
    uuid: str
    state: GuestState
    vcpus: int
    memory: int  # current memory
    max_memory: int = 0
    disks: tuple[str, ...] = ()
    mclu: GuestMeta | None = None
    persistent: bool = True
    autostart: bool = False  # libvirt starts it when its host (libvirtd) starts
    # Its NICs as GuestSpec.network words ("network:default", "bridge:br0", "user"), in
    # domain order: `mclu ssh` reaches a guest on a libvirt network through its host.
    networks: tuple[str, ...] = ()
    # Its NICs' MACs, lower case, in the same order ("" for a NIC without one); () when not
    # read. Addresses from a libvirt network's leases are matched to guests by these.
    macs: tuple[str, ...] = ()
    # The media in its CD-ROM drives (file paths), e.g. a cloud-init seed while it boots.
    cdroms: tuple[str, ...] = ()


class AddressSource(enum.StrEnum):
    """Where a guest's address was learnt (docs/networking.md, "How addresses are found")."""

    LEASE = "lease"  # the DHCP leases of the libvirt network the guest is on
    AGENT = "agent"  # the QEMU guest agent, from inside the guest
    ARP = "arp"  # the host's neighbour table (ARP, IPv4)
    READY = "ready"  # recorded in mclu's metadata when the guest became ready (may be stale)


@dataclass(frozen=True)
class Address:
    """One address of a guest's NIC, and where it was learnt."""

    ip: str  # without prefix length, e.g. "192.168.122.7" or "fe80::5054:ff:fe12:3456"
    family: int  # 4 or 6
    source: AddressSource
    mac: str = ""  # the NIC's MAC, lower case; "" when the source does not say
    prefix: int | None = None  # the network's prefix length, when the source says it


@dataclass(frozen=True)
class GuestAddresses:
    """What the sources asked knew of one guest's addresses: the addresses (each once, by the
    first source that knew it), or why none did (`no lease, no agent, ...`)."""

    addresses: tuple[Address, ...] = ()
    why_none: str = ""  # "" when addresses is not empty
    asked: tuple[AddressSource, ...] = ()


@dataclass(frozen=True)
class HostSnapshot:
    """A host as one read pass found it: its spec, its facts and its guests."""

    spec: HostSpec
    facts: HostFacts
    guests: tuple[Guest, ...] = field(default_factory=tuple)
    # What interrupted runs may have left on the host (`storage.scan_leftovers`); None when
    # it was not looked at or could not be.
    leftovers: LeftoverScan | None = None
    # Running guests' addresses by guest name (`read.addresses`), when the read asked for them.
    addresses: dict[str, GuestAddresses] | None = None

    @property
    def active_guests(self) -> tuple[Guest, ...]:
        return tuple(g for g in self.guests if g.state.active)

    @property
    def cpus(self) -> int:
        """CPUs mclu plans with: the inventory's override, else what the host reports."""
        return self.spec.cpus if self.spec.cpus is not None else self.facts.cpus

    @property
    def memory_total(self) -> int:
        return self.spec.memory if self.spec.memory is not None else self.facts.memory_total

    @property
    def vcpus_allocated(self) -> int:
        return sum(g.vcpus for g in self.active_guests)

    @property
    def memory_allocated(self) -> int:
        return sum(g.memory for g in self.active_guests)

    @property
    def memory_free(self) -> int:
        """Memory left for new guests: capacity less the host's reserve and running guests.

        With no capacity override this is also bounded by what the kernel says is available.
        """
        planned = self.memory_total - self.spec.reserve_memory - self.memory_allocated
        if self.spec.memory is None:
            planned = min(planned, self.facts.memory_free - self.spec.reserve_memory)
        return max(planned, 0)

    @property
    def vcpus_free(self) -> int:
        """vCPUs left for new guests: `cpu_ratio` per CPU, less the reserve and running guests."""
        capacity = int(self.cpus * self.spec.cpu_ratio) - self.spec.reserve_cpus
        return max(capacity - self.vcpus_allocated, 0)


# --- building guests ---------------------------------------------------------------------


@dataclass(frozen=True)
class StorageFacts:
    """A host's image directory as a build needs it: free bytes and mclu's cached bases."""

    image_dir: str
    free: int
    cached_bases: tuple[str, ...] = ()  # file names in the cache dir, e.g. "tiny.x86_64.r3.raw"
    leftovers: LeftoverScan | None = None  # read with them, in the same command
    # The names of the files in the image directory (a new disk's name must be free); None:
    # not read.
    files: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PartialFile:
    """A file a run of mclu makes and renames or removes when done: `<base>.partial-*`,
    `<disk>.mclu-new`, `<disk>.mclu-rebuild`."""

    path: str
    age: float  # seconds since it was last modified, by the host's clock
    in_use: bool  # a process on the host names it on its command line (a writer, a server)
    owner: str | None = None  # the guest whose lock the run that makes it holds


@dataclass(frozen=True)
class LeftoverScan:
    """What may be left of interrupted runs on a host, as one command found it."""

    partial_files: tuple[PartialFile, ...] = ()
    locked: tuple[str, ...] = ()  # guests whose lock a run of mclu holds now (sorted)


@dataclass(frozen=True)
class BaseImage:
    """A template's base image at one revision: what travels to a host once and is cached."""

    template: str  # the virt-builder template name, e.g. "debian-12"
    revision: int
    arch: str
    size: int  # virtual size in bytes
    data_bytes: int = 0  # bytes that are not holes (what a sparse-aware transfer moves)
    expand: str | None = None  # the partition to grow when the guest disk is larger
    # The sha512 (hex) the repository's index gives for the base's file: a repository may
    # publish one revision twice with other content, so the digest is part of its identity.
    digest: str = ""

    @property
    def cache_name(self) -> str:
        """The file name of the cached base, on a host and in the controller's cache:
        `NAME.ARCH.rREVISION.DIGEST.raw`, DIGEST the first DIGEST_CHARS of its sha512, so
        other content under the same revision is another file, and a cached base (a backing
        file of overlays) is never overwritten. Without a digest (mclu before it recorded
        them) `NAME.ARCH.rREVISION.raw`."""
        digest = f".{self.digest[:DIGEST_CHARS]}" if self.digest else ""
        return f"{self.template}.{self.arch}.r{self.revision}{digest}.raw"


DIGEST_CHARS = 16  # hex digits of a base's sha512 in its cache name (64 bits)
_CONTENT_NAMED = re.compile(rf"^.+\.r\d+\.[0-9a-f]{{{DIGEST_CHARS}}}\.raw$")


def content_named(name: str) -> bool:
    """Whether a cached base's file name carries its digest (`BaseImage.cache_name`); one
    that does not was cached by name and revision only, its content unknown."""
    return _CONTENT_NAMED.fullmatch(name) is not None


@dataclass(frozen=True)
class GuestSpec:
    """Everything the domain XML of a new guest is rendered from."""

    name: str
    domain_type: str  # "kvm" or "qemu"
    memory: int
    vcpus: int
    disk_path: str
    meta: GuestMeta
    disk_format: str = "qcow2"
    disk_bus: str = "virtio"
    network: str = "user"  # "user", "none", "network:NAME" or "bridge:NAME"
    mac: str | None = None
    arch: str = "x86_64"
    uuid: str | None = None
    seed: str | None = None  # a NoCloud seed to attach as a read-only CD-ROM (cloud-init)


@dataclass(frozen=True)
class Customization:
    """A template's own customisation steps, applied to each new guest's disk."""

    packages: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (path in the guest, content)
    run: tuple[str, ...] = ()  # shell commands run in the guest's filesystem at build time
    firstboot: tuple[str, ...] = ()  # shell commands run once at the guest's first boot


@dataclass(frozen=True)
class ResolvedTemplate:
    """A template ready to build from: its base image and a guest's defaults."""

    name: str  # as the user typed it: an mclu template or a repository template
    base: BaseImage
    source_uri: str  # where the base image comes from (its index entry's file)
    sha512: str  # of the file at source_uri
    download_size: int | None = None  # bytes of the file at source_uri, if the index says
    memory: int = 1 << 30
    vcpus: int = 1
    disk_bus: str = "virtio"
    network: str | None = None  # None: the host's network
    full_copy: bool = False
    customization: Customization = field(default_factory=Customization)
    disk_size: int | None = None  # the template's default disk size; None: the base's
    ready: str | None = None  # the template's readiness rule; None: the strongest detected
    ready_timeout: float | None = None  # seconds; None: mclu's default
    autostart: bool = True  # guests start with their host
    # How a new disk is made the guest's own (`mclu.decide.cloudinit.PERSONALISERS`): the
    # libguestfs appliance, or a NoCloud seed cloud-init in the guest applies at first boot.
    personalise: str = "libguestfs"


@dataclass(frozen=True)
class GuestTraits:
    """What personalisation found in a guest's disk that says how it can show it booted."""

    agent: bool = False  # the QEMU guest agent is installed
    serial_login: bool = False  # a login prompt (getty) on the serial console
    host_keys: tuple[str, ...] = ()  # public ssh host keys written to it (GuestMeta.host_keys)
    ssh_server: str = ""  # the ssh server installed ("sshd", "dropbear"); "" when none


@dataclass
class HostResults(Generic[T]):
    """Per host, in inventory order: the value, or the HostError that stopped it."""

    ok: dict[str, T] = field(default_factory=dict)
    failed: dict[str, errors.HostError] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def items(self) -> list[tuple[str, T | errors.HostError]]:
        return [(h, self.ok[h] if h in self.ok else self.failed[h]) for h in self.order]


# Every host's snapshot, or the error that stopped its read: what planners decide on.
Snapshot = HostResults[HostSnapshot]
