"""Fixtures of the CLI tests."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def controller_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The controller's $TMPDIR, per test (tempfile caches it in tempfile.tempdir): commands
    make their run directories here (mclu.runtmp), and `mclu cleanup` sees only dead runs' of
    this test, not the machine's."""
    path = tmp_path / "controller-tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path
