"""Sessions with hosts: the only package that talks to libvirt or ssh.

`open_session(spec)` is the way in; `Session` (in `session`) is what it gives. Anything else
in this package is private to it, except `fake`, which tests use in place of open_session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mclu.hosts.session import CommandResult, Session
from mclu.model import HostSpec

__all__ = ["CommandResult", "Session", "open_session"]


@asynccontextmanager
async def open_session(spec: HostSpec) -> AsyncIterator[Session]:
    """Open a session on spec's host, closed on exit, chosen by spec.uri.

    None: ssh to spec.address, with libvirt through that connection (production).
    Any libvirt URI (`test:///path/node.xml`, `qemu:///system`, ...): libvirt directly, no
    ssh, so `run()` raises Unsupported. Raises the HostError subclasses for hosts that cannot
    be reached.
    """
    # Imported here, not above: importing the package (for `session`, `commands`, `fake`)
    # must not load asyncssh and libvirt, which only a real session needs.
    from mclu.hosts import remote, virt

    if spec.uri is None:
        async with remote.open(spec) as ssh_session:
            yield ssh_session
    else:
        async with virt.open(spec.name, spec.uri, call_timeout=spec.command_timeout) as session:
            yield session
