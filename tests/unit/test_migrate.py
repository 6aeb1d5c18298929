"""mclu.decide.migrate: destinations, drain plans; disks as qemu-img describes them
(mclu.read.migrate's parser); and the recorded cases (tests/data/plans/migrate/ and drain/,
see their README)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from mclu import errors, hostpaths, model, sizes
from mclu.act import migrate as act_migrate
from mclu.decide import migrate
from mclu.hosts import fake
from mclu.hosts.fake_files import Image
from mclu.read import migrate as read_migrate
from tests import plan_cases
from tests.builders import SHUTOFF, guest

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
    assert read_migrate.parse_disk_info("/i/web1.qcow2", text) == migrate.Disk(
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
    parsed = read_migrate.parse_disk_info("/i/x.img", text)
    assert (parsed.backing, parsed.data_bytes, parsed.format) == (None, 300 * MIB, "raw")


def test_a_base_the_destination_lacks_counts_as_disk_it_needs() -> None:
    snap = snapshot(host("a", guest("web1", own_disk=True)), host("b"), host("c"))
    # c is the roomier in memory but has no disk room for the base it lacks.
    facts = {"b": storage(cached=("tiny.x86_64.r1.raw",)), "c": storage(free=50 * MIB)}
    move = migrate.choose(
        guest("web1", own_disk=True), "a", migrate.Facts(snap, {"web1": [disk("web1")]}, facts)
    )
    assert (move.dest, move.shared) == ("b", False)
    assert move.bases == (disk("web1"),)


def test_shared_storage_needs_no_disks_and_no_storage_facts() -> None:
    snap = snapshot(host("a", guest("web1", own_disk=True), shared=True), host("b", shared=True))
    move = migrate.choose(guest("web1", own_disk=True), "a", migrate.Facts(snap, {"web1": []}))
    assert (move.dest, move.shared, move.disks) == ("b", True, ())
    spec = snap.ok["b"].spec
    target = act_migrate.target(move, spec)
    assert (target.uri, target.copy_storage) == ("qemu+ssh://root@10.0.0.98/system", False)


def test_a_destination_that_did_not_answer() -> None:
    snap = snapshot(host("a", guest("web1", own_disk=True)), host("b"))
    snap.failed["c"] = errors.HostUnreachable(
        host="c", address="10.0.0.99", reason="no route to host"
    )
    snap.order.append("c")
    with pytest.raises(errors.HostUnreachable):
        migrate.choose(
            guest("web1", own_disk=True),
            "a",
            migrate.Facts(snap, {"web1": [disk("web1")]}, {"b": storage()}),
            to="c",
        )


def test_drain_sends_a_base_once_per_host_and_spreads() -> None:
    guests = [
        guest("g1", memory=2 * GIB, own_disk=True),
        guest("g2", memory=2 * GIB, own_disk=True),
        guest("g3", memory=GIB, own_disk=True),
    ]
    snap = snapshot(host("a", *guests), host("b", memory=5 * GIB), host("c", memory=3 * GIB))
    facts = {"b": storage(free=300 * MIB), "c": storage(free=300 * MIB)}
    plan = migrate.plan_drain(
        "a", migrate.Facts(snap, {g.name: [disk(g.name)] for g in guests}, facts)
    ).items
    assert [(m.guest.name, getattr(m, "dest", None)) for m in plan] == [
        ("g1", "b"),
        ("g2", "c"),
        ("g3", "b"),
    ]


def test_drain_leaves_what_does_not_fit_or_does_not_run() -> None:
    guests = [
        guest("big", memory=4 * GIB, own_disk=True),
        guest("off", state=SHUTOFF, own_disk=True),
    ]
    snap = snapshot(host("a", *guests), host("b", memory=3 * GIB))
    plan = migrate.plan_drain(
        "a", migrate.Facts(snap, {"big": [disk("big")]}, {"b": storage()})
    ).items
    assert all(isinstance(item, migrate.NotMoved) for item in plan)
    reasons = {item.guest.name: item.reason for item in plan if isinstance(item, migrate.NotMoved)}
    assert reasons["big"].startswith("no host can take big")
    assert reasons["off"].startswith("shut off: only running guests")


# --- the recorded cases (tests/data/plans/migrate/ and drain/, see their README) ------------

IMAGES = "/var/lib/libvirt/images"
HOST_DEFAULTS: dict[str, Any] = {
    "memory": "4 GiB",
    "cpus": 2,
    "disk_free": "10 GiB",
    "cached": [],
    "shared_storage": False,
    "guests": [],
}
DISK_DEFAULTS: dict[str, Any] = {
    "format": "qcow2",
    "size": "1 GiB",
    "data": "10 MiB",
    "backing": "tiny.x86_64.r1.raw",
    "backing_format": "raw",
    "backing_data": "100 MiB",
}


def case_host(
    name: str, data: dict[str, Any], seeded: Sequence[str] = ()
) -> tuple[model.HostSnapshot, model.StorageFacts]:
    h = {**HOST_DEFAULTS, **data}
    memory = sizes.parse(h["memory"])
    spec = model.HostSpec(
        name=name,
        address=name,
        user="root",
        shared_storage=h["shared_storage"],
        reserve_memory=0,
        memory=memory,
        cpus=h["cpus"],
    )
    facts = model.HostFacts(
        hostname=name,
        arch="x86_64",
        cpus=h["cpus"],
        memory_total=memory,
        memory_free=memory,
        networks=_names(h.get("networks")),
        bridges=_names(h.get("bridges")),
    )
    guests = tuple(
        model.Guest(
            name=g,
            uuid=f"uuid-{g}",
            state=model.GuestState(state),
            vcpus=vcpus,
            memory=sizes.parse(mem),
            disks=(f"{IMAGES}/{g}.qcow2",),
            networks=tuple(nics[0]) if nics else (),
            cdroms=(f"{IMAGES}/{g}{hostpaths.SEED_SUFFIX}",) if g in seeded else (),
        )
        for g, mem, vcpus, state, *nics in h["guests"]
    )
    storage_facts = model.StorageFacts(
        IMAGES, sizes.parse(h["disk_free"]), tuple(h["cached"]), files=_names(h.get("files"))
    )
    return model.HostSnapshot(spec, facts, guests), storage_facts


def _names(listed: list[str] | None) -> tuple[str, ...] | None:
    return None if listed is None else tuple(listed)


def case_disk(guest_name: str, data: dict[str, Any]) -> migrate.Disk:
    d = {**DISK_DEFAULTS, **data}
    backing = d["backing"] and f"{IMAGES}/mclu-templates/{d['backing']}"
    return migrate.Disk(
        path=f"{IMAGES}/{guest_name}.qcow2",
        format=d["format"],
        virtual_size=sizes.parse(d["size"]),
        data_bytes=sizes.parse(d["data"]),
        backing=backing or None,
        backing_format=d["backing_format"] if backing else None,
        backing_bytes=sizes.parse(d["backing_data"]) if backing else 0,
    )


def case_facts(case: dict[str, Any]) -> migrate.Facts:
    """The snapshot, the storage facts of every host that answered but the source, the
    disks of every guest on the source (unless `disks` lists them), the controller's cache."""
    snap: model.Snapshot = model.HostResults(order=list(case["hosts"]))
    storage_facts = {}
    for name, data in case["hosts"].items():
        if data.get("unreachable"):
            snap.failed[name] = errors.HostUnreachable(
                host=name, address=name, reason="connection refused"
            )
        else:
            snap.ok[name], storage_facts[name] = case_host(name, data, case.get("seeded", ()))
    source = case["source"]
    disks = case.get("disks")
    if disks is None:
        disks = {g.name: [{}] for g in snap.ok[source].guests}
    return migrate.Facts(
        snap,
        {g: [case_disk(g, d) for d in ds] for g, ds in disks.items()},
        {h: f for h, f in storage_facts.items() if h != source},
        frozenset(case.get("local_bases", [])),
    )


