"""Finding a guest among the hosts that answered: pure, on hand-made snapshots."""

from __future__ import annotations

import pytest

from mclu import errors, fanout, model, snapshot

FACTS = model.HostFacts(hostname="h", arch="x86_64", cpus=4, memory_total=8 << 30,
                        memory_free=6 << 30)


def guest(name: str) -> model.Guest:
    return model.Guest(name=name, uuid=f"uuid-{name}", state=model.GuestState.RUNNING,
                       vcpus=1, memory=256 << 20)


def snap(hosts: dict[str, list[str]], failed: tuple[str, ...] = ()) -> snapshot.Snapshot:
    result: snapshot.Snapshot = fanout.HostResults(order=[*hosts, *failed])
    for name, guests in hosts.items():
        spec = model.HostSpec(name=name, address=name)
        result.ok[name] = model.HostSnapshot(spec, FACTS, tuple(guest(g) for g in guests))
    for name in failed:
        result.failed[name] = errors.HostUnreachable(name, name, "timed out")
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
    with pytest.raises(errors.GuestNotFound, match=r"'web1' \(not asked: c did not answer\)"):
        snapshot.find_guest(snap({"a": ["x"]}, failed=("c",)), snapshot.GuestRef("web1"))


def test_pinned_host_that_failed_raises_its_error() -> None:
    with pytest.raises(errors.HostUnreachable):
        snapshot.find_guest(snap({"a": []}, failed=("c",)), snapshot.GuestRef("web1", "c"))
