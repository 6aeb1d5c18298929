"""The sandbox fixture: brings the sandbox up for the session, and down again if it started it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration import sandbox as sb


@pytest.fixture(scope="session")
def sandbox() -> Iterator[sb.Sandbox]:
    reason = sb.unavailable_reason()
    if reason:
        pytest.skip(reason)
    was_up = sb.sandbox("status", check=False).returncode == 0
    up = sb.sandbox("up", str(sb.HOSTS), check=False)
    if up.returncode != 0:
        pytest.fail(f"mclu-sandbox up failed: {up.stdout}{up.stderr}")
    try:
        yield sb.Sandbox(state=sb.STATE, inventory=sb.STATE / "hosts.toml")
    finally:
        if not was_up:
            sb.sandbox("down", check=False)
