"""Personalise new guests' disks with libguestfs on the controller, several in one appliance.

Each disk reaches the controller as an NBD unix socket (qemu-nbd on the host, forwarded over
ssh) or, in tests, as a local image file. One libguestfs appliance opens every disk of a
build: its launch costs 10-20 s under TCG and dominates the build, the edits themselves touch
few blocks. Per disk: inspect the OS, mount it, grow the expandable partition, then hostname,
machine-id, root's authorized_keys, ssh host keys, root password, the template's packages,
files and commands, and a systemd unit for first-boot commands.

libguestfs picks its backend from the environment: on machines whose KVM cannot boot a Linux
appliance run with ``LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg``.
Blocking: call from a thread. Nothing secret is logged: libguestfs's call trace is switched
off because it would print the private host keys and the password hash.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import secrets
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

from mclu import errors, model

__all__ = ["DEFAULT_MEMSIZE", "DEFAULT_SMP", "Drive", "Personalization", "personalize"]

log = logging.getLogger(__name__)

# Measured under TCG on a busy 2-core machine: launch 18-28 s with 2 vCPUs, 23-27 s with 1
# (within the noise); 1024 MiB instead of 512 bought nothing for these edits.
DEFAULT_SMP = 2
DEFAULT_MEMSIZE = 512

HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
FIRSTBOOT_DIR = "/var/lib/mclu/firstboot"
FIRSTBOOT_UNIT = "mclu-firstboot.service"
_UNIT_PATH = f"/etc/systemd/system/{FIRSTBOOT_UNIT}"
_WANTS_LINK = f"/etc/systemd/system/multi-user.target.wants/{FIRSTBOOT_UNIT}"
_GROW_MIN_SECTORS = 2048  # below 1 MiB of slack a partition is already "at the end"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Drive:
    """A disk to personalise: an NBD server's unix socket, or a local image file."""

    nbd_socket: str | None = None
    path: str | None = None
    format: str = "raw"  # of `path`; an NBD export is always raw

    def __post_init__(self) -> None:
        if (self.nbd_socket is None) == (self.path is None):
            raise ValueError("a Drive needs exactly one of nbd_socket and path")

    @property
    def label(self) -> str:
        return f"nbd:{self.nbd_socket}" if self.nbd_socket else str(self.path)


@dataclass(frozen=True)
class Personalization:
    """What makes one guest's disk its own."""

    hostname: str
    ssh_authorized_keys: tuple[str, ...] = ()  # public key lines for root
    root_password_file: str | None = None  # on the controller; its first line is the password
    grow_partition: str | None = None  # the index's `expand=`, e.g. "/dev/sda1"
    customization: model.Customization = field(default_factory=model.Customization)


def personalize(drives: Sequence[tuple[str | Drive, Personalization]], *,
                progress: Progress | None = None, memsize: int = DEFAULT_MEMSIZE,
                smp: int = DEFAULT_SMP) -> None:
    """Personalise every disk in one libguestfs launch.

    A plain string is an NBD unix socket path. Stops at the first failure: then no disk of
    the call should be taken as personalised.

    :raises errors.PersonalizationFailed: naming the guest and the step that failed.
    """
    say = progress or (lambda message: None)
    jobs = [_Job(Drive(nbd_socket=d) if isinstance(d, str) else d, p) for d, p in drives]
    if not jobs:
        return
    for job in jobs:
        _check(job)
    hashes = [_root_password_hash(job) for job in jobs]
    network = any(job.personalization.customization.packages for job in jobs)
    names = ", ".join(job.hostname for job in jobs)
    say(f"starting the libguestfs appliance for {len(jobs)} disk(s)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mclu-hostkeys-") as keydir, \
            _HostKeys(jobs, Path(keydir)) as host_keys, \
            _appliance([job.drive for job in jobs], guests=names, network=network,
                       memsize=memsize, smp=smp) as g:
        log.info("libguestfs appliance up in %.1f s", time.monotonic() - started)
        with _step(names, "inspect", ""):
            roots = _roots_by_drive(g, len(jobs))
        for index, job in enumerate(jobs):
            say(f"{job.hostname}: personalising {job.drive.label}")
            _personalize_drive(g, index, job, roots[index], hashes[index],
                               host_keys.get(index))
            say(f"{job.hostname}: personalised")


# --- the pure parts: text in, text out ------------------------------------------------------

_HOSTNAME_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)
_PARTITION = re.compile(r"^(/dev/(?:sd|vd|hd|xvd)[a-z]+)(\d+)$")


