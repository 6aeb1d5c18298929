"""The hosts the Session contract runs against: the fake, the libvirt test driver, the sandbox.

Each test gets a fresh `Target`; guests it defines are removed when it ends, pass or fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest

from mclu.hosts import fake, open_session
from mclu.hosts.session import Session
from mclu.model import HostSpec
from tests.contract.targets import DB1, WEB1, Target, fake_host_a


@pytest.fixture(params=["fake", "testdriver", pytest.param("sandbox", marks=pytest.mark.sandbox)])
async def target(request: pytest.FixtureRequest, testdriver_uri: str) -> AsyncIterator[Target]:
    kind = request.param
    async with _open(request, kind, testdriver_uri) as (session, spec, reopen):
        target = Target(
            session=session,
            domain_type={"fake": "qemu", "testdriver": "test"}.get(kind, spec.domain_type),
            has_shell=kind != "testdriver",
            preloaded=(WEB1, DB1) if kind != "sandbox" else (),
            fake_host=session.fake_host if isinstance(session, fake.FakeSession) else None,
            reopen=reopen,
        )
        try:
            yield target
        finally:
            await target.remove_defined()


Reopen = Callable[[], AbstractAsyncContextManager[Session]]


@contextlib.asynccontextmanager
async def _open(
    request: pytest.FixtureRequest, kind: str, testdriver_uri: str
) -> AsyncIterator[tuple[Session, HostSpec, Reopen]]:
    if kind == "fake":
        cluster = fake.FakeCluster([fake_host_a()])
        spec = cluster.spec("host-a")
        async with cluster.open(spec) as fake_session:
            yield fake_session, spec, lambda: cluster.open(spec)
        assert cluster.open_sessions == 0
        return
    if kind == "testdriver":
        spec = HostSpec(name="host-a", address="localhost", uri=testdriver_uri)
    else:
        spec = request.getfixturevalue("sandbox_host")
    async with open_session(spec) as session:
        yield session, spec, lambda: open_session(spec)
