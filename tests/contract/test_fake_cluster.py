"""FakeCluster: several fake hosts opened by HostSpec, and hosts told to fail."""

from __future__ import annotations

import pytest

from mclu import errors
from mclu.hosts import fake
from mclu.hosts.session import MigrationProgress, MigrationTarget
from mclu.model import Guest, GuestState


async def test_hosts_have_distinct_capacities() -> None:
    cluster = fake.FakeCluster.of("a", "b")
    facts = []
    for name in ("a", "b"):
        async with cluster.open(cluster.spec(name)) as session:
            facts.append(await session.facts())
    assert [(f.hostname, f.cpus, f.memory_total) for f in facts] == [
        ("a", 4, 8 * fake.GIB),
        ("b", 8, 16 * fake.GIB),
    ]


async def test_a_failing_host_refuses_to_open_until_healed() -> None:
    cluster = fake.FakeCluster.of("a")
    off = errors.HostUnreachable(host="a", address="a.fake", reason="no route to host")
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
        cluster.fail("a", errors.LibvirtUnavailable(host="a", reason="libvirtd stopped"))
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


async def test_migration_moves_a_running_guest_between_fake_hosts() -> None:
    cluster = fake.FakeCluster.of("a", "b")
    running = Guest(
        name="web1", uuid="u1", state=GuestState.RUNNING, vcpus=1, memory=fake.GIB, persistent=True
    )
    cluster.hosts["a"].guests["web1"] = running
    seen: list[MigrationProgress] = []
    async with cluster.open(cluster.spec("a")) as session:
        await session.migrate(
            "web1", MigrationTarget("b", "qemu+ssh://b.fake/system"), progress=seen.append
        )
    assert cluster.hosts["a"].guests == {}
    assert cluster.hosts["b"].guests == {"web1": running}
    assert seen and seen[-1].remaining == 0


@pytest.mark.parametrize("trouble", ["down", "refuses", "has it", "itself"])
async def test_a_failed_fake_migration_leaves_the_guest_at_its_source(trouble: str) -> None:
    cluster = fake.FakeCluster.of("a", "b")
    running = Guest(name="web1", uuid="u1", state=GuestState.RUNNING, vcpus=1, memory=fake.GIB)
    cluster.hosts["a"].guests["web1"] = running
    dest = "a" if trouble == "itself" else "b"
    if trouble == "down":
        cluster.fail(
            "b", errors.HostUnreachable(host="b", address="b.fake", reason="no route to host")
        )
    elif trouble == "refuses":
        cluster.hosts["b"].refuse_migration = "Storage pool not found"
    elif trouble == "has it":
        cluster.hosts["b"].guests["web1"] = running
    async with cluster.open(cluster.spec("a")) as session:
        with pytest.raises(errors.LibvirtCallFailed) as raised:
            await session.migrate("web1", MigrationTarget(dest, f"qemu+ssh://{dest}.fake/system"))
    assert raised.value.what == f"migrate web1 to {dest}"
    assert cluster.hosts["a"].guests == {"web1": running}
