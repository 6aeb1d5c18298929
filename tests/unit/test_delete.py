"""mclu.decide.delete: recorded cases (tests/data/plans/delete/*.json, see its README)."""

from __future__ import annotations

from typing import Any

import pytest

from mclu import errors, model
from mclu.decide import delete
from tests import plan_cases

IMAGES = "/var/lib/libvirt/images"
FACTS = model.HostFacts(
    hostname="h", arch="x86_64", cpus=4, memory_total=8 << 30, memory_free=8 << 30
)


def guest_from(data: dict[str, Any]) -> model.Guest:
    return model.Guest(
        name=data["name"],
        uuid=f"uuid-{data['name']}",
        state=model.GuestState(data.get("state", "running")),
        vcpus=1,
        memory=1 << 28,
        disks=tuple(data["disks"]),
        persistent=data.get("persistent", True),
    )


def snapshot_from(hosts: dict[str, Any]) -> model.Snapshot:
    snapshot: model.Snapshot = model.HostResults(order=list(hosts))
    for name, data in hosts.items():
        spec = model.HostSpec(
            name=name,
            address=name,
            image_dir=data.get("image_dir", IMAGES),
            shared_storage=data.get("shared_storage", False),
        )
        guests = tuple(guest_from(g) for g in data["guests"])
        snapshot.ok[name] = model.HostSnapshot(spec=spec, facts=FACTS, guests=guests)
    return snapshot


def request_from(data: dict[str, Any]) -> delete.DeleteRequest:
    deleted = frozenset((host, name) for host, name in data.get("deleted", []))
    return delete.DeleteRequest(
        host=data["host"], name=data["name"], force=data.get("force", False), deleted=deleted
    )


@pytest.mark.parametrize("case", plan_cases.load("delete"))
def test_delete_case(case: dict[str, Any]) -> None:
    expected = case["expected"]
    snapshot = snapshot_from(case["hosts"])
    request = request_from(case["request"])
    if plan_cases.refused(
        expected,
        lambda: delete.backing_to_read(request, snapshot),  # refused before any read
        lambda: delete.plan(request, snapshot, case.get("backing", [])),
    ):
        return
    assert list(delete.backing_to_read(request, snapshot)) == expected["read"]
    planned = delete.plan(request, snapshot, case.get("backing", []))
    assert (planned.host, planned.guest) == (request.host, request.name)
    assert planned.destroy == expected["destroy"]
    assert planned.undefine == expected["undefine"]
    assert list(planned.remove) == expected["remove"]
    assert [[k.path, k.reason] for k in planned.keep] == expected["keep"]


def test_a_guest_the_snapshot_does_not_hold_is_not_found() -> None:
    snapshot = snapshot_from({"a": {"guests": []}})
    with pytest.raises(errors.GuestNotFound):
        delete.plan(delete.DeleteRequest(host="a", name="web1"), snapshot, ())
