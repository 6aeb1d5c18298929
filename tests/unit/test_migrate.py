"""The pure parts of live migration: disks as qemu-img describes them, destinations, drain plans."""

from __future__ import annotations

import json

import pytest

from mclu import errors, model
from mclu.act import migrate

GIB = 1 << 30
MIB = 1 << 20
BASE = "/var/lib/libvirt/images/mclu-templates/tiny.x86_64.r1.raw"


def host(
    name: str, *guests: model.Guest, shared: bool = False, memory: int = 4 * GIB
) -> model.HostSnapshot:
    spec = model.HostSpec(
        name=name,
        address=f"10.0.0.{ord(name[-1])}",
        user="root",
        shared_storage=shared,
        reserve_memory=0,
        memory=memory,
        cpus=2,
    )
    facts = model.HostFacts(
        hostname=name, arch="x86_64", cpus=2, memory_total=memory, memory_free=memory
    )
    return model.HostSnapshot(spec=spec, facts=facts, guests=guests)


def guest(
    name: str, memory: int = GIB, state: model.GuestState = model.GuestState.RUNNING
) -> model.Guest:
    return model.Guest(
        name=name,
        uuid=name,
        state=state,
        vcpus=1,
        memory=memory,
        disks=(f"/var/lib/libvirt/images/{name}.qcow2",),
    )


def disk(name: str, data: int = 10 * MIB) -> migrate.Disk:
    return migrate.Disk(
        path=f"/var/lib/libvirt/images/{name}.qcow2",
        format="qcow2",
        virtual_size=GIB,
        data_bytes=data,
        backing=BASE,
        backing_format="raw",
        backing_bytes=100 * MIB,
    )


def snapshot(*hosts: model.HostSnapshot) -> model.HostResults[model.HostSnapshot]:
    return model.HostResults(
        ok={h.spec.name: h for h in hosts}, failed={}, order=[h.spec.name for h in hosts]
    )


def storage(free: int = 10 * GIB, cached: tuple[str, ...] = ()) -> model.StorageFacts:
    return model.StorageFacts(image_dir="/var/lib/libvirt/images", free=free, cached_bases=cached)


def test_parse_disk_info_of_an_overlay() -> None:
    text = json.dumps(
        [
            {
                "filename": "/i/web1.qcow2",
                "format": "qcow2",
                "virtual-size": GIB,
                "actual-size": 2 * MIB,
                "backing-filename": BASE,
                "full-backing-filename": BASE,
                "backing-filename-format": "raw",
            },
            {"filename": BASE, "format": "raw", "virtual-size": 128 * MIB, "actual-size": 17 * MIB},
        ]
    )
    assert migrate.parse_disk_info("/i/web1.qcow2", text) == migrate.Disk(
        path="/i/web1.qcow2",
        format="qcow2",
        virtual_size=GIB,
        data_bytes=2 * MIB,
        backing=BASE,
        backing_format="raw",
        backing_bytes=17 * MIB,
    )


def test_parse_disk_info_of_a_full_copy() -> None:
    text = json.dumps([{"format": "raw", "virtual-size": GIB, "actual-size": 300 * MIB}])
    parsed = migrate.parse_disk_info("/i/x.img", text)
    assert (parsed.backing, parsed.data_bytes, parsed.format) == (None, 300 * MIB, "raw")


def test_a_base_the_destination_lacks_counts_as_disk_it_needs() -> None:
    snap = snapshot(host("a", guest("web1")), host("b"), host("c"))
    # c is the roomier in memory but has no disk room for the base it lacks.
    facts = {"b": storage(cached=("tiny.x86_64.r1.raw",)), "c": storage(free=50 * MIB)}
    move = migrate.choose(guest("web1"), "a", [disk("web1")], snap, facts)
    assert (move.dest, move.shared) == ("b", False)
    assert move.bases == (disk("web1"),)


def test_shared_storage_needs_no_disks_and_no_storage_facts() -> None:
    snap = snapshot(host("a", guest("web1"), shared=True), host("b", shared=True))
    move = migrate.choose(guest("web1"), "a", [], snap, {})
    assert (move.dest, move.shared, move.disks) == ("b", True, ())
    spec = snap.ok["b"].spec
    target = migrate.target(move, spec)
    assert (target.uri, target.copy_storage) == ("qemu+ssh://root@10.0.0.98/system", False)


def test_a_destination_that_did_not_answer() -> None:
    snap = snapshot(host("a", guest("web1")), host("b"))
    snap.failed["c"] = errors.HostUnreachable("c", "10.0.0.99", "no route to host")
    snap.order.append("c")
    with pytest.raises(errors.HostUnreachable):
        migrate.choose(guest("web1"), "a", [disk("web1")], snap, {"b": storage()}, to="c")


def test_drain_sends_a_base_once_per_host_and_spreads() -> None:
    guests = [guest("g1", 2 * GIB), guest("g2", 2 * GIB), guest("g3", GIB)]
    snap = snapshot(host("a", *guests), host("b", memory=5 * GIB), host("c", memory=3 * GIB))
    facts = {"b": storage(free=300 * MIB), "c": storage(free=300 * MIB)}
    plan = migrate.plan_drain("a", snap, facts, {g.name: [disk(g.name)] for g in guests})
    assert [(m.guest.name, getattr(m, "dest", None)) for m in plan] == [
        ("g1", "b"),
        ("g2", "c"),
        ("g3", "b"),
    ]


def test_drain_leaves_what_does_not_fit_or_does_not_run() -> None:
    guests = [guest("big", 4 * GIB), guest("off", state=model.GuestState.SHUTOFF)]
    snap = snapshot(host("a", *guests), host("b", memory=3 * GIB))
    plan = migrate.plan_drain("a", snap, {"b": storage()}, {"big": [disk("big")]})
    assert all(isinstance(item, migrate.NotMoved) for item in plan)
    reasons = {item.guest.name: item.reason for item in plan if isinstance(item, migrate.NotMoved)}
    assert reasons["big"].startswith("no host has room for big")
    assert reasons["off"].startswith("shut off: only running guests")
