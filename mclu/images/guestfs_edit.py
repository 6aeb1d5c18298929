"""The edits that personalise a mounted guest, each a few libguestfs calls.

Every function takes a launched handle with the guest's filesystems mounted (except `grow`,
which runs before mounting) and raises RuntimeError (libguestfs) or ValueError (a refused
edit); the caller names the step in its error.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence

from mclu import model
from mclu.images import guest_text, guestfs_inspect
from mclu.images.guestfs_inspect import GuestFS

log = logging.getLogger(__name__)

_GROW_MIN_SECTORS = 2048  # below 1 MiB of slack a partition is already "at the end"


def mount(g: GuestFS, mountpoints: Mapping[str, str], *, root_mounted: bool = False) -> None:
    """Mount {mountpoint: device} at /sysroot, parents first; only "/" must succeed.

    `root_mounted`: "/" is mounted already (by the inspection).
    """
    for mountpoint, device in guest_text.mount_order(mountpoints):
        if mountpoint == "/" and root_mounted:
            continue
        try:
            g.mount(device, mountpoint)
        except RuntimeError as error:
            if mountpoint == "/":
                raise
            log.warning("not mounting %s on %s: %s", device, mountpoint, error)


def grow(g: GuestFS, device: str, partnum: int) -> Callable[[], None] | None:
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


def _grow_mounted(g: GuestFS, part: str, fstype: str) -> None:
    mountpoint = g.mountpoints().get(part)
    if mountpoint is None:
        raise ValueError(f"{part} is not mounted, so its {fstype} filesystem cannot grow")
    if fstype == "xfs":
        g.xfs_growfs(mountpoint, datasec=True)
    else:
        g.btrfs_filesystem_resize(mountpoint)


def _read_text(g: GuestFS, path: str) -> str:
    if not g.exists(path):
        return ""
    return guestfs_inspect.read_file(g, path).decode("utf-8", errors="surrogateescape")


def _write_text(g: GuestFS, path: str, text: str) -> None:
    g.write(path, text.encode("utf-8", errors="surrogateescape"))


def set_hostname(g: GuestFS, hostname: str) -> None:
    _write_text(g, "/etc/hostname", hostname + "\n")
    hosts = _read_text(g, "/etc/hosts") or "127.0.0.1\tlocalhost\n"
    _write_text(g, "/etc/hosts", guest_text.hosts_with_hostname(hosts, hostname))


def set_machine_id(g: GuestFS) -> None:
    """A fresh random machine-id; also dbus's old copy where it is a file of its own."""
    machine_id = secrets.token_hex(16) + "\n"
    _write_text(g, "/etc/machine-id", machine_id)
    g.chmod(0o444, "/etc/machine-id")
    dbus = "/var/lib/dbus/machine-id"
    if g.is_file(dbus) and not g.is_symlink(dbus):
        _write_text(g, dbus, machine_id)


def add_authorized_keys(g: GuestFS, keys: Sequence[str]) -> None:
    ssh_dir = guest_text.root_home(_read_text(g, "/etc/passwd")).rstrip("/") + "/.ssh"
    path = f"{ssh_dir}/authorized_keys"
    g.mkdir_p(ssh_dir)
    g.chown(0, 0, ssh_dir)
    g.chmod(0o700, ssh_dir)
    _write_text(g, path, guest_text.authorized_keys_with(_read_text(g, path), keys))
    g.chown(0, 0, path)
    g.chmod(0o600, path)


def replace_host_keys(g: GuestFS, keys: Mapping[str, bytes]) -> bool:
    """Swap the template's ssh host keys for this guest's own (only where /etc/ssh exists);
    whether it wrote them: keys a guest was not given must not be recorded as its own."""
    if not g.is_dir("/etc/ssh"):
        return False
    for old in g.glob_expand("/etc/ssh/ssh_host_*"):
        g.rm_f(old)
    for name, content in keys.items():
        path = f"/etc/ssh/{name}"
        g.write(path, content)
        g.chown(0, 0, path)
        g.chmod(0o644 if name.endswith(".pub") else 0o600, path)
    return True


def set_root_password(g: GuestFS, password_hash: str) -> None:
    today = int(time.time() // 86400)
    shadow = guest_text.shadow_with_root_password(
        _read_text(g, "/etc/shadow"), password_hash, today
    )
    _write_text(g, "/etc/shadow", shadow)


def install_packages(g: GuestFS, manager: str, packages: Sequence[str]) -> None:
    """Install `packages` with the guest's package manager (`manager` as inspection names it)."""
    command = guest_text.install_command(manager, packages)
    try:
        g.sh(command)
    except RuntimeError as error:
        raise ValueError(
            f"{manager} failed; installing packages needs network access from "
            f"the libguestfs appliance on the controller: {error}"
        ) from error


def write_file(g: GuestFS, path: str, content: str) -> None:
    g.mkdir_p(path.rsplit("/", 1)[0] or "/")
    _write_text(g, path, content)
    g.chmod(0o644, path)


def install_firstboot(g: GuestFS, commands: Sequence[str]) -> None:
    """Scripts, runner and an enabled oneshot unit that runs them once at first boot."""
    systemd = any(g.exists(p) for p in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd"))
    if not (systemd and g.is_dir("/etc/systemd/system")):
        raise ValueError("firstboot commands need systemd in the guest, and it has none")
    scripts = f"{guest_text.FIRSTBOOT_DIR}/scripts"
    g.mkdir_p(scripts)
    first = len(g.glob_expand(f"{scripts}/*.sh")) + 1
    for number, command in enumerate(commands, first):
        path = f"{scripts}/{number:04d}.sh"
        _write_text(g, path, f"#!/bin/sh\n{command}\n")
        g.chmod(0o755, path)
    _write_text(g, f"{guest_text.FIRSTBOOT_DIR}/run.sh", guest_text.firstboot_runner())
    g.chmod(0o755, f"{guest_text.FIRSTBOOT_DIR}/run.sh")
    _write_text(g, guest_text.UNIT_PATH, guest_text.firstboot_unit())
    g.chmod(0o644, guest_text.UNIT_PATH)
    g.mkdir_p(guest_text.WANTS_LINK.rsplit("/", 1)[0])
    g.ln_sf(guest_text.UNIT_PATH, guest_text.WANTS_LINK)


def read_traits(g: GuestFS) -> model.GuestTraits:
    """How the mounted guest can show it booted: its guest agent, a serial login prompt, its
    ssh server."""
    return model.GuestTraits(
        agent=any(g.is_file(p, followsymlinks=True) for p in guest_text.AGENT_PATHS),
        ssh_server=next(
            (kind for p, kind in guest_text.SSH_SERVER_PATHS if g.is_file(p, followsymlinks=True)),
            "",
        ),
        serial_login=guest_text.serial_login(
            inittab=_read_text(g, guest_text.INITTAB),
            boot_configs=[_read_text(g, p) for p in guest_text.BOOT_CONFIGS],
            systemd=any(g.exists(p) for p in guest_text.SYSTEMD_PATHS),
            serial_getty_enabled=g.exists(guest_text.SERIAL_GETTY_WANTS),
        ),
    )
