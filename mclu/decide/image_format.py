"""What an imported disk image is, from its content (never its name), and whether to take it.

Pure: the first bytes of a file in, a verdict out; `qemu-img info`'s JSON in, sizes or a
refusal out. An image is untrusted input: anything qemu-img would follow out of the file (a
qcow2 backing file or external data file, a vmdk descriptor's extents) is refused here, before
qemu-img is ever asked to read the image's data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HEAD_BYTES = 0x10100  # enough for every signature below (btrfs's is at 64 KiB)

# Compressors, by their magic (the file may hold any of the formats below once unpacked).
_COMPRESSION = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
)
# The command that unpacks each to stdout.
UNPACK = {
    "xz": ["xz", "-dc"],
    "gzip": ["gzip", "-dc"],
    "zstd": ["zstd", "-dcq"],
    "bzip2": ["bzip2", "-dc"],
}

_ISO_OFFSETS = (0x8001, 0x8801, 0x9001)  # "CD001" in the first volume descriptors
_VDI_SIGNATURE = b"\x7f\x10\xda\xbe"  # 0xbeda107f, little-endian, at 0x40
# Formats qemu-img knows that an import does not take, so the refusal can name them.
_OTHER_FORMATS = (
    (0, b"conectix", "a VHD image"),
    (0, b"vhdxfile", "a VHDX image"),
    (0, b"QEMU\xfb", "a qcow (version 1) image"),
    (0, b"QED\x00", "a QED image"),
    (0, b"\x7fELF", "an executable (ELF), not a disk image"),
    (0, b"PK\x03\x04", "a zip archive, not a disk image"),
)
# Signatures that make a raw file a disk: (offset, bytes, what).
_RAW_SIGNATURES = (
    (512, b"EFI PART", "GPT"),
    (0x438, b"\x53\xef", "ext2/3/4 file system"),
    (0, b"XFSB", "XFS file system"),
    (0x10040, b"_BHRfS_M", "btrfs file system"),
    (512, b"LABELONE", "LVM physical volume"),
    (510, b"\x55\xaa", "MBR"),  # last: a GPT disk has a protective MBR too
)
# vmdk kinds (qemu-img info's create-type) that are one self-contained file.
MONOLITHIC_VMDK = ("monolithicSparse", "streamOptimized")


@dataclass(frozen=True)
class Detected:
    """What a file's first bytes say: a format qemu-img reads, or why it is not taken."""

    format: str | None  # "qcow2", "raw", "vmdk", "vdi"; None: refused
    reason: str = ""  # the refusal, or for raw which signature made it a disk


def compression(head: bytes) -> str | None:
    """The compressor whose magic starts `head` ("xz", "gzip", "zstd", "bzip2"), else None."""
    return next((name for magic, name in _COMPRESSION if head.startswith(magic)), None)


def detect(head: bytes) -> Detected:
    """The disk format of a file whose first HEAD_BYTES (or all, if shorter) are `head`.

    An ISO 9660 signature is looked for first: a hybrid ISO carries an MBR too, and is refused
    as a disk template for now.
    """
    if any(head[o : o + 5] == b"CD001" for o in _ISO_OFFSETS):
        return Detected(None, "an ISO 9660 image (installer or CD), not a disk")
    if head.startswith(b"QFI\xfb"):
        return _qcow2_header(head)
    if head.startswith(b"KDMV"):
        return Detected("vmdk")
    if head.lstrip().startswith(b"# Disk DescriptorFile"):
        return Detected(
            None, "a vmdk descriptor file (its extents are other files): import a monolithic vmdk"
        )
    if head[0x40:0x44] == _VDI_SIGNATURE:
        return Detected("vdi")
    for offset, magic, what in _OTHER_FORMATS:
        if head[offset : offset + len(magic)] == magic:
            return Detected(None, f"{what} (import takes qcow2, raw, vmdk, vdi)")
    if compression(head):
        return Detected(None, f"{compression(head)}-compressed twice")
    for offset, magic, what in _RAW_SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return Detected("raw", what)
    if not head.strip(b"\x00"):
        return Detected(None, "empty (all zeros where a partition table would be)")
    return Detected(
        None,
        "not a disk image: no qcow2, vmdk or vdi header, and no partition table (MBR, GPT) "
        "or file system signature for a raw disk",
    )


def _qcow2_header(head: bytes) -> Detected:
    """A qcow2 refused from its header alone when it names a backing file or an external data
    file (a path, or a URL: http, nbd, ssh), before any qemu-img runs: `convert` follows
    both, and even `info` opens the data file."""
    if len(head) < 104:
        return Detected(None, "qcow2 truncated (shorter than its header)")
    version = int.from_bytes(head[4:8], "big")
    if int.from_bytes(head[8:16], "big"):
        return Detected(None, "it has a backing file: import a flattened image")
    incompatible = int.from_bytes(head[72:80], "big") if version >= 3 else 0
    if incompatible & _QCOW2_EXTERNAL_DATA_FILE:
        return Detected(None, "it has an external data file: import a flat qcow2")
    return Detected("qcow2")


