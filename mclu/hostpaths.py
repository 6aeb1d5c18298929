"""Where mclu keeps things on a host: the one place that names its files and directories.

Pure: paths only. The command lines that touch them are in `mclu.hosts.commands`.
"""

from __future__ import annotations

import posixpath

from mclu.model import BaseImage

CACHE_DIR = "mclu-templates"  # under a host's image directory: one file per base and revision
LOCK_DIR = ".mclu-locks"  # under a host's image directory: one lock file per guest
LOCK_SUFFIX = ".lock"  # a guest's lock file: `NAME.lock` in LOCK_DIR
# The names a run gives the files it makes and then renames or removes; `mclu cleanup` knows
# the ones an interrupted run left by them (`mclu.read.storage`).
PARTIAL_INFIX = ".partial-"  # `DEST.partial-TOKEN[-GUEST]`: a file being sent or copied
NEW_SUFFIX = ".mclu-new"  # `DISK.mclu-new`: a disk made aside, then linked into place
REBUILD_SUFFIX = ".mclu-rebuild"  # `DISK.mclu-rebuild`: a rebuild's replacement disk
OLD_SUFFIX = ".mclu-old"  # `DISK.mclu-old`: a rebuild's old disk while the new one is tried
# `IMAGE_DIR/NAME.mclu-seed.iso`: a guest's NoCloud seed (cloud-init templates), attached as a
# CD-ROM until the guest is ready, then removed.
SEED_SUFFIX = ".mclu-seed.iso"
DISK_SUFFIXES = (NEW_SUFFIX, REBUILD_SUFFIX)  # a disk being made, after its guest's disk name
# find(1) -name patterns of those files, as the storage scan looks for them
LEFTOVER_PATTERNS = (
    f"*{PARTIAL_INFIX}*",
    f"*{NEW_SUFFIX}",
    f"*{REBUILD_SUFFIX}",
    f"*{SEED_SUFFIX}",
)
NBD_SOCKET_DIR = "/tmp/mclu-nbd"  # `/tmp/mclu-nbd[-GUEST].TOKEN`: an NBD server's socket
# Where the serial console is logged on the host: `mclu console` and tests read it to see
# the guest boot. libvirt's own qemu log directory, which virtlogd may write to.
CONSOLE_LOG = "/var/log/libvirt/qemu/{name}-console.log"


def cache_dir(image_dir: str) -> str:
    """Where a host keeps template bases: a directory of mclu's own inside the image dir."""
    return posixpath.join(image_dir, CACHE_DIR)


def base_path(image_dir: str, base: BaseImage) -> str:
    """Where a host caches `base`."""
    return posixpath.join(image_dir, CACHE_DIR, base.cache_name)


def disk_path(image_dir: str, name: str, *, full_copy: bool) -> str:
    """A guest's disk: a qcow2 overlay on the cached base, or a raw full copy."""
    return posixpath.join(image_dir, f"{name}.img" if full_copy else f"{name}.qcow2")


def seed_path(image_dir: str, name: str) -> str:
    """Guest `name`'s NoCloud seed, next to its disk."""
    return posixpath.join(image_dir, f"{name}{SEED_SUFFIX}")


def seed_owner(path: str) -> str | None:
    """The guest whose seed `path` is, by its name; None when it is not a seed's name."""
    base = posixpath.basename(path)
    return base[: -len(SEED_SUFFIX)] or None if base.endswith(SEED_SUFFIX) else None


def lock_dir(image_dir: str) -> str:
    """Where a host keeps the guests' lock files (`mclu.act.locks`)."""
    return posixpath.join(image_dir, LOCK_DIR)


def lock_file(image_dir: str, name: str) -> str:
    """The lock file of guest `name`; the caller checks that name is a guest name."""
    return posixpath.join(image_dir, LOCK_DIR, f"{name}{LOCK_SUFFIX}")


def partial_file(dest: str, token: str, owner: str | None = None) -> str:
    """The name beside `dest` of the file being written in its place: `DEST.partial-TOKEN`
    (the caller draws TOKEN at random), with `-OWNER` when a guest's lock covers the run."""
    return f"{dest}{PARTIAL_INFIX}{token}{'-' + owner if owner else ''}"


def new_file(path: str) -> str:
    """Where a disk is made before it is linked into place at `path`."""
    return path + NEW_SUFFIX


def rebuild_disk(disk: str) -> str:
    """Where a rebuild makes the replacement of `disk`, beside it."""
    return disk + REBUILD_SUFFIX


def old_disk(disk: str) -> str:
    """The second name a rebuild gives the old `disk` while the new one is tried."""
    return disk + OLD_SUFFIX


def nbd_socket_dir(token: str, owner: str | None = None) -> str:
    """A private directory for an NBD server's socket (the caller draws TOKEN at random),
    named after the guest whose lock the caller holds, if any."""
    return f"{NBD_SOCKET_DIR}{'-' + owner if owner else ''}.{token}"


def console_log(name: str) -> str:
    """The host path of a guest's serial console log."""
    return CONSOLE_LOG.format(name=name)
