"""FakeCluster: several fake hosts opened by HostSpec, and hosts told to fail."""

from __future__ import annotations

import pytest

from mclu import errors
from mclu.hosts import fake


async def test_hosts_have_distinct_capacities() -> None:
    cluster = fake.FakeCluster.of("a", "b")
    facts = []
    for name in ("a", "b"):
        async with cluster.open(cluster.spec(name)) as session:
            facts.append(await session.facts())
    assert [(f.hostname, f.cpus, f.memory_total) for f in facts] == [
        ("a", 4, 8 * fake.GIB), ("b", 8, 16 * fake.GIB)]


async def test_a_failing_host_refuses_to_open_until_healed() -> None:
    cluster = fake.FakeCluster.of("a")
    off = errors.HostUnreachable("a", "a.fake", "no route to host")
    cluster.fail("a", off)
    with pytest.raises(errors.HostUnreachable) as raised:
        async with cluster.open(cluster.spec("a")):
            pass
    assert raised.value is off
    cluster.fail("a", None)
    async with cluster.open(cluster.spec("a")) as session:
        assert await session.guests() == ()
    assert cluster.open_sessions == 0


async def test_a_host_that_fails_while_open() -> None:
    cluster = fake.FakeCluster.of("a")
    async with cluster.open(cluster.spec("a")) as session:
        assert cluster.open_sessions == 1
        cluster.fail("a", errors.LibvirtUnavailable("a", "libvirtd stopped"))
        with pytest.raises(errors.LibvirtUnavailable):
            await session.facts()
    assert cluster.open_sessions == 0


async def test_an_unknown_host_is_unreachable() -> None:
    cluster = fake.FakeCluster.of("a")
    with pytest.raises(errors.HostUnreachable, match="no such fake host"):
        async with cluster.open(cluster.spec("z")):
            pass


async def test_commands_not_in_the_table_are_unsupported() -> None:
    cluster = fake.FakeCluster.of("a")
    async with cluster.open(cluster.spec("a")) as session:
        with pytest.raises(errors.Unsupported, match="uname -n"):
            await session.run(["uname", "-n"])
