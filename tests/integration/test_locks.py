"""Guest locks on real hosts: held through a run's ssh connection, gone when the run dies.

The holder is a real second process, as another mclu run (or controller) would be.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import sandbox as sb

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(600)]

HOLD = textwrap.dedent("""
    import asyncio, sys
    from mclu.act import locks
    from mclu.hosts import open_session
    from tests.conftest import sandbox_spec

    async def main() -> None:
        spec = sandbox_spec(sys.argv[1], sys.argv[2])
        async with open_session(spec) as session, locks.guest(session, spec, sys.argv[3],
                                                              "rebuild"):
            print("held", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
""")


@pytest.fixture
def holder(sandbox: sb.Sandbox) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Another process holding the lock of a fresh guest name on the first host."""
    host = sandbox.up_hosts[0]
    name = f"t{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, host, sandbox.address(host), name],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "held\n"
        yield name, process
    finally:
        process.kill()
        process.wait()


def test_a_build_of_a_locked_name_fails_at_once_naming_the_holder(
    sandbox: sb.Sandbox,
    repo: Path,
    holder: tuple[str, subprocess.Popen[str]],
) -> None:
    name, process = holder
    other = sandbox.up_hosts[1]  # the name is taken cluster-wide, not only on its host
    done = sb.mclu(
        "build",
        "tiny",
        name,
        "--on",
        other,
        "--no-login",  # root may have no key
        inventory=sandbox.inventory,
    )
    assert done.returncode == 75, done.stderr
    assert done.stderr.startswith(
        f"mclu: error: {sandbox.up_hosts[0]}: guest {name!r} is locked by "
    )
    assert f"pid {process.pid} (mclu rebuild, since " in done.stderr
    assert len(done.stderr.splitlines()) == 1
    for host in sandbox.up_hosts:
        assert sandbox.exec(host, ["virsh", "-q", "dominfo", name], check=False).returncode != 0


def test_a_killed_holder_leaves_no_lock(
    sandbox: sb.Sandbox, holder: tuple[str, subprocess.Popen[str]]
) -> None:
    name, process = holder
    process.send_signal(signal.SIGKILL)
    process.wait()
    path = f"/var/lib/libvirt/images/.mclu-locks/{name}.lock"
    deadline = time.monotonic() + 10  # sshd sees the connection end, the holder's cat exits
    while (
        sandbox.exec(sandbox.up_hosts[0], ["flock", "-n", path, "true"], check=False).returncode
        != 0
    ):
        assert time.monotonic() < deadline, "the killed run's lock is still held"
        time.sleep(0.2)
