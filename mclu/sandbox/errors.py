"""The sandbox's one error: a failure with a one-line explanation for the user."""

from __future__ import annotations


class SandboxError(Exception):
    """A failure with a one-line explanation for the user."""
