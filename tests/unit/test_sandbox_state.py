"""The sandbox's state directory: its record of `up` and its lock (no root, no namespaces)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mclu.sandbox import config, status
from mclu.sandbox.errors import SandboxError
from mclu.sandbox.state import Paths, known_hosts_of_record, locked, read_record, write_record


def test_record_names_the_running_hosts_and_the_spare(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert read_record(paths) is None
    assert known_hosts_of_record(paths) == []
    write_record(paths, 3)
    assert read_record(paths) == 3
    assert known_hosts_of_record(paths) == config.host_specs(4)
    assert status.hosts_to_show(paths) == (config.host_specs(4), True)


def test_a_record_that_is_not_one_is_none(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    for text in ("", "[]", '{"count": "3"}', "{"):
        paths.record.write_text(text)
        assert read_record(paths) is None


def test_a_held_lock_refuses_another_command(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    with locked(paths):
        held = "another mclu-sandbox command holds"
        with pytest.raises(SandboxError, match=held), locked(paths):
            pass
        with pytest.raises(SandboxError, match=held), locked(paths, wait=0.2):
            pass
    with locked(paths):
        pass


def test_a_waiting_command_enters_once_the_lock_is_released(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with locked(paths):
            holding.set()
            release.wait()

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait()
    threading.Timer(0.3, release.set).start()
    entered = False
    with locked(paths, wait=60.0):
        entered = True
    thread.join()
    assert entered