def move_fields(item: migrate.Move | migrate.NotMoved) -> dict[str, Any]:
    if isinstance(item, migrate.NotMoved):
        return {"name": item.guest.name, "to": None, "reason": item.reason}
    return {
        "name": item.guest.name,
        "to": item.dest,
        "reason": item.reason,
        "shared": item.shared,
        "disk_bytes": sum(d.data_bytes for d in item.disks),
        "bases": [d.backing for d in item.bases],
        "from_cache": list(item.from_cache),
        "seeds": list(item.seeds),
        "steps": list(item.steps),
        "undo": list(item.undo),
    }


def expected_move(data: dict[str, Any]) -> dict[str, Any]:
    return {k: sizes.parse(v) if k == "disk_bytes" else v for k, v in data.items()}


def run_migrate(case: dict[str, Any]) -> list[migrate.Move | migrate.NotMoved]:
    facts = case_facts(case)
    request = migrate.MigrateRequest(**case["request"], inventory_path="hosts.toml")
    guest = next(g for g in facts.snapshot.ok[case["source"]].guests if g.name == request.name)
    migrate.check_source(guest, case["source"], request.to, facts.snapshot)
    return [migrate.plan_migrate(request, case["source"], guest, facts)]


def run_drain(case: dict[str, Any]) -> list[migrate.Move | migrate.NotMoved]:
    return list(migrate.plan_drain(case["source"], case_facts(case)).items)