def check_hostname(hostname: str) -> None:
    """Raise ValueError unless `hostname` is a valid (RFC 1123) host name, short or dotted."""
    labels = hostname.split(".")
    if len(hostname) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        raise ValueError(f"{hostname!r} is not a valid host name")


def hosts_with_hostname(hosts: str, hostname: str) -> str:
    """/etc/hosts with its 127.0.1.1 line naming `hostname` (Debian's convention).

    Other lines stay; a missing 127.0.1.1 line goes after the 127.0.0.1 lines.
    """
    short = hostname.split(".")[0]
    entry = f"127.0.1.1\t{hostname} {short}" if short != hostname else f"127.0.1.1\t{hostname}"
    lines = [line for line in hosts.splitlines() if line.split()[:1] != ["127.0.1.1"]]
    localhost = [i for i, line in enumerate(lines) if line.split()[:1] == ["127.0.0.1"]]
    lines.insert(localhost[-1] + 1 if localhost else 0, entry)
    return "\n".join(lines) + "\n"


def shadow_with_root_password(shadow: str, password_hash: str, today: int) -> str:
    """/etc/shadow with root's password hash set and its last change `today` (days since 1970).

    :raises ValueError: no root line, or a hash that would break the file.
    """
    if any(c in password_hash for c in ":\n") or not password_hash.startswith("$"):
        raise ValueError("the password hash is not a crypt(3) string")
    lines = shadow.splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) >= 3:
            fields[1], fields[2] = password_hash, str(today)
            lines[i] = ":".join(fields)
            return "\n".join(lines) + "\n"
    raise ValueError("/etc/shadow has no root line")


def authorized_keys_with(existing: str, keys: Sequence[str]) -> str:
    """An authorized_keys file keeping `existing` and appending the keys it does not hold."""
    lines = existing.splitlines()
    present = {line.strip() for line in lines}
    for key in keys:
        if key.strip() not in present:
            lines.append(key.strip())
            present.add(key.strip())
    return "\n".join(lines) + "\n" if lines else ""


def root_home(passwd: str) -> str:
    """root's home directory from /etc/passwd text; /root when it does not say."""
    for line in passwd.splitlines():
        fields = line.split(":")
        if fields[0] == "root" and len(fields) >= 6 and fields[5].startswith("/"):
            return fields[5]
    return "/root"


def partition_number(expand: str) -> int:
    """The partition number of an index's `expand=` device name: "/dev/sda1" → 1."""
    match = _PARTITION.match(expand)
    if not match:
        raise ValueError(f"{expand!r} does not name a partition (such as /dev/sda1)")
    return int(match.group(2))


def disk_of(device: str) -> str | None:
    """The whole disk of a partition device ("/dev/sdb2" → "/dev/sdb"), None for others."""
    match = _PARTITION.match(device)
    return match.group(1) if match else None


def on_disk_of(device: str, root: str) -> str:
    """`device` moved onto the disk that holds `root`.

    Guests built from one base share filesystem UUIDs, so the fstab of the second disk
    resolves `UUID=...` to a partition of the first; the partition number is right.
    """
    root_disk, match = disk_of(root), _PARTITION.match(device)
    return f"{root_disk}{match.group(2)}" if root_disk and match else device


def mount_order(mountpoints: Mapping[str, str]) -> list[tuple[str, str]]:
    """(mountpoint, device) pairs, parents first: "/" before "/boot" before "/boot/efi"."""
    return sorted(mountpoints.items(), key=lambda item: (len(item[0]), item[0]))


_INSTALLERS = {
    "apt": "export DEBIAN_FRONTEND=noninteractive; apt-get -q update && "
           "apt-get -q -y install --no-install-recommends {}",
    "dnf": "dnf -y install {}",
    "yum": "yum -y install {}",
    "zypper": "zypper -n install {}",
    "apk": "apk add {}",
    "pacman": "pacman -Sy --noconfirm {}",
}


def install_command(package_manager: str, packages: Sequence[str]) -> str:
    """The shell command that installs `packages` with the guest's package manager."""
    template = _INSTALLERS.get(package_manager)
    if template is None:
        raise ValueError(f"no supported package manager in the guest ({package_manager})")
    return template.format(" ".join(shlex.quote(p) for p in packages))


