"""Finding a guest among the hosts that answered, and counting each machine once: pure, on
hand-made snapshots, and read passes over fake hosts."""

from __future__ import annotations

import dataclasses

import pytest

from mclu import errors, model
from mclu.hosts import fake
from mclu.read import snapshot
from tests.builders import guest

FACTS = model.HostFacts(
    hostname="h", arch="x86_64", cpus=4, memory_total=8 << 30, memory_free=6 << 30
)


def snap(hosts: dict[str, list[str]], failed: tuple[str, ...] = ()) -> model.Snapshot:
    result: model.Snapshot = model.HostResults(order=[*hosts, *failed])
    for name, guests in hosts.items():
        spec = model.HostSpec(name=name, address=name)
        result.ok[name] = model.HostSnapshot(spec, FACTS, tuple(guest(g) for g in guests))
    for name in failed:
        result.failed[name] = errors.HostUnreachable(host=name, address=name, reason="timed out")
    return result


def test_split_ref() -> None:
    assert snapshot.split_ref("web1") == snapshot.GuestRef("web1")
    assert snapshot.split_ref("ham2:web1") == snapshot.GuestRef("web1", "ham2")
    assert str(snapshot.split_ref("ham2:web1")) == "ham2:web1"
    for bad in ("", ":web1", "ham2:"):
        with pytest.raises(errors.UsageError, match="HOST:NAME"):
            snapshot.split_ref(bad)


def test_finds_the_one_host_with_the_guest() -> None:
    found = snapshot.find_guest(snap({"a": ["x"], "b": ["web1", "y"]}), snapshot.GuestRef("web1"))
    assert found.host.spec.name == "b" and found.guest.name == "web1"


def test_two_hosts_with_the_name_is_ambiguous_and_says_how_to_choose() -> None:
    both = snap({"a": ["web1"], "b": ["web1"]})
    with pytest.raises(errors.GuestAmbiguous, match=r"a and b; name it as HOST:web1"):
        snapshot.find_guest(both, snapshot.GuestRef("web1"))
    assert snapshot.find_guest(both, snapshot.GuestRef("web1", "b")).host.spec.name == "b"


def test_not_found_names_the_hosts_that_were_not_asked() -> None:
    with pytest.raises(errors.GuestNotFound, match=r"'web1' \(c did not answer: it may be there\)"):
        snapshot.find_guest(snap({"a": ["x"]}, failed=("c",)), snapshot.GuestRef("web1"))


def test_pinned_host_that_failed_raises_its_error() -> None:
    with pytest.raises(errors.HostUnreachable):
        snapshot.find_guest(snap({"a": []}, failed=("c",)), snapshot.GuestRef("web1", "c"))


# --- one machine under two inventory entries -------------------------------------------------


def with_uuids(result: model.Snapshot, uuids: dict[str, str]) -> model.Snapshot:
    for name, uuid in uuids.items():
        found = result.ok[name]
        result.ok[name] = dataclasses.replace(
            found, facts=dataclasses.replace(found.facts, host_uuid=uuid)
        )
    return result


def test_a_host_uuid_seen_before_fails_the_later_entry_naming_both() -> None:
    before = with_uuids(
        snap({"a": ["x"], "b": [], "c": ["x"]}, failed=("d",)), {"a": "u1", "b": "u2", "c": "u1"}
    )
    after = snapshot.one_per_machine(before)
    assert list(after.ok) == ["a", "b"] and after.order == ["a", "b", "c", "d"]
    error = after.failed["c"]
    assert isinstance(error, errors.SameMachine) and error.state == "duplicate"
    assert str(error) == (
        "c: the same machine as a (libvirt host UUID u1): one inventory entry per host"
    )
    assert isinstance(after.failed["d"], errors.HostUnreachable)
    # its guests are not counted twice either: "x" is found once, on the first entry
    assert snapshot.find_guest(after, snapshot.GuestRef("x")).host.spec.name == "a"


def test_unknown_host_uuids_are_not_compared() -> None:
    """libvirt's test driver, and fakes told so, report no host UUID."""
    after = snapshot.one_per_machine(snap({"a": [], "b": []}))
    assert list(after.ok) == ["a", "b"] and not after.failed


async def test_every_read_pass_counts_one_machine_once() -> None:
    cluster = fake.FakeCluster.of("a", "b", "c")
    cluster.hosts["c"].host_uuid = cluster.hosts["a"].host_uuid
    specs = [cluster.spec(n) for n in ("a", "b", "c")]
    taken = await snapshot.take(specs, cluster.open, limit=50)
    assert list(taken.ok) == ["a", "b"] and isinstance(taken.failed["c"], errors.SameMachine)
    async with snapshot.connected(specs, cluster.open, limit=50) as now:
        read = await now.gather(snapshot.read_host)
        assert list(read.ok) == ["a", "b"] and isinstance(read.failed["c"], errors.SameMachine)
        facts = await now.gather(lambda session, spec: session.facts())  # not a read pass
        assert list(facts.ok) == ["a", "b", "c"]
    assert cluster.open_sessions == 0
