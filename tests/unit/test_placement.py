"""mclu.decide.placement: fit, spread, pinning and the words of its errors; properties with
hypothesis."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mclu import errors
from mclu.decide import placement
from mclu.decide.placement import Candidate, Need
from mclu.model import Guest, HostFacts, HostSnapshot, HostSpec, StorageFacts
from tests.builders import SHUTOFF, guest

GiB = 1 << 30
MiB = 1 << 20
IMAGES = "/var/lib/libvirt/images"


def host(
    name: str,
    *,
    memory: int = 8 * GiB,
    cpus: int = 4,
    disk: int = 100 * GiB,
    guests: Sequence[Guest] = (),
    reserve_memory: int = 0,
    reserve_cpus: int = 0,
    cpu_ratio: float = 1.0,
) -> Candidate:
    """A candidate whose capacity comes from inventory overrides, so free memory is exact.

    One vCPU per CPU unless asked: most cases here are about running out of vCPUs.
    """
    spec = HostSpec(
        name=name,
        address=name,
        memory=memory,
        cpus=cpus,
        reserve_memory=reserve_memory,
        reserve_cpus=reserve_cpus,
        cpu_ratio=cpu_ratio,
    )
    facts = HostFacts(
        hostname=name, arch="x86_64", cpus=64, memory_total=256 * GiB, memory_free=256 * GiB
    )
    return Candidate(HostSnapshot(spec, facts, tuple(guests)), StorageFacts(IMAGES, disk))


SMALL = Need(memory=1 * GiB, vcpus=1, disk=1 * GiB)


def test_spreads_to_the_host_with_most_free_memory_after() -> None:
    hosts = [
        host("ham0", memory=4 * GiB),
        host("ham1", memory=8 * GiB),
        host("ham2", memory=6 * GiB),
    ]
    chosen = placement.place(SMALL, hosts)
    assert chosen == placement.Placement("ham1", "most free memory: 7 GiB after")


def test_free_memory_counts_reserve_and_running_guests_only() -> None:
    busy = host(
        "ham0",
        memory=8 * GiB,
        reserve_memory=1 * GiB,
        guests=[guest("a", memory=3 * GiB), guest("off", memory=4 * GiB, state=SHUTOFF)],
    )
    assert placement.room(busy) == Need(memory=4 * GiB, vcpus=3, disk=100 * GiB)
    assert placement.place(SMALL, [busy, host("ham1", memory=3 * GiB)]).host == "ham0"


def test_ties_go_to_fewer_guests_then_inventory_order() -> None:
    crowded = host("ham0", guests=[guest("off", memory=GiB, state=SHUTOFF)])
    assert placement.place(SMALL, [crowded, host("ham1"), host("ham2")]).host == "ham1"
    assert placement.place(SMALL, [host("ham2"), host("ham1")]).host == "ham2"


def test_already_placed_guests_count_against_their_host() -> None:
    hosts = [host("ham0"), host("ham1")]
    already = {"ham0": Need(memory=2 * GiB, vcpus=1, disk=0)}
    assert placement.place(SMALL, hosts, already=already).host == "ham1"


def test_only_host_with_room_says_so() -> None:
    hosts = [host("ham0", memory=512 * MiB), host("ham1", memory=2 * GiB)]
    assert placement.place(SMALL, hosts) == placement.Placement(
        "ham1", "only host with room: 1 GiB memory free after"
    )


def test_vcpus_are_not_overcommitted() -> None:
    # 4 CPUs, 1 reserved, 2 taken by a running guest: one vCPU left; a shut-off guest holds none.
    full = host(
        "ham0",
        cpus=4,
        reserve_cpus=1,
        guests=[guest("a", memory=GiB, vcpus=2), guest("b", memory=GiB, vcpus=4, state=SHUTOFF)],
    )
    assert placement.fits(Need(GiB, 1, GiB), full)
    assert not placement.fits(Need(GiB, 2, GiB), full)
    assert placement.shortfalls(Need(GiB, 2, GiB), full) == ["2 vCPUs, 1 free"]


def test_disk_shortfall_names_the_image_directory() -> None:
    small_disk = host("ham0", disk=3 * GiB)
    assert placement.shortfalls(Need(GiB, 1, 10 * GiB), small_disk) == [
        f"10 GiB disk in {IMAGES}, 3 GiB free"
    ]


def test_pinned_host_that_fits_is_taken_even_if_others_have_more_room() -> None:
    hosts = [host("ham0", memory=2 * GiB), host("ham1", memory=16 * GiB)]
    assert placement.place(SMALL, hosts, pinned="ham0") == placement.Placement(
        "ham0", "as asked: 1 GiB memory free after"
    )


def test_pinned_host_too_small_says_what_is_short() -> None:
    hosts = [host("ham1"), host("ham2", memory=1536 * MiB)]
    with pytest.raises(errors.HostTooSmall) as raised:
        placement.place(Need(2 * GiB, 1, GiB), hosts, pinned="ham2", guest="web1")
    assert str(raised.value) == "ham2: no room for web1: needs 2 GiB memory, 1.5 GiB free"
    assert raised.value.exit_code == errors.EXIT_FAILED


def test_pinned_host_counts_already_placed_guests() -> None:
    with pytest.raises(errors.HostTooSmall) as raised:
        placement.place(
            SMALL,
            [host("ham0", memory=2 * GiB, cpus=1)],
            pinned="ham0",
            already={"ham0": Need(1536 * MiB, 1, 0)},
        )
    assert str(raised.value) == (
        "ham0: no room for the guest: needs 1 GiB memory, 512 MiB free after 1.5 GiB this plan "
        "puts there first; 1 vCPU, 0 free after 1 vCPU this plan puts there first"
    )


def test_pinned_host_must_be_a_candidate() -> None:
    with pytest.raises(ValueError, match="'ham9' is not among the candidates"):
        placement.place(SMALL, [host("ham0")], pinned="ham9")


def test_no_capacity_lists_every_host_on_one_line() -> None:
    hosts = [host("ham0", memory=512 * MiB), host("ham1", cpus=0, disk=0)]
    with pytest.raises(errors.NoCapacity) as raised:
        placement.place(SMALL, hosts, guest="web1", unreachable=["ham2"])
    assert str(raised.value) == (
        "no host can take web1 (1 GiB memory, 1 vCPU, 1 GiB disk): "
        "ham0: needs 1 GiB memory, 512 MiB free / "
        f"ham1: needs 1 vCPU, 0 free; 1 GiB disk in {IMAGES}, 0 B free "
        "(not asked: ham2 did not answer)"
    )
    assert raised.value.rejected[0][0] == "ham0" and "\n" not in str(raised.value)


def test_no_candidates_at_all() -> None:
    with pytest.raises(errors.NoCapacity, match=r"\): no hosts answered \(not asked: ham0"):
        placement.place(SMALL, [], guest="web1", unreachable=["ham0"])


def test_need_adds_and_reads() -> None:
    assert Need(1, 2, 3) + Need(10, 20, 30) == Need(11, 22, 33, guests=2)
    assert Need(1, 2, 3) + placement.NOTHING == Need(1, 2, 3)
    assert str(Need(2 * GiB, 2, 10 * GiB)) == "2 GiB memory, 2 vCPUs, 10 GiB disk"


# --- properties ----------------------------------------------------------------------------

sizes_ = st.integers(min_value=0, max_value=64 * GiB)
needs = st.builds(
    Need,
    memory=st.integers(16 * MiB, 16 * GiB),
    vcpus=st.integers(1, 16),
    disk=st.integers(0, 64 * GiB),
)


@st.composite
def clusters(draw: st.DrawFn) -> list[Candidate]:
    count = draw(st.integers(min_value=1, max_value=6))
    return [
        host(
            f"ham{i}",
            memory=draw(sizes_),
            cpus=draw(st.integers(0, 32)),
            disk=draw(sizes_),
            reserve_memory=draw(st.integers(0, 2 * GiB)),
            reserve_cpus=draw(st.integers(0, 2)),
            guests=[
                guest(
                    f"g{i}-{j}", memory=draw(st.integers(0, 4 * GiB)), vcpus=draw(st.integers(1, 4))
                )
                for j in range(draw(st.integers(0, 3)))
            ],
        )
        for i in range(count)
    ]


@given(needs, clusters())
def test_the_chosen_host_always_fits(need: Need, hosts: list[Candidate]) -> None:
    if not any(placement.fits(need, h) for h in hosts):
        with pytest.raises(errors.NoCapacity) as raised:
            placement.place(need, hosts)
        assert [name for name, _ in raised.value.rejected] == [h.name for h in hosts]
        return
    chosen = placement.place(need, hosts)
    winner = next(h for h in hosts if h.name == chosen.host)
    assert placement.fits(need, winner)
    after = placement.room(winner).memory - need.memory
    assert all(
        placement.room(h).memory - need.memory <= after for h in hosts if placement.fits(need, h)
    )


@given(st.lists(needs, min_size=1, max_size=12), clusters())
def test_placing_one_by_one_never_overcommits(wanted: list[Need], hosts: list[Candidate]) -> None:
    already: dict[str, Need] = {}
    for need in wanted:
        try:
            chosen = placement.place(need, hosts, already=already)
        except errors.NoCapacity:
            assert not any(
                placement.fits(need, h, already.get(h.name, placement.NOTHING)) for h in hosts
            )
            continue
        already[chosen.host] = already.get(chosen.host, placement.NOTHING) + need
    for h in hosts:
        used, free = already.get(h.name, placement.NOTHING), placement.room(h)
        assert used.memory <= free.memory and used.vcpus <= free.vcpus and used.disk <= free.disk


def test_vcpus_are_overcommitted_by_the_hosts_cpu_ratio() -> None:
    four_to_one = host(
        "ham0", cpus=2, cpu_ratio=4.0, reserve_cpus=1, guests=[guest("a", memory=GiB, vcpus=3)]
    )
    assert placement.room(four_to_one).vcpus == 2 * 4 - 1 - 3
    assert placement.fits(Need(memory=GiB, vcpus=4, disk=GiB), four_to_one)
    assert not placement.fits(Need(memory=GiB, vcpus=5, disk=GiB), four_to_one)