_QCOW2_EXTERNAL_DATA_FILE = 1 << 2  # incompatible feature bit 2 (qcow2 spec, "Header")


@dataclass(frozen=True)
class Measured:
    """Sizes from qemu-img info: what a guest sees and what the file holds."""

    virtual_size: int
    allocated_size: int


def check_info(info: Mapping[str, Any], fmt: str, max_disk: int) -> Measured | str:
    """The sizes of an image `qemu-img info --output=json -f FMT` described, or why it is
    refused: a backing file, an external data file, a vmdk that is not one file, a qcow2
    marked corrupt, a virtual size larger than any host could hold."""
    if info.get("format") != fmt:
        return f"qemu-img reads it as {info.get('format')!r}, not {fmt}"
    if info.get("backing-filename") or info.get("full-backing-filename"):
        return f"it has a backing file ({info.get('backing-filename')}): import a flattened image"
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, Mapping) else None
    if not isinstance(data, Mapping):
        data = {}
    if data.get("data-file"):
        return f"it has an external data file ({data.get('data-file')}): import a flat qcow2"
    if data.get("corrupt"):
        return "qcow2 marked corrupt"
    if fmt == "vmdk":
        kind = data.get("create-type")
        extents = data.get("extents") or []
        if kind not in MONOLITHIC_VMDK or len(extents) > 1:
            return f"a {kind or 'non-monolithic'} vmdk (its extents are other files)"
        own = info.get("filename")
        if any(not isinstance(e, Mapping) or e.get("filename") != own for e in extents):
            return "a vmdk whose extent is another file"
    size = info.get("virtual-size")
    if not isinstance(size, int) or size <= 0:
        return "no virtual size"
    if size > max_disk:
        return f"virtual size {size} bytes is larger than any host could hold"
    allocated = info.get("actual-size")
    return Measured(size, allocated if isinstance(allocated, int) else size)


def check_result(exit_status: int) -> str | None:
    """Why a qcow2 is refused after `qemu-img check` exited with `exit_status`, or None.

    qemu-img check: 0 clean, 3 only leaked clusters (harmless), 2 corrupt, 1 could not check
    (a truncated file, a header that points past its end).
    """
    if exit_status in (0, 3):
        return None
    return "qcow2 corrupt" if exit_status == 2 else "qcow2 truncated or unreadable"


# --- what a raw disk holds: can anything personalise it? ------------------------------------
#
# Read here from the raw disk's bytes, before any libguestfs appliance is launched (10-45 s
# under TCG): a disk where no partition could hold an OS root (only FAT, swap, nothing) is
# refused at once. Whatever is not plainly such a disk (an ext/XFS/btrfs filesystem, LVM,
# LUKS, RAID, an extended partition, anything unknown) goes to the appliance, which decides.

# Filesystems an OS root mclu personalises may be on, or that may hold one: the appliance
# must look.
ROOT_CANDIDATES = ("ext2/3/4", "xfs", "btrfs", "LVM", "LUKS", "MD RAID", "squashfs", "unknown")
# Filesystem signatures at the start of a volume: (offset, bytes, name).
_FS_SIGNATURES = (
    (0x438, b"\x53\xef", "ext2/3/4"),
    (0, b"XFSB", "xfs"),
    (0x10040, b"_BHRfS_M", "btrfs"),
    (512, b"LABELONE", "LVM"),
    (0, b"LUKS\xba\xbe", "LUKS"),
    (4096, b"\xfc\x4e\x2b\xa9", "MD RAID"),  # metadata 1.2; 1.1 is at 0
    (0, b"\xfc\x4e\x2b\xa9", "MD RAID"),
    (0, b"hsqs", "squashfs"),
    (3, b"NTFS    ", "ntfs"),
    (3, b"EXFAT   ", "exfat"),
    (0x52, b"FAT32   ", "vfat"),
    (0x36, b"FAT16   ", "vfat"),
    (0x36, b"FAT12   ", "vfat"),
    (4086, b"SWAPSPACE2", "swap"),
    (4086, b"SWAP-SPACE", "swap"),
    (0x8001, b"CD001", "iso9660"),
)
_MBR_EXTENDED = (0x05, 0x0F, 0x85)
_MBR_PROTECTIVE = 0xEE
SECTOR = 512


@dataclass(frozen=True)
class Layout:
    """Where a raw disk's volumes start, as far as its first HEAD_BYTES tell."""

    table: str | None  # "MBR", "GPT"; None: no partition table (a filesystem on the disk)
    starts: tuple[int, ...] = ()  # byte offsets of the volumes (partitions, or 0 for the disk)
    unreadable: str = ""  # why the volumes cannot be told from here (the appliance must)


