"""Host power, the pure part: wake-on-LAN packets (MAC addresses parsed and written, the
magic packet) and when `mclu off` refuses (guests still running)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mclu import errors, model

MAC_LENGTH = 6  # bytes
SYNC = b"\xff" * 6  # the synchronisation stream a wake-on-LAN packet starts with
MAC_REPEATS = 16
PACKET_LENGTH = len(SYNC) + MAC_REPEATS * MAC_LENGTH  # 102

# Colons, dashes or nothing between the six bytes, the same separator throughout.
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(?P<sep>[:-]?)[0-9A-Fa-f]{2}(?:(?P=sep)[0-9A-Fa-f]{2}){4}$")


def parse_mac(text: str) -> bytes:
    """A MAC address as 52:54:00:12:34:56, 52-54-00-12-34-56 or 525400123456 → its 6 bytes.

    Raises ValueError for anything else.
    """
    if not _MAC.match(text):
        raise ValueError(f"not a MAC address: {text!r} (use 52:54:00:12:34:56)")
    return bytes.fromhex(text.replace(":", "").replace("-", ""))


def format_mac(raw: bytes) -> str:
    """6 bytes → "52:54:00:12:34:56" (lower case, as the inventory keeps it)."""
    if len(raw) != MAC_LENGTH:
        raise ValueError(f"a MAC address is {MAC_LENGTH} bytes, got {len(raw)}")
    return ":".join(f"{b:02x}" for b in raw)


def magic_packet(mac: bytes) -> bytes:
    """The wake-on-LAN payload for `mac` (6 bytes): six 0xFF bytes, then the MAC 16 times."""
    if len(mac) != MAC_LENGTH:
        raise ValueError(f"a MAC address is {MAC_LENGTH} bytes, got {len(mac)}")
    return SYNC + mac * MAC_REPEATS


# --- mclu off ----------------------------------------------------------------------------------


def running(guests: Iterable[model.Guest]) -> list[str]:
    """The names of the guests that run, in the order given."""
    return [g.name for g in guests if g.state.active]


def check_power_off(
    host: str, running: Sequence[str], *, force: bool, drain_first: bool = False
) -> None:
    """`mclu off` refuses (GuestsRunning) while guests run on the host, unless --force; a dry
    run of --drain counts them as moved (the drain it shows would run first)."""
    if running and not (force or drain_first):
        raise errors.GuestsRunning(host=host, names=sorted(running))
