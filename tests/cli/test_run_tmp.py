"""SIGHUP (a dropped terminal or ssh session) is undone as SIGTERM is, exits 129, and the run's
private temporary directory on the controller goes with it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from mclu import model, runtmp
from tests.builders import built
from tests.cli.harness import NEW, Cli, rebuild_disk_commands

META = model.GuestMeta(template="tiny", revision="2", built="2026-11-01T10:00:00Z")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path)
    c.host("a").guests["web1"] = built("web1", META)
    rebuild_disk_commands(c.host("a"))
    return c


def test_sighup_undoes_the_rebuild_and_removes_the_run_directory(
    cli: Cli, controller_tmp: Path
) -> None:
    made: list[Path] = []

    async def personalise(name: str) -> model.GuestTraits:
        keys = Path(runtmp.current().mkdtemp(runtmp.HOSTKEYS_PREFIX))
        (keys / "ssh_host_ed25519_key").write_text("private")
        made.append(keys)
        os.kill(os.getpid(), signal.SIGHUP)  # the terminal went away
        await asyncio.sleep(60)
        raise AssertionError("not reached: SIGHUP cancels the run")

    cli.personalise_with(personalise)
    assert cli.rebuild("web1") == 129
    assert cli.stderr.splitlines()[-1] == "mclu: error: hangup"
    assert made and not made[0].exists()
    assert list(controller_tmp.iterdir()) == []
    assert cli.guest("a", "web1") == built("web1", META)  # undone: the old guest as it was
    assert cli.host("a").ran[-1] == ("rm", "-f", "--", NEW)
    assert cli.host("a").locks == {}
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL  # the handler went with the run
