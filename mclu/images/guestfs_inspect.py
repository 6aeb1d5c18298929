"""Find each drive's OS root, mount points and package manager in a launched appliance.

libguestfs's `inspect_os` costs about 7 s per disk under TCG, mostly augeas loading to read
fstab, and inspects every disk of the appliance at once. The light inspection here asks
only what personalising needs, per drive, in a few calls: the drive's partitions and their
blkid tags, each candidate filesystem (ext2/3/4, xfs, btrfs) mounted read-only in turn to
find the one root, its /etc/os-release and /etc/fstab read and parsed in Python
(`guest_text`). Where it cannot decide (LVM, MD RAID, btrfs subvolumes, no root or several)
it says so in the log and falls back to `inspect_os`, run once for all drives.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from mclu.images import guest_text

__all__ = ["GuestFS", "Inspector", "OSRoot"]

log = logging.getLogger(__name__)

ROOT_TYPES = ("ext2", "ext3", "ext4", "xfs", "btrfs")
# Filesystem types that hold other filesystems the light path cannot open.
_CONTAINERS = {
    "LVM2_member": "LVM",
    "linux_raid_member": "MD RAID",
    "crypto_LUKS": "LUKS",
    "zfs_member": "ZFS",
    "isw_raid_member": "fake RAID",
    "ddf_raid_member": "fake RAID",
}


class GuestFS(Protocol):
    """The part of a guestfs.GuestFS handle (python_return_dict=True) mclu uses."""

    def set_trace(self, trace: bool) -> None: ...
    def set_memsize(self, memsize: int) -> None: ...
    def set_smp(self, smp: int) -> None: ...
    def set_network(self, network: bool) -> None: ...
    def set_tmpdir(self, tmpdir: str | None) -> None: ...
    def add_drive_opts(
        self,
        filename: str,
        *,
        format: str | None = None,
        protocol: str | None = None,
        server: list[str] | None = None,
    ) -> None: ...
    def launch(self) -> None: ...
    def get_pid(self) -> int: ...
    def shutdown(self) -> None: ...
    def close(self) -> None: ...
    def list_devices(self) -> list[str]: ...
    def list_partitions(self) -> list[str]: ...
    def blkid(self, device: str) -> dict[str, str]: ...
    def ls(self, directory: str) -> list[str]: ...
    def inspect_os(self) -> list[str]: ...
    def inspect_get_mountpoints(self, root: str) -> dict[str, str]: ...
    def inspect_get_package_management(self, root: str) -> str: ...
    def mount(self, mountable: str, mountpoint: str) -> None: ...
    def mount_ro(self, mountable: str, mountpoint: str) -> None: ...
    def umount(self, pathordevice: str) -> None: ...
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
    def pread(self, path: str, count: int, offset: int) -> bytes: ...
    def write(self, path: str, content: bytes) -> None: ...
    def mkdir_p(self, path: str) -> None: ...
    def chmod(self, mode: int, path: str) -> None: ...
    def chown(self, owner: int, group: int, path: str) -> None: ...
    def rm_f(self, path: str) -> None: ...
    def glob_expand(self, pattern: str) -> list[str]: ...
    def ln_sf(self, target: str, linkname: str) -> None: ...
    def touch(self, path: str) -> None: ...
    def sh(self, command: str) -> str: ...


@dataclass(frozen=True)
class OSRoot:
    """What personalising needs to know of one drive's operating system."""

    root: str  # the root filesystem's device, e.g. /dev/sdb1
    mountpoints: Mapping[str, str]  # {mountpoint: device}, devices on this drive
    package_management: str  # as libguestfs names it: "apt", "dnf", ... or "unknown"
    light: bool  # found by the light inspection, not by inspect_os
    mounted: bool = False  # the root is left mounted read-write on /


_CHUNK = 1 << 20  # pread's answer must fit a libguestfs message (4 MiB)