def filesystem(head: bytes) -> str | None:
    """What a volume whose first bytes are `head` holds: a name from _FS_SIGNATURES,
    "unknown" (something, not known here), None (zeros: nothing)."""
    for offset, magic, name in _FS_SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    return "unknown" if head.strip(b"\x00") else None


def layout(head: bytes) -> Layout:
    """The volumes of a raw disk from its first bytes: a GPT's or an MBR's partitions, else
    the whole disk (a filesystem without a partition table, FAT's boot sector included)."""
    if head[512:520] == b"EFI PART":
        return _gpt(head)
    if head[510:512] == b"\x55\xaa":
        entries = [head[446 + 16 * i : 462 + 16 * i] for i in range(4)]
        if all(e[0] in (0, 0x80) for e in entries):
            used = [e for e in entries if e[4] and int.from_bytes(e[12:16], "little")]
            if any(e[4] == _MBR_PROTECTIVE for e in used):
                return Layout("GPT", unreadable="a GPT not at 512 bytes (4 KiB sectors)")
            if any(e[4] in _MBR_EXTENDED for e in used):
                return Layout("MBR", unreadable="an extended partition")
            if used:
                starts = tuple(int.from_bytes(e[8:12], "little") * SECTOR for e in used)
                return Layout("MBR", starts)
            if filesystem(head) in (None, "unknown"):  # not a FAT boot sector: an empty MBR
                return Layout("MBR")
    return Layout(None, (0,))


def _gpt(head: bytes) -> Layout:
    lba = int.from_bytes(head[512 + 72 : 512 + 80], "little")
    count = int.from_bytes(head[512 + 80 : 512 + 84], "little")
    size = int.from_bytes(head[512 + 84 : 512 + 88], "little")
    start, end = lba * SECTOR, lba * SECTOR + count * size
    if size < 128 or not 0 < start < end <= len(head):
        return Layout("GPT", unreadable="GPT entries past the disk's first 64 KiB")
    starts = []
    for at in range(start, end, size):
        entry = head[at : at + size]
        if entry[:16].strip(b"\x00"):  # a type GUID: a partition
            starts.append(int.from_bytes(entry[32:40], "little") * SECTOR)
    return Layout("GPT", tuple(starts))


def without_root(found: Layout, volumes: Sequence[str | None]) -> str | None:
    """Why a disk whose volumes hold `volumes` (filesystem() of each of `found.starts`)
    cannot be personalised, or None when an appliance must look (it may hold a root)."""
    if found.unreadable or any(v in ROOT_CANDIDATES for v in volumes):
        return None
    return no_root(found.table, [v for v in volumes if v is not None], len(volumes))


def no_root(table: str | None, filesystems: Sequence[str], partitions: int) -> str:
    """The refusal of a disk with no OS root, saying what it holds: "no operating system
    libguestfs can personalise (found: one vfat filesystem, no root)"."""
    counts: dict[str, int] = {}
    for name in filesystems:
        counts[name] = counts.get(name, 0) + 1
    if counts:
        what = ", ".join(_how_many(n, _noun(name)) for name, n in counts.items()) + ", no root"
    elif table is None:
        what = "no partition table, no filesystem"
    else:
        article = "an" if table == "MBR" else "a"
        what = f"{article} {table} with {_how_many(partitions, 'partition')}, no filesystem"
    return f"no operating system libguestfs can personalise (found: {what})"


def _noun(filesystem: str) -> str:
    return "swap area" if filesystem == "swap" else f"{filesystem} filesystem"


def _how_many(n: int, noun: str) -> str:
    word = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four"}.get(n, str(n))
    return f"{word} {noun}" + ("s" if n != 1 else "")


def parse_measure(data: Any) -> int | str:
    """The bytes a host needs for the image (`qemu-img measure --output=json -O qcow2`'s
    "required": its data and what holds it), or why the answer is not one."""
    required = data.get("required") if isinstance(data, Mapping) else None
    if not isinstance(required, int) or required < 0:
        return "qemu-img measure said nothing readable"
    return required


def inspected(
    found: Layout, filesystems: Sequence[str], root: str | None, has_etc: bool
) -> str | None:
    """Why a disk the libguestfs appliance looked at cannot be personalised (libguestfs's
    `filesystems` types, the OS `root` it found and whether that has /etc), or None."""
    if root is None:
        held = [f for f in filesystems if f != "unknown"]
        return no_root(found.table, held, len(found.starts))
    if not has_etc:
        return (
            "no operating system libguestfs can personalise (found: an OS root on "
            f"{root} with no /etc: mclu personalises Linux systems)"
        )
    return None
