"""SIGHUP (a dropped terminal or ssh session) is undone as SIGTERM is, exits 129, and the run's
private temporary directory on the controller goes with it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from mclu import runtmp
from mclu.act import rebuild
from tests.cli.test_rebuild import NEW, RebuildCli, cli, mclu_guest  # noqa: F401


def test_sighup_undoes_the_rebuild_and_removes_the_run_directory(
    cli: RebuildCli,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    controller_tmp: Path,
) -> None:
    made: list[Path] = []

    async def personalize(self: Any, work: Any, inputs: Any) -> None:
        keys = Path(runtmp.current().mkdtemp(runtmp.HOSTKEYS_PREFIX))
        (keys / "ssh_host_ed25519_key").write_text("private")
        made.append(keys)
        os.kill(os.getpid(), signal.SIGHUP)  # the terminal went away
        await asyncio.sleep(60)

    monkeypatch.setattr(rebuild._Run, "_personalize", personalize)
    assert cli.rebuild("web1") == 129
    assert cli.stderr.splitlines()[-1] == "mclu: error: hangup"
    assert made and not made[0].exists()
    assert list(controller_tmp.iterdir()) == []
    assert cli.guest("a", "web1") == mclu_guest("web1")  # undone: the old guest as it was
    assert cli.host("a").ran[-1] == ("rm", "-f", "--", NEW)
    assert cli.host("a").locks == {}
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL  # the handler went with the run
