"""mclu.decide.build: recorded cases (tests/data/plans/build/*.json, see its README)
and each error."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from typing import Any

import pytest

from mclu import errors, model, sizes
from mclu.cli import build as build_cli
from mclu.cli import main, output
from mclu.decide import build as plan
from mclu.model import (
    BaseImage,
    Guest,
    GuestMeta,
    GuestState,
    HostFacts,
    HostSnapshot,
    HostSpec,
    ResolvedTemplate,
    StorageFacts,
)
from tests import plan_cases

NOW = "2024-05-01T10:00:00Z"
IMAGES = "/var/lib/libvirt/images"
MiB, GiB = 1 << 20, 1 << 30

HOST_DEFAULTS: dict[str, Any] = {
    "memory": "8 GiB",
    "cpus": 4,
    "disk_free": "50 GiB",
    "cached": False,
    "domain_type": "qemu",
    "network": "user",
    "reserve_memory": 0,
    "guests": [],
    "cpu_ratio": 1.0,
}
TEMPLATE_DEFAULTS: dict[str, Any] = {
    "name": "tiny",
    "revision": 3,
    "size": "128 MiB",
    "data": "17 MiB",
    "memory": "256 MiB",
    "vcpus": 1,
    "network": None,
    "full_copy": False,
    "disk_bus": "virtio",
    "disk_size": None,
    "sha512": "ab" * 64,
    "download_size": None,
    "personalise": "libguestfs",
}
SIZE_KEYS = ("size", "memory", "disk_size", "send_bytes", "disk_free", "data")


# --- building inputs from a case ------------------------------------------------------------


def size(value: Any) -> Any:
    return None if value is None else sizes.parse(value)


def template_from(data: dict[str, Any]) -> ResolvedTemplate:
    t = {**TEMPLATE_DEFAULTS, **data}
    base = BaseImage(
        template=t["name"],
        revision=t["revision"],
        arch="x86_64",
        size=size(t["size"]),
        data_bytes=size(t["data"]),
        digest=t["sha512"],
    )
    return ResolvedTemplate(
        name=t["name"],
        base=base,
        source_uri=f"file:///repo/{t['name']}.xz",
        sha512=t["sha512"],
        download_size=size(t["download_size"]),
        memory=size(t["memory"]),
        vcpus=t["vcpus"],
        disk_bus=t["disk_bus"],
        network=t["network"],
        full_copy=t["full_copy"],
        disk_size=size(t["disk_size"]),
        personalise=t["personalise"],
    )


def host_from(
    name: str, data: dict[str, Any], base: BaseImage
) -> tuple[HostSnapshot, StorageFacts]:
    h = {**HOST_DEFAULTS, **data}
    spec = HostSpec(
        name=name,
        address=name,
        domain_type=h["domain_type"],
        network=h["network"],
        memory=size(h["memory"]),
        cpus=h["cpus"],
        reserve_memory=size(h["reserve_memory"]),
        cpu_ratio=h["cpu_ratio"],
    )
    facts = HostFacts(
        hostname=name,
        arch="x86_64",
        cpus=h["cpus"],
        memory_total=spec.memory or 0,
        memory_free=spec.memory or 0,
        networks=_names(h.get("networks")),
        bridges=_names(h.get("bridges")),
    )
    guests = tuple(
        Guest(name=g, uuid=f"uuid-{g}", state=GuestState(state), vcpus=vcpus, memory=size(memory))
        for g, memory, vcpus, state in h["guests"]
    )
    # `cached`: the base (by its digest) is there; `cache`: the file names there, as listed
    cached = (*((base.cache_name,) if h["cached"] else ()), *h.get("cache", ()))
    storage = StorageFacts(IMAGES, size(h["disk_free"]), cached, files=_names(h.get("files")))
    return HostSnapshot(spec, facts, guests), storage


def _names(listed: list[str] | None) -> tuple[str, ...] | None:
    return None if listed is None else tuple(listed)


def cluster(
    hosts: dict[str, Any], base: BaseImage
) -> tuple[model.Snapshot, dict[str, StorageFacts]]:
    snapshot: model.Snapshot = model.HostResults(order=list(hosts))
    storage = {}
    for name, data in hosts.items():
        if data.get("unreachable"):
            snapshot.failed[name] = errors.HostUnreachable(
                host=name, address=name, reason="connection refused"
            )
            continue
        snapshot.ok[name], storage[name] = host_from(name, data, base)
    return snapshot, storage


def request_from(data: dict[str, Any]) -> plan.BuildRequest:
    fields = {k: size(v) if k in SIZE_KEYS else v for k, v in data.items()}
    return plan.BuildRequest(template="tiny", **{**fields, "names": tuple(data["names"])})


def run_case(case: dict[str, Any]) -> plan.BuildPlan:
    template = template_from(case.get("template", {}))
    snapshot, storage = cluster(case["hosts"], template.base)
    return plan.plan_build(
        request_from(case["request"]),
        snapshot,
        storage,
        template,
        now=NOW,
        inventory_path="hosts.toml",
        local_cached=case.get("controller_cached", False),
    )


def guest_fields(g: plan.GuestPlan) -> dict[str, Any]:
    return {
        "name": g.name,
        "host": g.host,
        "reason": g.reason,
        "base_cached": g.base_cached,
        "send_bytes": g.send_bytes,
        "base_path": g.base_path,
        "disk_path": g.disk_path,
        "disk_size": g.disk_size,
        "disk_format": g.spec.disk_format,
        "memory": g.spec.memory,
        "vcpus": g.spec.vcpus,
        "domain_type": g.spec.domain_type,
        "network": g.spec.network,
        "options": [list(o) for o in g.spec.meta.options],
        "personalise": g.personalise,
        "seed_path": g.seed_path,
    }


def expected_guest(data: dict[str, Any]) -> dict[str, Any]:
    return {k: size(v) if k in SIZE_KEYS else v for k, v in data.items()}


# --- the recorded cases --------------------------------------------------------------------


@pytest.mark.parametrize("case", plan_cases.load("build"))
def test_build_case(case: dict[str, Any]) -> None:
    expected = case["expected"]
    if plan_cases.refused(expected, lambda: run_case(case)):
        return
    built = run_case(case)
    wanted = [expected_guest(g) for g in expected["guests"]]
    # Each expected guest lists the fields the case is about; name and host always.
    assert [
        {k: guest_fields(g)[k] for k in w} for g, w in zip(built.guests, wanted, strict=True)
    ] == wanted
    assert built.send_bytes == size(expected.get("send_bytes", 0))
    assert list(built.hosts_needing_base) == expected.get("hosts_needing_base", [])
    # Downloaded when a host lacks the base, unless the controller has it (default: not).
    assert built.download == expected.get("download", bool(built.hosts_needing_base))
    assert list(built.warnings) == expected.get("warnings", [])


# --- each error, directly -----------------------------------------------------------------

TEMPLATE = template_from({})


def build(
    names: tuple[str, ...], hosts: dict[str, Any] | None = None, **request: Any
) -> plan.BuildPlan:
    snapshot, storage = cluster(hosts or {"ham0": {}, "ham1": {}}, TEMPLATE.base)
    return plan.plan_build(
        plan.BuildRequest("tiny", names, **request),
        snapshot,
        storage,
        TEMPLATE,
        now=NOW,
        inventory_path="hosts.toml",
    )


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-web",
        ".web",
        "web 1",
        "web/1",
        "we$b",
        "a;b",
        "x" * 64,
        "ham0:",
        ":web1",
        "ham0:web:1",
        "../web",
        "web\n1",
        "web1\n",
        "wëb",
    ],
)
def test_invalid_guest_names(name: str) -> None:
    with pytest.raises(errors.InvalidGuestName) as raised:
        build((name,))
    assert raised.value.exit_code == errors.EXIT_USAGE and raised.value.name == name


@pytest.mark.parametrize("name", ["w", "web1", "Web-1.a_b", "1" * 63, "ham0:web1"])
def test_valid_guest_names(name: str) -> None:
    assert build((name,)).guests[0].name == name.rpartition(":")[2]


def test_same_name_twice_even_on_different_hosts() -> None:
    with pytest.raises(errors.DuplicateGuestName, match="'web1' is given more than once") as r:
        build(("ham0:web1", "ham1:web1"))
    assert r.value.exit_code == errors.EXIT_USAGE


def test_name_taken_on_any_host_even_when_pinned_elsewhere() -> None:
    hosts = {"ham0": {}, "ham1": {"guests": [["web1", "1 GiB", 1, "shut off"]]}}
    with pytest.raises(errors.GuestExists, match="ham1: a guest named 'web1' already exists"):
        build(("web1",), hosts, on="ham0")


@pytest.mark.parametrize("names", [("ham9:web1",), ("web1",)])
def test_unknown_pinned_host(names: tuple[str, ...]) -> None:
    with pytest.raises(errors.UnknownHost, match=r"'ham9' \(the inventory hosts.toml has: ham0"):
        build(names, on="ham9")


def test_a_host_that_did_not_answer_is_a_warning_naming_the_unchecked_names() -> None:
    """mclu keeps no state: a host that is off may hold a guest of the new name."""
    hosts = {"ham0": {}, "ham1": {"unreachable": True}, "ham2": {"unreachable": True}}
    built = build(("web1", "web2"), hosts)
    assert built.warnings == tuple(
        f"{h} did not answer (off): the names web1, web2 could not be checked there; a guest "
        "there of that name would make two (`mclu list` flags them)"
        for h in ("ham1", "ham2")
    )
    assert build_cli.plan_text(built).splitlines()[-2:] == [f"warning: {w}" for w in built.warnings]
    assert build_cli.plan_json(built)["warnings"] == list(built.warnings)
    assert build(("web1",)).warnings == ()  # every host answered
    assert build_cli.plan_json(build(("web1",)))["warnings"] == []
    # A host whose guests answered but whose image directory did not: its names were checked.
    snapshot, storage = cluster({"ham0": {}, "ham1": {}}, TEMPLATE.base)
    del storage["ham1"]
    assert (
        plan.plan_build(
            plan.BuildRequest("tiny", ("web1",)), snapshot, storage, TEMPLATE, now=NOW
        ).warnings
        == ()
    )


def test_unreachable_pinned_host_raises_its_own_error() -> None:
    with pytest.raises(errors.HostUnreachable, match="ham1: unreachable"):
        build(("ham1:web1",), {"ham0": {}, "ham1": {"unreachable": True}})


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"size": 64 * MiB}, "--size 64 MiB: smaller than the template's 128 MiB disk"),
        ({"size": 65 << 40}, "--size 65 TiB: larger than 64 TiB"),
        ({"memory": 8 * MiB}, "--memory 8 MiB: must be from 16 MiB to 16 TiB"),
        ({"memory": 17 << 40}, "--memory 17 TiB: must be from 16 MiB"),
        ({"vcpus": 0}, "--vcpus 0: must be from 1 to 512"),
        ({"vcpus": 513}, "--vcpus 513: must be from 1 to 512"),
        ({"transport": "scp"}, "--transport scp: use one of stream, nbd"),
    ],
)
def test_options_out_of_range(request_: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.InvalidBuildOption) as raised:
        build(("web1",), **request_)
    assert str(raised.value).startswith(message)
    assert raised.value.exit_code == errors.EXIT_USAGE


def test_option_checks_come_before_name_checks() -> None:
    with pytest.raises(errors.InvalidBuildOption):
        build(("bad name",), vcpus=0)


def test_boundaries_are_allowed() -> None:
    built = build(
        ("web1",),
        {"ham0": {"cpus": 512, "memory": "1 TiB"}},
        memory=16 * MiB,
        vcpus=512,
        size=128 * MiB,
    )
    assert (built.guests[0].spec.memory, built.guests[0].spec.vcpus) == (16 * MiB, 512)


def test_no_capacity_names_every_host_and_the_unreachable() -> None:
    hosts = {"ham0": {"memory": "512 MiB"}, "ham1": {"unreachable": True}}
    with pytest.raises(errors.NoCapacity) as raised:
        build(("web1",), hosts, memory=1 * GiB)
    assert str(raised.value) == (
        "no host can take web1 (1 GiB memory, 1 vCPU, 17 MiB disk): "
        "ham0: needs 1 GiB memory, 512 MiB free (not asked: ham1 did not answer)"
    )


def test_a_host_without_storage_facts_is_not_a_candidate() -> None:
    snapshot, storage = cluster({"ham0": {}, "ham1": {"memory": "1 GiB"}}, TEMPLATE.base)
    del storage["ham0"]
    with pytest.raises(errors.NoCapacity, match=r"ham1: needs .*\(not asked: ham0 did not answer"):
        plan.plan_build(
            plan.BuildRequest("tiny", ("web1",), memory=2 * GiB),
            snapshot,
            storage,
            TEMPLATE,
            now=NOW,
        )
    with pytest.raises(errors.HostError, match="ham0: its image directory could not be read"):
        plan.plan_build(
            plan.BuildRequest("tiny", ("web1",), on="ham0"), snapshot, storage, TEMPLATE, now=NOW
        )


# --- what a guest plan holds ---------------------------------------------------------------


def test_guest_metadata_records_template_time_and_the_users_options() -> None:
    built = build(("web1",), size=GiB + 1, memory=512 * MiB, vcpus=2, full_copy=True)
    assert built.guests[0].spec.meta == GuestMeta(
        template="tiny",
        revision="3",
        built=NOW,
        state="building",
        options=(
            ("size", str(GiB + 1)),
            ("memory", "512 MiB"),
            ("vcpus", "2"),
            ("full_copy", "true"),
        ),
    )
    assert build(("web2",)).guests[0].spec.meta.options == ()


def test_paths_on_the_host() -> None:
    g = build(("web1",)).guests[0]
    # Named by the first 16 hex digits of its sha512: other content is another file.
    assert g.base_path == f"{IMAGES}/mclu-templates/tiny.x86_64.r3.abababababababab.raw"
    assert (g.disk_path, g.spec.disk_path, g.full_copy) == (f"{IMAGES}/web1.qcow2",) * 2 + (False,)


def test_template_network_and_bus_override_the_host() -> None:
    template = replace(TEMPLATE, network="bridge:br0", disk_bus="sata")
    snapshot, storage = cluster({"ham0": {"network": "network:default"}}, template.base)
    g = plan.plan_build(
        plan.BuildRequest("tiny", ("web1",)), snapshot, storage, template, now=NOW
    ).guests[0]
    assert (g.spec.network, g.spec.disk_bus, g.spec.arch) == ("bridge:br0", "sata", "x86_64")


def test_split_name() -> None:
    assert plan.split_name("web1") == ("web1", None)
    assert plan.split_name("ham0:web1") == ("web1", "ham0")
    assert plan.split_name(":web1") == ("web1", "")


# --- rendering (mclu.cli.output) -----------------------------------------------------------


def test_plan_text() -> None:
    hosts = {"ham0": {"cached": True, "memory": "4 GiB"}, "ham1": {"memory": "4 GiB"}}
    built = build(("web1", "web2", "web3"), hosts)
    assert build_cli.plan_text(built) == "\n".join(
        [
            "build 3 guests from tiny r3:",
            "  web1 → ham0 (most free memory: 3.75 GiB after; tiny r3 cached there): 1 vCPU, "
            f"256 MiB memory, 128 MiB overlay {IMAGES}/web1.qcow2",
            "  web2 → ham1 (most free memory: 3.75 GiB after; tiny r3 sent there): 1 vCPU, "
            f"256 MiB memory, 128 MiB overlay {IMAGES}/web2.qcow2",
            "  web3 → ham0 (most free memory: 3.5 GiB after; tiny r3 cached there): 1 vCPU, "
            f"256 MiB memory, 128 MiB overlay {IMAGES}/web3.qcow2",
            "download tiny r3 into the controller's cache: size not listed",
            "send tiny r3 to ham1: 17 MiB",
        ]
    )


def test_plan_text_base_shared_and_nothing_to_send() -> None:
    text = build_cli.plan_text(build(("ham0:a", "ham0:b"), {"ham0": {}}, full_copy=True))
    assert "b → ham0 (as asked: 7.5 GiB memory free after; tiny r3 sent there with a)" in text
    assert "128 MiB raw full copy /var/lib/libvirt/images/b.img" in text
    cached = build_cli.plan_text(build(("a",), {"ham0": {"cached": True}}))
    assert cached.endswith("nothing to download or send: tiny r3 is cached on every host chosen")
    listed = replace(TEMPLATE, download_size=11 * MiB)
    snapshot, storage = cluster({"ham0": {}}, listed.base)
    request = plan.BuildRequest("tiny", ("a",))
    fetch = plan.plan_build(request, snapshot, storage, listed, now=NOW)
    assert "\ndownload tiny r3 into the controller's cache: 11 MiB\n" in build_cli.plan_text(fetch)
    have = plan.plan_build(request, snapshot, storage, listed, now=NOW, local_cached=True)
    assert "\nnothing to download: tiny r3 is in the controller's cache\n" in build_cli.plan_text(
        have
    )
    two = build_cli.plan_text(build(("ham0:a", "ham1:b")))
    assert two.endswith("send in all: 34 MiB over stream")


def test_a_plan_warning_is_shown_off_a_terminal_where_progress_is_quiet() -> None:
    """A build's plan lines are progress, silent unless stderr is a terminal (or -v); its
    warnings are not: a cron job's mail must say that a name could not be checked."""
    err = io.StringIO()
    with main.logging_to(err, 0):
        reporter = output.LineReporter(err, bars=False)
        reporter.step(None, None, "build 1 guest from tiny r3:")
        reporter.step(None, None, "warning: ham1 did not answer (off): ...")
    assert err.getvalue() == "mclu: warning: ham1 did not answer (off): ...\n"


def test_plan_json() -> None:
    document = build_cli.plan_json(build(("web1",), {"ham0": {}}, transport="nbd"))
    assert json.loads(json.dumps(document)) == document
    assert document["send_bytes"] == 17 * MiB and document["transport"] == "nbd"
    assert document["hosts_needing_base"] == ["ham0"]
    assert document["base"] == f"tiny.x86_64.r3.{'ab' * 8}.raw"
    assert document["download"] == {"bytes": None, "from": "file:///repo/tiny.xz"}
    assert document["guests"][0] == {
        "name": "web1",
        "host": "ham0",
        "reason": "most free memory: 7.75 GiB after",
        "domain_type": "qemu",
        "memory": 256 * MiB,
        "vcpus": 1,
        "network": "user",
        "disk_path": f"{IMAGES}/web1.qcow2",
        "disk_format": "qcow2",
        "disk_size": 128 * MiB,
        "full_copy": False,
        "base_path": f"{IMAGES}/mclu-templates/tiny.x86_64.r3.{'ab' * 8}.raw",
        "base_cached": False,
        "send_bytes": 17 * MiB,
        "personalise": "libguestfs",
        "seed_path": None,
    }
