"""Guest lifecycle commands: start, stop, reboot, destroy, delete, console, viewer."""

from __future__ import annotations

from mclu.cli import parsing


def register(sub: parsing.Subparsers) -> None:
    """Add this group's commands to the `mclu` parser."""
