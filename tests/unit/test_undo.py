"""A build's undo (act.build.Undo): every step is undone, newest first, even when one fails
and saying so fails too (a hung-up terminal's writes raise EIO until mclu's SIGHUP handler has
sent its output to /dev/null: seen in the CI rehearsal as a domain left by a closed terminal)."""

from __future__ import annotations

import asyncio
import errno

from mclu.act.build import Undo


class HungUpTerminal:
    """A reporter whose every write fails as a closed pty's does."""

    def step(self, host: str | None, guest: str | None, text: str) -> None:
        raise OSError(errno.EIO, "Input/output error")

    def transfer(self, key: str, done: int, total: int) -> None:
        raise OSError(errno.EIO, "Input/output error")


def test_a_failing_step_and_a_failing_report_do_not_stop_the_rest_of_the_undo() -> None:
    done: list[str] = []
    undo = Undo()

    async def undefine() -> None:
        done.append("undefine")

    async def remove_disk() -> None:
        raise OSError(errno.ENOENT, "gone")

    async def remove_seed() -> None:
        done.append("remove seed")

    undo.push("undefine web1", undefine)
    undo.push("remove the disk", remove_disk)
    undo.push("remove the seed", remove_seed)
    failed = asyncio.run(undo.run(HungUpTerminal()))
    assert done == ["remove seed", "undefine"]  # newest first, all of them
    assert failed == ["remove the disk"]
