"""What the Session contract runs against: a `Target` is an open session plus what differs
between implementations (the domain type to define, whether there is a shell, which guests the
host starts with). tests/contract/conftest.py opens one per test.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from mclu import errors
from mclu.hosts import fake
from mclu.hosts.session import Session, command_line
from mclu.model import Guest, GuestMeta, GuestState
from mclu.read import metadata

GIB = 1 << 30
MIB = 1 << 20
MISSING = "mclu-no-such-program"  # a program no host has
GUEST_MEMORY = 32 * MIB  # small enough for a TCG guest sitting in its BIOS on the sandbox

# The guests of tests/data/testdriver/host-a.xml, which the fake host is loaded with too.
WEB1 = Guest(
    name="web1",
    uuid="0b3c5a8e-7f2d-4b6a-9c1e-3d5f7a9b1c2d",
    state=GuestState.RUNNING,
    vcpus=2,
    memory=GIB,
    max_memory=GIB,
    disks=("/var/lib/libvirt/images/web1.qcow2",),
)
DB1 = Guest(
    name="db1",
    uuid="5e2a9c4f-1b3d-4e6f-8a0c-2d4f6b8d0e1f",
    state=GuestState.SHUTOFF,
    vcpus=1,
    memory=2 * GIB,
    max_memory=2 * GIB,
    mclu=GuestMeta(template="debian-12", revision="2", built="2024-05-01T10:00:00Z"),
)


@dataclass
class Target:
    """A session under test and what the contract may expect of it."""

    session: Session
    domain_type: str
    has_shell: bool
    preloaded: tuple[Guest, ...]  # the host's guests before the test; () when not ours to know
    fake_host: fake.FakeHost | None = None  # the fake's state, when the target is the fake
    # Opens another session to the same host, as a second mclu run (or controller) would.
    reopen: Callable[[], AbstractAsyncContextManager[Session]] | None = None
    defined: list[str] = field(default_factory=list)

    def new_name(self) -> str:
        """A guest name no other test (or engineer on the sandbox) uses, removed after the test."""
        name = f"mclu-contract-{uuid.uuid4().hex[:8]}"
        self.defined.append(name)
        return name

    def domain_xml(self, name: str, meta: GuestMeta | None = None, uuid: str = "") -> str:
        """A diskless one-CPU guest: it starts and sits in its BIOS."""
        extra = f"<uuid>{uuid}</uuid>" if uuid else ""
        if meta is not None:
            extra += f"<metadata>{metadata.render(meta)}</metadata>"
        return (
            f"<domain type='{self.domain_type}'><name>{name}</name>{extra}"
            f"<memory unit='KiB'>{GUEST_MEMORY // 1024}</memory><vcpu>1</vcpu>"
            "<os><type>hvm</type></os></domain>"
        )

    async def define(self, meta: GuestMeta | None = None) -> Guest:
        return await self.session.define(self.domain_xml(self.new_name(), meta))

    async def state_of(self, name: str) -> GuestState | None:
        guest = await self.guest(name)
        return None if guest is None else guest.state

    async def guest(self, name: str) -> Guest | None:
        return next((g for g in await self.session.guests() if g.name == name), None)

    async def is_running(self, argv: Sequence[str]) -> bool:
        """Whether a process runs argv on the host (argv unique to the test: the sandbox
        hosts share one process table)."""
        if self.fake_host is not None:
            return tuple(argv) in self.fake_host.running
        found = await self.session.run(["pgrep", "-f", "-x", command_line(argv)], check=False)
        return found.exit_status == 0

    async def remove_defined(self) -> None:
        for name in self.defined:
            with contextlib.suppress(errors.GuestNotFound, errors.LibvirtCallFailed):
                await self.session.destroy(name)
            with contextlib.suppress(errors.GuestNotFound, errors.LibvirtCallFailed):
                await self.session.undefine(name)


def fake_host_a() -> fake.FakeHost:
    """The fake twin of host-a.xml, with canned commands for the run() contract."""
    return fake.FakeHost(
        name="host-a",
        cpus=8,
        memory=16 * GIB,
        guests={"web1": WEB1, "db1": DB1},
        commands=dict(
            [
                fake.canned(["uname", "-n"], b"host-a\n"),
                fake.canned(
                    ["sh", "-c", "echo one >&2; echo two >&2; exit 3"],
                    stderr=b"one\ntwo\n",
                    exit_status=3,
                ),
                fake.canned(["cat"], b"hello"),
                fake.canned(
                    [MISSING],
                    stderr=f"bash: line 1: {MISSING}: command not found\n".encode(),
                    exit_status=127,
                ),
            ]
        ),
    )
