"""Where mclu keeps things on a host: the one place that names its files and directories.

Pure: paths only. The command lines that touch them are in `mclu.hosts.commands`.
"""

from __future__ import annotations

import posixpath

from mclu.model import BaseImage

CACHE_DIR = "mclu-templates"  # under a host's image directory: one file per base and revision
LOCK_DIR = ".mclu-locks"  # under a host's image directory: one lock file per guest
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


def lock_dir(image_dir: str) -> str:
    """Where a host keeps the guests' lock files (`mclu.act.locks`)."""
    return posixpath.join(image_dir, LOCK_DIR)


def lock_file(image_dir: str, name: str) -> str:
    """The lock file of guest `name`; the caller checks that name is a guest name."""
    return posixpath.join(image_dir, LOCK_DIR, f"{name}.lock")


def console_log(name: str) -> str:
    """The host path of a guest's serial console log."""
    return CONSOLE_LOG.format(name=name)
