"""Fixtures the sandbox test modules share; each module gets its own instance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mclu.sandbox import images as sandbox_images
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


@pytest.fixture(scope="module")
def repo(sandbox: sb.Sandbox) -> Path:
    """The sandbox's template repository (built once and cached)."""
    return sandbox_images.build_repository(sandbox.state)


@pytest.fixture
def builds(sandbox: sb.Sandbox, repo: Path, cache_dir: Path, ssh_key: Path) -> Iterator[sb.Guests]:
    """Guests the test builds, removed from every host after it."""
    made = sb.Guests(sandbox, ssh_key, cache_dir)
    try:
        yield made
    finally:
        made.cleanup()
