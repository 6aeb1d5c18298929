"""Fixtures the sandbox test modules share; each module gets its own instance."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import sandbox as sb


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One controller cache per module: its first build downloads, the others reuse."""
    return tmp_path_factory.mktemp("mclu-cache")


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The public half of a fresh key pair, for `--ssh-key`."""
    key = sb.new_ssh_key(tmp_path_factory.mktemp("key") / "id_ed25519", "mclu-test")
    return key.with_suffix(".pub")