def check_case(case: dict[str, Any], run: Callable[[dict[str, Any]], Any]) -> None:
    expected = case["expected"]
    if plan_cases.refused(expected, lambda: run(case)):
        return
    moves = [move_fields(m) for m in run(case)]
    wanted = [expected_move(m) for m in expected["moves"]]
    # Each expected move lists the fields the case is about; name and to always.
    assert [{k: m[k] for k in w} for m, w in zip(moves, wanted, strict=True)] == wanted


@pytest.mark.parametrize("case", plan_cases.load("migrate"))
def test_migrate_case(case: dict[str, Any]) -> None:
    check_case(case, run_migrate)


@pytest.mark.parametrize("case", plan_cases.load("drain"))
def test_drain_case(case: dict[str, Any]) -> None:
    check_case(case, run_drain)


# --- a seed carried (mclu.act.migrate on fake hosts with files) --------------------------------

SEED = f"{IMAGES}/web1{hostpaths.SEED_SUFFIX}"
SEED_BYTES = b"a NoCloud seed, labelled cidata"


class Said:
    """A reporter that keeps what a move says."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    def step(self, host: str | None, guest: str | None, text: str) -> None:
        self.steps.append(text)

    def transfer(self, key: str, done: int, total: int) -> None:
        pass


def seeded_cluster() -> fake.FakeCluster:
    """Host a runs web1 (a 1 GiB qcow2 disk with no backing file) still holding its seed."""
    cluster = fake.FakeCluster.of("a", "b")
    a = cluster.hosts["a"]
    web1 = guest("web1", disks=(f"{IMAGES}/web1.qcow2",))
    a.guests["web1"] = dataclasses.replace(web1, cdroms=(SEED,))
    a.files.write(f"{IMAGES}/web1.qcow2", Image("qcow2", GIB, data=10 * MIB))
    a.files.write(SEED, SEED_BYTES)
    return cluster


def seeded_move(cluster: fake.FakeCluster) -> migrate.Move:
    guest_a = cluster.hosts["a"].guests["web1"]
    qcow2 = migrate.Disk(f"{IMAGES}/web1.qcow2", "qcow2", GIB, 10 * MIB)
    snap = snapshot(host("a", guest_a), host("b"))
    facts = migrate.Facts(snap, {"web1": (qcow2,)}, {"b": storage()})
    return migrate.plan_migrate(migrate.MigrateRequest("web1", to="b"), "a", guest_a, facts)


def execute(cluster: fake.FakeCluster, move: migrate.Move, said: Said) -> None:
    specs = {n: cluster.spec(n) for n in ("a", "b")}

    async def run() -> None:
        async with cluster.open(specs["a"]) as a, cluster.open(specs["b"]) as b:
            await act_migrate.execute(move, {"a": a, "b": b}, specs, Path("/nonexistent"), said)

    asyncio.run(run())


def test_a_seed_the_guest_holds_goes_with_it_and_leaves_the_source() -> None:
    cluster = seeded_cluster()
    move = seeded_move(cluster)
    assert move.seeds == (SEED,)
    said = Said()
    execute(cluster, move, said)
    a, b = cluster.hosts["a"], cluster.hosts["b"]
    assert "web1" in b.guests and "web1" not in a.guests
    assert b.files.files[SEED] == SEED_BYTES  # the same medium at the same path
    assert SEED not in a.files.files and f"{IMAGES}/web1.qcow2" not in a.files.files
    assert "sending its cloud-init seed" in said.steps
    assert not [s for s in said.steps if s.startswith("could not remove")]


def test_a_failed_move_takes_the_seed_it_sent_back_and_the_source_keeps_its_own() -> None:
    cluster = seeded_cluster()
    cluster.hosts["b"].refuse_migration = "Storage pool not found"
    with pytest.raises(errors.MigrationFailed) as failed:
        execute(cluster, seeded_move(cluster), Said())
    assert failed.value.step == "migrate"
    a, b = cluster.hosts["a"], cluster.hosts["b"]
    assert "web1" in a.guests and "web1" not in b.guests
    assert a.files.files[SEED] == SEED_BYTES
    assert SEED not in b.files.files and f"{IMAGES}/web1.qcow2" not in b.files.files


def test_a_seed_that_appeared_at_the_destination_fails_the_move_before_anything_is_made() -> None:
    cluster = seeded_cluster()
    move = seeded_move(cluster)  # planned before another run put a file there
    cluster.hosts["b"].files.write(SEED, b"another guest's")
    with pytest.raises(errors.MigrationFailed) as failed:
        execute(cluster, move, Said())
    assert (failed.value.step, failed.value.reason) == (
        "check disks",
        f"{SEED} already exists there",
    )
    b = cluster.hosts["b"]
    assert b.files.files[SEED] == b"another guest's"  # never replaced
    assert f"{IMAGES}/web1.qcow2" not in b.files.files
    assert "web1" in cluster.hosts["a"].guests
