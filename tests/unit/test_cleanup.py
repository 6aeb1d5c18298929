"""Leftovers of interrupted runs: reading the host's scan (mclu.read.storage) and deciding what
`mclu cleanup` removes (mclu.decide.cleanup), all pure; the planner's recorded cases
(tests/data/plans/cleanup/*.json, see its README)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from mclu import images, model
from mclu.decide import cleanup
from mclu.read import storage
from tests import plan_cases
from tests.builders import SHUTOFF, guest

IMAGES = "/var/lib/libvirt/images"
CACHE = f"{IMAGES}/mclu-templates"
BUILDING = model.GuestMeta(
    template="tiny", revision="1", built="2026-11-21T02:00:00Z", state="building"
)
READY = model.GuestMeta(template="tiny", revision="1", built="2026-11-21T02:00:00Z")

SCAN = f"""@now 1000
@df
      Avail
53687091200
@dfstatus 0
@cache
tiny.x86_64.r1.raw
@partial
990.5 {CACHE}/tiny.x86_64.r1.raw.partial-0a1b2c3d-web1
999.0 {IMAGES}/web2.qcow2.mclu-new
100.0 {CACHE}/tiny.x86_64.r1.raw.partial-deadbeef
995.0 {CACHE}/tiny.x86_64.r1.raw.partial-0badf00d
@inuse
{IMAGES}/web2.qcow2.mclu-new
@locks
65024 111 web1.lock
65024 222 web3.lock
@proclocks
1: FLOCK  ADVISORY  WRITE 4242 fe:00:222 0 EOF
2: -> FLOCK  ADVISORY  WRITE 4243 fe:00:111 0 EOF
"""


def scan() -> model.LeftoverScan:
    return storage.parse_scan(storage.parse_sections(SCAN))


def test_the_scan_gives_ages_use_owners_and_the_locks_held() -> None:
    found = scan()
    assert found.locked == ("web3",)  # web1's lock has only a waiter: not held
    by_path = {f.path: f for f in found.partial_files}
    assert by_path[f"{CACHE}/tiny.x86_64.r1.raw.partial-0a1b2c3d-web1"] == model.PartialFile(
        f"{CACHE}/tiny.x86_64.r1.raw.partial-0a1b2c3d-web1", 9.5, False, "web1"
    )
    assert by_path[f"{IMAGES}/web2.qcow2.mclu-new"].in_use
    assert by_path[f"{IMAGES}/web2.qcow2.mclu-new"].owner == "web2"
    assert by_path[f"{CACHE}/tiny.x86_64.r1.raw.partial-deadbeef"].owner is None
    assert by_path[f"{CACHE}/tiny.x86_64.r1.raw.partial-deadbeef"].age == 900


def test_the_storage_sections_hold_free_space_and_cached_bases() -> None:
    sections = storage.parse_sections(SCAN)
    assert storage.parse_df_avail("\n".join(sections["df"])) == 53687091200
    assert sections["cache"] == ["tiny.x86_64.r1.raw"]
    assert sections["dfstatus"] == ["0"]


@pytest.mark.parametrize(
    ("path", "owner"),
    [
        (f"{CACHE}/tiny.x86_64.r1.raw.partial-0a1b2c3d-web.1", "web.1"),
        (f"{CACHE}/tiny.x86_64.r1.raw.partial-0a1b2c3d", None),
        (f"{IMAGES}/db-2.img.mclu-new", "db-2"),
        (f"{IMAGES}/db.qcow2.mclu-rebuild", "db"),
        (f"{IMAGES}/db.qcow2.mclu-rebuild.mclu-new", "db"),
        (f"{IMAGES}/odd name.qcow2.mclu-new", None),  # not a guest name: no lock covers it
        (f"{IMAGES}/web1.qcow2", None),
    ],
)
def test_owner_of_a_partial_file(path: str, owner: str | None) -> None:
    assert storage.owner_of(path) == owner


def test_partial_names_carry_their_owner() -> None:
    name = images.partial_name(f"{CACHE}/tiny.raw", "web1")
    assert name.startswith(f"{CACHE}/tiny.raw.partial-") and name.endswith("-web1")
    assert storage.owner_of(name) == "web1"
    assert storage.owner_of(images.partial_name(f"{CACHE}/tiny.raw")) is None


def test_plan_removes_what_no_run_is_at_and_says_why_it_keeps_the_rest() -> None:
    guests = [
        guest("web1", state=SHUTOFF, own_disk=True, meta=BUILDING),
        guest("web3", state=SHUTOFF, own_disk=True, meta=BUILDING),
        guest("db", state=SHUTOFF, own_disk=True, meta=READY),
        guest("pet", state=SHUTOFF, own_disk=True, meta=None),
    ]
    items = {i.name: i for i in cleanup.plan(guests, scan()).items}
    assert items["web1"].remove and items["web1"].reason == "left by an interrupted build"
    assert not items["web3"].remove and "under way" in items["web3"].reason
    assert "db" not in items and "pet" not in items
    assert items[f"{CACHE}/tiny.x86_64.r1.raw.partial-0a1b2c3d-web1"].remove
    assert not items[f"{IMAGES}/web2.qcow2.mclu-new"].remove  # a process names it
    assert items[f"{CACHE}/tiny.x86_64.r1.raw.partial-deadbeef"].remove  # 900 s old
    young = items[f"{CACHE}/tiny.x86_64.r1.raw.partial-0badf00d"]
    assert not young.remove and young.reason.startswith("changed 5 s ago")


def test_a_partial_file_of_a_run_under_way_is_kept() -> None:
    found = model.LeftoverScan(
        partial_files=(
            model.PartialFile(
                f"{IMAGES}/web3.qcow2.mclu-new", age=1000, in_use=False, owner="web3"
            ),
        ),
        locked=("web3",),
    )
    (item,) = cleanup.plan([], found).items
    assert not item.remove and item.reason == "its run is under way (the lock of web3 is held)"


def snapshot_of(
    **hosts: tuple[list[model.Guest], model.LeftoverScan | None],
) -> model.HostResults[model.HostSnapshot]:
    facts = model.HostFacts(
        hostname="h", arch="x86_64", cpus=2, memory_total=1 << 32, memory_free=1 << 32
    )
    return model.HostResults(
        ok={
            name: model.HostSnapshot(
                spec=model.HostSpec(name=name, address=name),
                facts=facts,
                guests=tuple(gs),
                leftovers=found,
            )
            for name, (gs, found) in hosts.items()
        },
        failed={},
        order=list(hosts),
    )


def test_count_and_note() -> None:
    snap = snapshot_of(
        a=([guest("web1", state=SHUTOFF, own_disk=True, meta=BUILDING)], scan()),
        b=([], None),
        c=([guest("x", state=SHUTOFF, own_disk=True, meta=BUILDING)], model.LeftoverScan()),
    )
    counts = cleanup.count(snap)
    assert counts == {"a": 3, "c": 1}  # a: web1, its partial base, the old partial base
    assert cleanup.note(counts) == (
        "note: 4 leftovers of interrupted runs on a (3), c (1) (mclu cleanup removes them)"
    )
    assert cleanup.note({"c": 1}) == (
        "note: 1 leftover of interrupted runs on c (mclu cleanup removes it)"
    )
    assert cleanup.note({}) is None
    # A build reads the scan with the storage facts instead.
    assert cleanup.count(
        snapshot_of(b=([guest("y", state=SHUTOFF, own_disk=True, meta=BUILDING)], None)),
        {"b": model.LeftoverScan()},
    ) == {"b": 1}


def test_only_a_disk_made_since_the_build_began_is_its_own() -> None:
    built = "2026-11-21T02:00:00Z"
    start = datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC).timestamp()
    assert cleanup.disk_made_by_build(start + 5, built)
    assert cleanup.disk_made_by_build(start - 60, built)  # clocks a minute apart
    assert not cleanup.disk_made_by_build(start - 86400, built)  # a pet's disk of yesterday
    assert not cleanup.disk_made_by_build(start, "")


def test_a_guest_is_removed_under_its_lock_from_a_fresh_read() -> None:
    built = datetime.datetime(2026, 11, 21, 2, 0, tzinfo=datetime.UTC).timestamp()
    web1 = guest("web1", own_disk=True, meta=BUILDING)
    assert (
        cleanup.unfinished([web1, guest("db", state=SHUTOFF, own_disk=True, meta=READY)], "web1")
        == web1
    )
    assert (
        cleanup.unfinished([guest("web1", state=SHUTOFF, own_disk=True, meta=READY)], "web1")
        is None
    )  # finished meanwhile
    assert cleanup.unfinished([], "web1") is None  # gone meanwhile
    own, old, gone = f"{IMAGES}/web1.qcow2", f"{IMAGES}/old.qcow2", f"{IMAGES}/gone.qcow2"
    removal = cleanup.removal(web1, [own, old, gone], {own: built + 5, old: built - 86400})
    assert removal == cleanup.GuestRemoval(
        name="web1",
        destroy=True,
        undefine=True,
        disks=(own,),
        files=(own, "/var/log/libvirt/qemu/web1-console.log"),
    )


# --- the recorded cases -------------------------------------------------------------------------


def guest_from(data: dict[str, Any]) -> model.Guest:
    state = data.get("mclu_state")
    meta = None if state is None else model.GuestMeta(template="tiny", revision="1", state=state)
    state = model.GuestState(data.get("state", "shut off"))
    return guest(data["name"], state=state, own_disk=True, meta=meta)


def scan_from(data: dict[str, Any]) -> model.LeftoverScan:
    files = tuple(
        model.PartialFile(f["path"], f["age"], f.get("in_use", False), f.get("owner"))
        for f in data.get("partial_files", [])
    )
    return model.LeftoverScan(partial_files=files, locked=tuple(data.get("locked", [])))


@pytest.mark.parametrize("case", plan_cases.load("cleanup"))
def test_cleanup_case(case: dict[str, Any]) -> None:
    planned = cleanup.plan(
        [guest_from(g) for g in case["guests"]],
        scan_from(case["scan"]),
        case.get("min_age", cleanup.UNOWNED_MIN_AGE),
    )
    assert [
        {
            "kind": i.kind,
            "name": i.name,
            "remove": i.remove,
            "reason": i.reason,
            "steps": list(i.steps),
        }
        for i in planned.items
    ] == case["expected"]["items"]
    assert planned.removable == tuple(i for i in planned.items if i.remove)