def firstboot_unit() -> str:
    """The systemd unit that runs the first-boot scripts once."""
    return f"""\
[Unit]
Description=mclu first-boot commands
Wants=network-online.target
After=network-online.target
ConditionPathExistsGlob={FIRSTBOOT_DIR}/scripts/*.sh

[Service]
Type=oneshot
ExecStart=/bin/sh {FIRSTBOOT_DIR}/run.sh
TimeoutSec=0
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""


def firstboot_runner() -> str:
    """The script the unit runs: each script once, in name order, then disable the unit."""
    return f"""\
#!/bin/sh
# mclu: run each first-boot script once, in name order, then disable this service.
dir={FIRSTBOOT_DIR}
mkdir -p "$dir/done"
for script in "$dir"/scripts/*.sh; do
    [ -e "$script" ] || continue
    name=$(basename "$script")
    echo "mclu-firstboot: running $name"
    if sh "$script"; then
        echo "mclu-firstboot: $name done"
    else
        echo "mclu-firstboot: $name failed with exit status $?"
    fi
    mv "$script" "$dir/done/$name"
done
rm -f {_WANTS_LINK}
"""


# --- libguestfs, behind a typed interface ---------------------------------------------------


class _GuestFS(Protocol):
    """The part of a guestfs.GuestFS handle (python_return_dict=True) this module uses."""

    def set_trace(self, trace: bool) -> None: ...
    def set_memsize(self, memsize: int) -> None: ...
    def set_smp(self, smp: int) -> None: ...
    def set_network(self, network: bool) -> None: ...
    def add_drive_opts(self, filename: str, *, format: str | None = None,
                       protocol: str | None = None, server: list[str] | None = None) -> None: ...
    def launch(self) -> None: ...
    def shutdown(self) -> None: ...
    def close(self) -> None: ...
    def list_devices(self) -> list[str]: ...
    def inspect_os(self) -> list[str]: ...
    def inspect_get_mountpoints(self, root: str) -> dict[str, str]: ...
    def inspect_get_package_management(self, root: str) -> str: ...
    def mount(self, mountable: str, mountpoint: str) -> None: ...
    def mountpoints(self) -> dict[str, str]: ...
    def umount_all(self) -> None: ...
    def part_get_parttype(self, device: str) -> str: ...
    def part_expand_gpt(self, device: str) -> None: ...
    def part_list(self, device: str) -> list[dict[str, int]]: ...
    def part_resize(self, device: str, partnum: int, endsect: int) -> None: ...
    def blockdev_getss(self, device: str) -> int: ...
    def blockdev_getsize64(self, device: str) -> int: ...
    def vfs_type(self, mountable: str) -> str: ...
    def e2fsck(self, device: str, *, correct: bool = ...) -> None: ...
    def resize2fs(self, device: str) -> None: ...
    def xfs_growfs(self, path: str, *, datasec: bool = ...) -> None: ...
    def btrfs_filesystem_resize(self, mountpoint: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def is_dir(self, path: str, *, followsymlinks: bool = ...) -> bool: ...
    def is_file(self, path: str, *, followsymlinks: bool = ...) -> bool: ...
    def is_symlink(self, path: str) -> bool: ...
    def read_file(self, path: str) -> bytes: ...
    def write(self, path: str, content: bytes) -> None: ...
    def mkdir_p(self, path: str) -> None: ...
    def chmod(self, mode: int, path: str) -> None: ...
    def chown(self, owner: int, group: int, path: str) -> None: ...
    def rm_f(self, path: str) -> None: ...
    def glob_expand(self, pattern: str) -> list[str]: ...
    def ln_sf(self, target: str, linkname: str) -> None: ...
    def touch(self, path: str) -> None: ...
    def sh(self, command: str) -> str: ...


@contextlib.contextmanager
def _appliance(drives: Sequence[Drive], *, guests: str, network: bool, memsize: int,
               smp: int) -> Iterator[_GuestFS]:
    """A launched appliance with `drives` as /dev/sda, /dev/sdb, ... in order.

    Always ends with shutdown (which syncs the disks) and close; a shutdown error is raised
    only when the body succeeded. `guests` names the guests in errors of launch and shutdown.
    """
    import guestfs  # Debian's python3-guestfs: not on PyPI, so imported only when used

    g = cast(_GuestFS, guestfs.GuestFS(python_return_dict=True))
    try:
        g.set_trace(False)  # the trace would print private host keys and the password hash
        g.set_memsize(memsize)
        g.set_smp(smp)
        g.set_network(network)
        with _step(guests, "launch the libguestfs appliance", ""):
            for drive in drives:
                if drive.nbd_socket:
                    g.add_drive_opts("", format="raw", protocol="nbd",
                                     server=[f"unix:{drive.nbd_socket}"])
                else:
                    g.add_drive_opts(str(drive.path), format=drive.format)
            g.launch()
        try:
            yield g
        except BaseException:
            with contextlib.suppress(RuntimeError):
                g.shutdown()
            raise
        with _step(guests, "shut the libguestfs appliance down (syncing the disks)", ""):
            g.shutdown()
    finally:
        g.close()


# --- one build's work -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    drive: Drive
    personalization: Personalization

    @property
    def hostname(self) -> str:
        return self.personalization.hostname


@contextlib.contextmanager
def _step(guest: str, step: str, drive: str) -> Iterator[None]:
    """Turn a failure inside the block into PersonalizationFailed naming `step`."""
    started = time.monotonic()
    try:
        yield
    except errors.PersonalizationFailed:
        raise
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as error:
        raise errors.PersonalizationFailed(guest, step, str(error), drive) from error
    log.debug("%s: %s (%.1f s)", guest, step, time.monotonic() - started)


def _check(job: _Job) -> None:
    """Refuse a bad hostname, key or path before the appliance costs its launch."""
    p = job.personalization
    with _step(p.hostname, "check the request", job.drive.label):
        check_hostname(p.hostname)
        if any("\n" in key or not key.strip() for key in p.ssh_authorized_keys):
            raise ValueError("an ssh authorized key must be one non-empty line")
        if p.grow_partition:
            partition_number(p.grow_partition)
        for path, _ in p.customization.files:
            if not path.startswith("/"):
                raise ValueError(f"file path {path!r} is not absolute")


def _root_password_hash(job: _Job) -> str | None:
    """SHA-512 crypt of the first line of the password file; openssl reads it on stdin."""
    path = job.personalization.root_password_file
    if path is None:
        return None
    with _step(job.hostname, "root password", job.drive.label):
        with open(path, encoding="utf-8") as file:
            password = file.readline().rstrip("\r\n")
        if not password:
            raise ValueError(f"the first line of the password file {path} is empty")
        result = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n",
                                capture_output=True, text=True, check=False)
        del password
        if result.returncode != 0 or not result.stdout.startswith("$6$"):
            raise ValueError(f"openssl passwd failed: {result.stderr.strip()}")
        return result.stdout.strip()


class _HostKeys:
    """ssh host keys for every job, generated by ssh-keygen while the appliance boots."""

    def __init__(self, jobs: Sequence[_Job], directory: Path) -> None:
        self._jobs = jobs
        self._dir = directory
        self._procs: list[list[subprocess.Popen[bytes]]] = []

    def __enter__(self) -> _HostKeys:
        try:
            for index, job in enumerate(self._jobs):
                (self._dir / str(index)).mkdir(mode=0o700)
                self._procs.append([])
                for kind in HOST_KEY_TYPES:
                    self._procs[-1].append(subprocess.Popen(
                        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"root@{job.hostname}",
                         "-f", str(self._key(index, kind))],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE))
        except OSError as error:
            self.__exit__()
            names = ", ".join(job.hostname for job in self._jobs)
            raise errors.PersonalizationFailed(names, "generate ssh host keys",
                                               str(error)) from error
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in (p for procs in self._procs for p in procs):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()

    def _key(self, index: int, kind: str) -> Path:
        return self._dir / str(index) / f"ssh_host_{kind}_key"

    def get(self, index: int) -> dict[str, bytes]:
        """{file name in /etc/ssh: content} of job `index`'s keys, private and public."""
        for proc in self._procs[index]:
            _, stderr = proc.communicate()
            if proc.returncode != 0:
                raise errors.PersonalizationFailed(
                    self._jobs[index].hostname, "generate ssh host keys",
                    f"ssh-keygen failed: {stderr.decode(errors='replace')}")
        keys: dict[str, bytes] = {}
        for kind in HOST_KEY_TYPES:
            private = self._key(index, kind)
            keys[private.name] = private.read_bytes()
            keys[private.name + ".pub"] = private.with_name(private.name + ".pub").read_bytes()
        return keys


def _roots_by_drive(g: _GuestFS, count: int) -> list[str | None]:
    """The inspected OS root of each drive, by drive index (None where none was found)."""
    devices = g.list_devices()
    roots: list[str | None] = [None] * count
    for root in g.inspect_os():
        disk = disk_of(root)
        if disk in devices and roots[devices.index(disk)] is None:
            roots[devices.index(disk)] = root
        elif disk is None and count == 1:
            roots[0] = root  # an LVM root; several copies of one LVM base cannot be told apart
        else:
            log.warning("ignoring OS root %s: not one per plain disk", root)
    return roots


def _personalize_drive(g: _GuestFS, index: int, job: _Job, root: str | None,
                       password_hash: str | None, host_keys: dict[str, bytes]) -> None:
    """Every step for one disk, each failure named by its step."""
    p, c = job.personalization, job.personalization.customization
    step = functools.partial(_step, p.hostname, drive=job.drive.label)
    with step("inspect"):
        if root is None:
            raise ValueError("no operating system found on the disk")
        device = g.list_devices()[index]
    grow_mounted: Callable[[], None] | None = None
    if p.grow_partition:
        with step(f"grow {p.grow_partition}"):
            grow_mounted = _grow(g, device, partition_number(p.grow_partition))
    with step("mount filesystems"):
        _mount(g, root)
    if grow_mounted:
        with step(f"grow the filesystem on {p.grow_partition}"):
            grow_mounted()
    with step("hostname"):
        _set_hostname(g, p.hostname)
    with step("machine-id"):
        _set_machine_id(g)
    if p.ssh_authorized_keys:
        with step("root's authorized_keys"):
            _add_authorized_keys(g, p.ssh_authorized_keys)
    with step("ssh host keys"):
        _replace_host_keys(g, host_keys)
    if password_hash:
        with step("root password"):
            _set_root_password(g, password_hash)
    if c.packages:
        with step(f"install packages ({' '.join(c.packages)})"):
            _install_packages(g, root, c.packages)
    for path, content in c.files:
        with step(f"write file {path}"):
            _write_file(g, path, content)
    for number, command in enumerate(c.run, 1):
        with step(f"run command {number} ({_short(command)})"):
            g.sh(command)
    if c.firstboot:
        with step("firstboot"):
            _install_firstboot(g, c.firstboot)
    with step("selinux relabel"):
        if g.is_file("/etc/selinux/config"):
            g.touch("/.autorelabel")
    with step("unmount"):
        g.umount_all()


def _short(command: str, width: int = 60) -> str:
    line = " ".join(command.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def _mount(g: _GuestFS, root: str) -> None:
    """Mount the guest's filesystems at /sysroot as its fstab says, parents first."""
    for mountpoint, device in mount_order(g.inspect_get_mountpoints(root)):
        try:
            g.mount(on_disk_of(device, root), mountpoint)
        except RuntimeError as error:
            if mountpoint == "/":
                raise
            log.warning("not mounting %s on %s: %s", device, mountpoint, error)


def _grow(g: _GuestFS, device: str, partnum: int) -> Callable[[], None] | None:
    """Grow partition `partnum` to the end of `device`, and its filesystem if unmounted.

    Returns what is left to do once mounted (xfs and btrfs grow only mounted), or None.
    """
    if g.part_get_parttype(device) == "gpt":
        g.part_expand_gpt(device)  # the backup GPT moves to the disk's new end
        tail = 34  # the backup GPT's sectors
    else:
        tail = 1
    sector = g.blockdev_getss(device)
    last_sector = g.blockdev_getsize64(device) // sector - tail
    partition = max(g.part_list(device), key=lambda part: part["part_end"])
    if partition["part_num"] != partnum:
        raise ValueError(f"partition {partnum} is not the last one on the disk")
    if last_sector - partition["part_end"] // sector < _GROW_MIN_SECTORS:
        return None  # the disk is no bigger than the template's
    g.part_resize(device, partnum, last_sector)
    part = f"{device}{partnum}"
    fstype = g.vfs_type(part)
    if fstype in ("ext2", "ext3", "ext4"):
        g.e2fsck(part, correct=True)  # resize2fs refuses a filesystem not freshly checked
        g.resize2fs(part)
        return None
    if fstype in ("xfs", "btrfs"):
        return functools.partial(_grow_mounted, g, part, fstype)
    raise ValueError(f"cannot grow a {fstype or 'unknown'} filesystem on {part}")


def _grow_mounted(g: _GuestFS, part: str, fstype: str) -> None:
    mountpoint = g.mountpoints().get(part)
    if mountpoint is None:
        raise ValueError(f"{part} is not mounted, so its {fstype} filesystem cannot grow")
    if fstype == "xfs":
        g.xfs_growfs(mountpoint, datasec=True)
    else:
        g.btrfs_filesystem_resize(mountpoint)


def _read_text(g: _GuestFS, path: str) -> str:
    return g.read_file(path).decode("utf-8", errors="surrogateescape") if g.exists(path) else ""


def _write_text(g: _GuestFS, path: str, text: str) -> None:
    g.write(path, text.encode("utf-8", errors="surrogateescape"))


def _set_hostname(g: _GuestFS, hostname: str) -> None:
    _write_text(g, "/etc/hostname", hostname + "\n")
    hosts = _read_text(g, "/etc/hosts") or "127.0.0.1\tlocalhost\n"
    _write_text(g, "/etc/hosts", hosts_with_hostname(hosts, hostname))


def _set_machine_id(g: _GuestFS) -> None:
    """A fresh random machine-id; also dbus's old copy where it is a file of its own."""
    machine_id = secrets.token_hex(16) + "\n"
    _write_text(g, "/etc/machine-id", machine_id)
    g.chmod(0o444, "/etc/machine-id")
    dbus = "/var/lib/dbus/machine-id"
    if g.is_file(dbus) and not g.is_symlink(dbus):
        _write_text(g, dbus, machine_id)


def _add_authorized_keys(g: _GuestFS, keys: Sequence[str]) -> None:
    ssh_dir = root_home(_read_text(g, "/etc/passwd")).rstrip("/") + "/.ssh"
    path = f"{ssh_dir}/authorized_keys"
    g.mkdir_p(ssh_dir)
    g.chown(0, 0, ssh_dir)
    g.chmod(0o700, ssh_dir)
    _write_text(g, path, authorized_keys_with(_read_text(g, path), keys))
    g.chown(0, 0, path)
    g.chmod(0o600, path)


def _replace_host_keys(g: _GuestFS, keys: Mapping[str, bytes]) -> None:
    """Swap the template's ssh host keys for this guest's own (only where /etc/ssh exists)."""
    if not g.is_dir("/etc/ssh"):
        return
    for old in g.glob_expand("/etc/ssh/ssh_host_*"):
        g.rm_f(old)
    for name, content in keys.items():
        path = f"/etc/ssh/{name}"
        g.write(path, content)
        g.chown(0, 0, path)
        g.chmod(0o644 if name.endswith(".pub") else 0o600, path)


def _set_root_password(g: _GuestFS, password_hash: str) -> None:
    today = int(time.time() // 86400)
    shadow = shadow_with_root_password(_read_text(g, "/etc/shadow"), password_hash, today)
    _write_text(g, "/etc/shadow", shadow)


def _install_packages(g: _GuestFS, root: str, packages: Sequence[str]) -> None:
    manager = g.inspect_get_package_management(root)
    command = install_command(manager, packages)
    try:
        g.sh(command)
    except RuntimeError as error:
        raise ValueError(f"{manager} failed; installing packages needs network access from "
                         f"the libguestfs appliance on the controller: {error}") from error


def _write_file(g: _GuestFS, path: str, content: str) -> None:
    g.mkdir_p(path.rsplit("/", 1)[0] or "/")
    _write_text(g, path, content)
    g.chmod(0o644, path)


def _install_firstboot(g: _GuestFS, commands: Sequence[str]) -> None:
    """Scripts, runner and an enabled oneshot unit that runs them once at first boot."""
    systemd = any(g.exists(p) for p in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd"))
    if not (systemd and g.is_dir("/etc/systemd/system")):
        raise ValueError("firstboot commands need systemd in the guest, and it has none")
    scripts = f"{FIRSTBOOT_DIR}/scripts"
    g.mkdir_p(scripts)
    first = len(g.glob_expand(f"{scripts}/*.sh")) + 1
    for number, command in enumerate(commands, first):
        path = f"{scripts}/{number:04d}.sh"
        _write_text(g, path, f"#!/bin/sh\n{command}\n")
        g.chmod(0o755, path)
    _write_text(g, f"{FIRSTBOOT_DIR}/run.sh", firstboot_runner())
    g.chmod(0o755, f"{FIRSTBOOT_DIR}/run.sh")
    _write_text(g, _UNIT_PATH, firstboot_unit())
    g.chmod(0o644, _UNIT_PATH)
    g.mkdir_p(_WANTS_LINK.rsplit("/", 1)[0])
    g.ln_sf(_UNIT_PATH, _WANTS_LINK)
