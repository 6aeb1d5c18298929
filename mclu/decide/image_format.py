"""What an imported disk image is, from its content (never its name), and whether to take it.

Pure: the first bytes of a file in, a verdict out; `qemu-img info`'s JSON in, sizes or a
refusal out. An image is untrusted input: anything qemu-img would follow out of the file (a
qcow2 backing file or external data file, a vmdk descriptor's extents) is refused here, before
qemu-img is ever asked to read the image's data.
"""

from __future__ import annotations

from collections.abc import Mapping
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