def read_file(g: GuestFS, path: str) -> bytes:
    """The content of a file of the mounted guest (symlinks resolve inside the guest).

    guestfs's own read_file downloads through a temporary file on the host and costs about
    0.35 s under TCG; pread is answered by the daemon alone in about 2 ms.
    """
    chunks, offset = [], 0
    while chunk := g.pread(path, _CHUNK, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


class Inspector:
    """Inspects the drives of one launched appliance, one drive at a time.

    Nothing may be mounted while `inspect` runs. It leaves nothing mounted, but for the root
    that the light inspection found when asked to keep it (then `OSRoot.mounted`).
    """

    def __init__(self, g: GuestFS, devices: Sequence[str]) -> None:
        self._g = g
        self._devices = devices
        self._partitions: list[str] | None = None
        self._full: list[OSRoot | None] | None = None
        self._mounted: str | None = None  # the candidate now mounted on /

    def inspect(self, index: int, guest: str, *, keep_root_mounted: bool = False) -> OSRoot:
        """The OS of drive `index`.

        With `keep_root_mounted` the candidates are mounted read-write, as the edits mount
        them anyway, and the root stays mounted on /: one mount and one umount less.

        :raises ValueError: no operating system on the drive, even for inspect_os.
        :raises RuntimeError: a libguestfs call failed.
        """
        device, started = self._devices[index], time.monotonic()
        self._mounted = None  # whatever an earlier call kept mounted, the caller unmounted
        found: OSRoot | None
        try:
            found = self._light(device, keep_root_mounted)
            log.info(
                "%s: light inspection of %s: root %s, package manager %s (%.1f s)",
                guest,
                device,
                found.root,
                found.package_management,
                time.monotonic() - started,
            )
        except guest_text.CannotDecide as why:
            self._unmount()
            log.info(
                "%s: light inspection cannot decide on %s (%s): falling back to "
                "libguestfs inspect_os",
                guest,
                device,
                why,
            )
            found = self._full_inspection()[index]
        except BaseException:
            with contextlib.suppress(RuntimeError):
                self._unmount()
            raise
        if found is None:
            raise ValueError("no operating system found on the disk")
        return found

    def _light(self, device: str, keep: bool) -> OSRoot:
        if self._partitions is None:
            self._partitions = self._g.list_partitions()
        parts = [p for p in self._partitions if guest_text.disk_of(p) == device]
        tags = {dev: self._blkid(dev) for dev in parts or [device]}
        for dev, tag in tags.items():
            if tag.get("TYPE") in _CONTAINERS:
                raise guest_text.CannotDecide(f"{_CONTAINERS[tag['TYPE']]} on {dev}")
        probes = {
            dev: self._probe(dev, keep)
            for dev, tag in tags.items()
            if tag.get("TYPE") in ROOT_TYPES
        }
        root = guest_text.choose_root([dev for dev, probe in probes.items() if probe])
        os_release, fstab = probes[root] or ("", "")
        fields = guest_text.parse_os_release(os_release)
        if not fields.get("ID"):
            raise guest_text.CannotDecide(f"no ID in the os-release of {root}")
        mountpoints = guest_text.resolve_fstab(guest_text.parse_fstab(fstab), root, device, tags)
        if self._mounted != root or not keep:
            self._unmount()
        return OSRoot(
            root,
            mountpoints,
            guest_text.package_management(fields),
            light=True,
            mounted=self._mounted == root,
        )

    def _blkid(self, device: str) -> dict[str, str]:
        try:
            return self._g.blkid(device)
        except RuntimeError:  # blkid finds nothing it knows on the device
            return {}

    def _probe(self, device: str, keep: bool) -> tuple[str, str] | None:
        """(os-release, fstab) of `device` if it is an OS root, else None.

        Mounted read-only unless `keep`; a root stays mounted (if `keep`) until the next
        candidate is probed.
        """
        self._unmount()
        try:
            (self._g.mount if keep else self._g.mount_ro)(device, "/")
        except RuntimeError as error:
            raise guest_text.CannotDecide(f"cannot mount {device}: {error}") from error
        self._mounted = device
        try:
            etc = self._g.ls("/etc")
        except RuntimeError:  # no /etc directory
            etc = []
        if not guest_text.is_os_root(etc):
            self._unmount()
            return None
        found = (
            self._read(["/etc/os-release", "/usr/lib/os-release"]),
            self._read(["/etc/fstab"] if "fstab" in etc else []),
        )
        if not keep:
            self._unmount()
        return found

    def _unmount(self) -> None:
        if self._mounted is not None:
            self._mounted = None
            self._g.umount("/")

    def _read(self, paths: Sequence[str]) -> str:
        """The first of `paths` that reads, or ""."""
        for path in paths:
            try:
                return read_file(self._g, path).decode("utf-8", errors="replace")
            except RuntimeError:
                continue
        return ""

    def _full_inspection(self) -> list[OSRoot | None]:
        """libguestfs's inspection of every drive, run once and kept."""
        if self._full is None:
            g = self._g
            self._full = [
                None
                if root is None
                else OSRoot(
                    root,
                    {
                        mountpoint: guest_text.on_disk_of(dev, root)
                        for mountpoint, dev in g.inspect_get_mountpoints(root).items()
                    },
                    g.inspect_get_package_management(root),
                    light=False,
                )
                for root in roots_by_drive(g.inspect_os(), self._devices)
            ]
        return self._full


def roots_by_drive(roots: Sequence[str], devices: Sequence[str]) -> list[str | None]:
    """inspect_os's roots, by drive index (None where none was found)."""
    by_drive: list[str | None] = [None] * len(devices)
    for root in roots:
        disk = guest_text.disk_of(root)
        if disk in devices and by_drive[devices.index(disk)] is None:
            by_drive[devices.index(disk)] = root
        elif disk is None and len(devices) == 1:
            by_drive[0] = root  # an LVM root; several copies of one LVM base cannot be told apart
        else:
            log.warning("ignoring OS root %s: not one per plain disk", root)
    return by_drive
