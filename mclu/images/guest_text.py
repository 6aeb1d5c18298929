"""Pure text helpers for personalising a guest's disk: files in, files out, no I/O.

Edits of /etc files (hosts, shadow, authorized_keys), device-name arithmetic, the first-boot
unit, and the readers of /etc/fstab and /etc/os-release that the light inspection
(`guestfs_inspect`) decides with.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

FIRSTBOOT_DIR = "/var/lib/mclu/firstboot"
FIRSTBOOT_UNIT = "mclu-firstboot.service"
UNIT_PATH = f"/etc/systemd/system/{FIRSTBOOT_UNIT}"
WANTS_LINK = f"/etc/systemd/system/multi-user.target.wants/{FIRSTBOOT_UNIT}"

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


def public_host_keys(keys: Mapping[str, bytes]) -> tuple[str, ...]:
    """The public halves among host key files ({"ssh_host_ed25519_key.pub": b"ssh-ed25519
    AAAA... root@web1\n", ...}) as "TYPE BASE64" lines, without their comments, in file-name
    order: what the guest's metadata records and `mclu ssh` checks it against."""
    lines = []
    for name in sorted(keys):
        if name.endswith(".pub"):
            kind, base64, *_comment = keys[name].decode("ascii").split()
            lines.append(f"{kind} {base64}")
    return tuple(lines)


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


def drive_device(index: int) -> str:
    """libguestfs's name of the drive added `index`-th (from 0): /dev/sda ... /dev/sdz, /dev/sdaa.

    guestfs(3), "BLOCK DEVICE NAMING": names follow the order of add_drive, whatever the
    appliance's kernel calls the disks.
    """
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return f"/dev/sd{letters}"


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
rm -f {WANTS_LINK}
"""


# --- /etc/os-release ------------------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    """os-release(5) KEY=value lines as a dict; shell quoting and escapes removed."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#") or not key.isidentifier():
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        fields[key] = " ".join(words)
    return fields


_APT = {"debian", "ubuntu", "linuxmint", "kali", "raspbian", "pop", "altlinux"}
_RED_HAT = {"rhel", "centos", "rocky", "almalinux", "ol", "scientific", "cloudlinux", "circle"}
_SUSE = {"opensuse", "opensuse-leap", "opensuse-tumbleweed", "sles", "sled", "suse"}


def package_management(os_release: Mapping[str, str]) -> str:
    """The package manager of an os-release, named as libguestfs inspection names it.

    First match of ID, then of each ID_LIKE word; "unknown" when none is known.
    """
    major = _major(os_release.get("VERSION_ID", ""))
    for distro in [os_release.get("ID", ""), *os_release.get("ID_LIKE", "").split()]:
        distro = distro.lower()
        if distro in _APT:
            return "apt"
        if distro == "fedora":
            return "dnf" if major is None or major >= 22 else "yum"
        if distro in _RED_HAT:
            return "dnf" if major is None or major >= 8 else "yum"
        if distro in _SUSE or distro.startswith("opensuse"):
            return "zypper"
        if distro == "alpine":
            return "apk"
        if distro in ("arch", "manjaro", "endeavouros"):
            return "pacman"
    return "unknown"


def _major(version: str) -> int | None:
    match = re.match(r"\d+", version)
    return int(match.group()) if match else None


# --- /etc/fstab -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FstabEntry:
    """One line of /etc/fstab that names a local filesystem to mount."""

    spec: str  # as written, octal escapes undone: "UUID=...", "LABEL=...", "/dev/sda1"
    mountpoint: str
    vfstype: str
    options: tuple[str, ...]


# Not block-device filesystems, or not to be mounted by an offline edit.
_SKIPPED_TYPES = {
    "swap",
    "none",
    "tmpfs",
    "proc",
    "sysfs",
    "devpts",
    "devtmpfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "pstore",
    "efivarfs",
    "binfmt_misc",
    "autofs",
    "nfs",
    "nfs4",
    "cifs",
    "smbfs",
    "sshfs",
    "fuse",
    "9p",
    "virtiofs",
    "bind",
}
# libguestfs's inspection ignores these mount points too.
_SKIPPED_UNDER = ("/dev", "/proc", "/sys", "/media", "/selinux", "/run")
_REMOVABLE = re.compile(r"^/dev/(fd\d*|floppy|cdrom\d*|sr\d+|dvd\d*)$")


def parse_fstab(text: str) -> list[FstabEntry]:
    """The entries of an fstab(5) text that name local filesystems to mount.

    Skipped: comments, swap, pseudo and network filesystems (by type, or by a spec such
    as "tmpfs", "none" or "host:/export" that names no device), bind mounts, removable
    drives, and mount points under /dev, /proc, /sys, /run and /media.
    """
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith("#"):
            continue
        spec, mountpoint = _unescape(fields[0]), _canonical(_unescape(fields[1]))
        vfstype = fields[2] if len(fields) > 2 else "auto"
        options = tuple(fields[3].split(",")) if len(fields) > 3 else ("defaults",)
        if (
            vfstype in _SKIPPED_TYPES
            or "bind" in options
            or "rbind" in options
            or not mountpoint.startswith("/")
            or _REMOVABLE.match(spec)
            or not (spec.startswith("/dev/") or "=" in spec)
            or any(mountpoint == d or mountpoint.startswith(d + "/") for d in _SKIPPED_UNDER)
        ):
            continue
        entries.append(FstabEntry(spec, mountpoint, vfstype, options))
    return entries


def _unescape(field: str) -> str:
    """fstab's octal escapes: "\\040" is a space."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _canonical(path: str) -> str:
    """ "///usr//local//" → "/usr/local"; "/" stays "/"."""
    if not path.startswith("/"):
        return path
    return "/" + "/".join(part for part in path.split("/") if part)


class CannotDecide(Exception):
    """The light inspection cannot tell; libguestfs's full inspection has to."""


_GUEST_DISK = re.compile(r"^/dev/(?:[hsv]d|xvd)([a-z]+)(\d+)$")
_BY_TAG = {
    "/dev/disk/by-uuid/": "UUID",
    "/dev/disk/by-label/": "LABEL",
    "/dev/disk/by-partuuid/": "PARTUUID",
    "/dev/disk/by-partlabel/": "PARTLABEL",
}
# fstab's tag → blkid's name for it (`blkid -p` reports partition tags as PART_ENTRY_*).
_BLKID_TAG = {
    "UUID": "UUID",
    "LABEL": "LABEL",
    "PARTUUID": "PART_ENTRY_UUID",
    "PARTLABEL": "PART_ENTRY_NAME",
}


def resolve_fstab(
    entries: Sequence[FstabEntry], root: str, disk: str, devices: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """{mountpoint: device} for the entries, on the guest's own disk.

    `devices` holds blkid's tags of each filesystem on `disk` (the appliance's name of this
    guest's disk), and only those: copies of one base share filesystem UUIDs, so a tag is
    looked up on this disk alone. "/" is always `root`. An entry whose device is not on the
    disk is left out, as libguestfs leaves it out.

    :raises CannotDecide: LVM, MD RAID, btrfs subvolumes, device names that depend on the
        guest's hardware, or an fstab "/" that is not `root`.
    """
    mountpoints = {"/": root}
    for entry in entries:
        if entry.vfstype == "btrfs" and any(
            o.startswith(("subvol=", "subvolid=")) for o in entry.options
        ):
            raise CannotDecide(f"btrfs subvolume for {entry.mountpoint}")
        device = _resolve_spec(entry.spec, root, disk, devices)
        if entry.mountpoint == "/":
            if device not in (None, root):
                raise CannotDecide(f"fstab mounts {device} on /, not {root}")
        elif device is not None:
            mountpoints.setdefault(entry.mountpoint, device)
    return mountpoints


def _resolve_spec(
    spec: str, root: str, disk: str, devices: Mapping[str, Mapping[str, str]]
) -> str | None:
    for prefix, tag in _BY_TAG.items():
        if spec.startswith(prefix):
            spec = f"{tag}={spec[len(prefix) :]}"
    tag, sep, value = spec.partition("=")
    if sep and tag in _BLKID_TAG:
        value = value.strip("\"'")
        fold = str.lower if tag in ("UUID", "PARTUUID") else str
        found = [
            dev
            for dev, tags in devices.items()
            if fold(tags.get(_BLKID_TAG[tag], "\0")) == fold(value)
        ]
        if len(found) > 1:
            raise CannotDecide(f"{spec} names {len(found)} filesystems on {disk}")
        return found[0] if found else None
    if spec == "/dev/root":
        return root
    match = _GUEST_DISK.match(spec)
    if match and match.group(1) == "a":  # the guest's first (and here only) disk
        device = f"{disk}{match.group(2)}"
        return device if device in devices else None
    raise CannotDecide(f"fstab names {spec}")


def is_os_root(etc: Sequence[str]) -> bool:
    """Whether a filesystem whose /etc lists `etc` is an OS root (libguestfs's own test)."""
    return "os-release" in etc or "fstab" in etc


def choose_root(roots: Sequence[str]) -> str:
    """The one OS root found on a disk.

    :raises CannotDecide: none, or several (a dual-boot disk, a rescue copy).
    """
    if len(roots) != 1:
        raise CannotDecide(f"{len(roots)} OS roots ({', '.join(roots) or 'none'})")
    return roots[0]


# --- how a guest can show it booted (`mclu.decide.readiness`) ------------------------------------

# Where the QEMU guest agent is installed (Debian, Fedora, ...).
AGENT_PATHS = ("/usr/bin/qemu-ga", "/usr/sbin/qemu-ga")
# Where an ssh server is installed, and which (OpenSSH's sshd, dropbear; Debian, Fedora,
# Alpine, busybox images): the readiness default for a guest with an address is `ssh`.
SSH_SERVER_PATHS = (
    ("/usr/sbin/sshd", "sshd"),
    ("/usr/bin/sshd", "sshd"),
    ("/sbin/sshd", "sshd"),
    ("/usr/sbin/dropbear", "dropbear"),
    ("/usr/bin/dropbear", "dropbear"),
    ("/sbin/dropbear", "dropbear"),
)
# Boot loader and init configurations that say what runs on the serial console.
BOOT_CONFIGS = (
    "/boot/extlinux/extlinux.conf",
    "/boot/syslinux/syslinux.cfg",
    "/extlinux.conf",
    "/boot/grub/grub.cfg",
    "/boot/grub2/grub.cfg",
    "/etc/default/grub",
)
INITTAB = "/etc/inittab"
SYSTEMD_PATHS = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
SERIAL_GETTY_WANTS = "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"

_INITTAB_SERIAL_GETTY = re.compile(
    r"^[^#\n]*\bttyS0\b[^\n]*getty|^[^#\n]*getty[^\n]*\bttyS0\b", re.MULTILINE
)
_SERIAL_CONSOLE_ARG = re.compile(r"(?:^|\s)console=ttyS0\b", re.MULTILINE)


def serial_login(
    *, inittab: str, boot_configs: Sequence[str], systemd: bool, serial_getty_enabled: bool
) -> bool:
    """Whether the guest prints a login prompt on its serial console (ttyS0).

    SysV and busybox init: a getty on ttyS0 in /etc/inittab. systemd: serial-getty@ttyS0
    enabled, or the kernel's console on ttyS0, where systemd's getty generator starts one.
    """
    if _INITTAB_SERIAL_GETTY.search(inittab):
        return True
    if not systemd:
        return False
    return serial_getty_enabled or any(_SERIAL_CONSOLE_ARG.search(c) for c in boot_configs)
