"""Host power: on (wake-on-LAN) and off."""

from __future__ import annotations

from mclu.cli import parsing


def register(sub: parsing.Subparsers) -> None:
    """Add this group's commands to the `mclu` parser."""
