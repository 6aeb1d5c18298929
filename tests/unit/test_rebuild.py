"""mclu.decide.rebuild: AGE, which guests a rebuild takes or skips and why, the new disk, and
what a failed rebuild says it left; the recorded cases (tests/data/plans/rebuild/, see its
README); and the command line that puts the old disk back."""

from __future__ import annotations

import dataclasses
import datetime
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mclu import errors, model
from mclu.decide import migrate, rebuild
from mclu.hosts import commands
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
from tests.builders import guest

NOW = datetime.datetime(2026, 11, 21, 12, 0, 0, tzinfo=datetime.UTC)
IMAGES = "/var/lib/libvirt/images"
HOUR, DAY = 3600, 86400


# --- AGE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 7 * DAY),
        ("12h", 12 * HOUR),
        ("30m", 1800),
        ("90s", 90),
        ("2w", 14 * DAY),
        ("1d12h", 36 * HOUR),
        ("1.5h", 5400),
        (" 7D ", 7 * DAY),
        ("1h 30m", 5400),
        ("0s", 0),
    ],
)
def test_parse_age(text: str, seconds: float) -> None:
    assert rebuild.parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "-1d", "7d-", "1e3s", "7 days", "h12"])
def test_parse_age_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not an age"):
        rebuild.parse_age(text)


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("smhdw")), min_size=1, max_size=4)
)
def test_parse_age_sums_its_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert rebuild.parse_age(text) == sum(n * rebuild.AGE_UNITS[u] for n, u in parts)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5 s"), (600, "10 min"), (5400, "1.5 h"), (3 * DAY, "3 d"), (HOUR, "1 h")],
)
def test_age_text(seconds: float, text: str) -> None:
    assert rebuild.age_text(seconds) == text


def test_parse_built() -> None:
    assert rebuild.parse_built("2026-11-20T12:00:00Z") == NOW - datetime.timedelta(days=1)
    assert rebuild.parse_built("2026-11-20T12:00:00") == NOW - datetime.timedelta(days=1)
    assert rebuild.parse_built("") is None
    assert rebuild.parse_built("yesterday") is None


# --- planning --------------------------------------------------------------------------------


def meta(
    built: str = "2026-11-01T00:00:00Z",
    template: str = "tiny",
    revision: str = "1",
    state: str = "ready",
) -> GuestMeta:
    return GuestMeta(
        template=template,
        revision=revision,
        built=built,
        state=state,
        options=(("memory", "256 MiB"),),
    )


def host(name: str, *guests: Guest) -> HostSnapshot:
    return HostSnapshot(
        spec=HostSpec(name=name, address=f"{name}.test"),
        facts=HostFacts(
            hostname=name, arch="x86_64", cpus=4, memory_total=8 << 30, memory_free=8 << 30
        ),
        guests=guests,
    )


def snap(
    *hosts: HostSnapshot, failed: dict[str, errors.HostError] | None = None
) -> model.HostResults[HostSnapshot]:
    failed = failed or {}
    return model.HostResults(
        ok={h.spec.name: h for h in hosts},
        failed=dict(failed),
        order=[*(h.spec.name for h in hosts), *failed],
    )


def template(name: str = "tiny", revision: int = 2) -> ResolvedTemplate:
    return ResolvedTemplate(
        name=name,
        base=BaseImage(
            template="tiny", revision=revision, arch="x86_64", size=128 << 20, digest="0" * 128
        ),
        source_uri="file:///repo/tiny.xz",
        sha512="0" * 128,
    )


def resolve(name: str) -> ResolvedTemplate | errors.MCLUError:
    if name == "gone":
        return errors.UnknownTemplate(name=name, known=["tiny"])
    return template(name)


def plan(
    *names: str,
    all: bool = False,
    older_than: float | None = None,
    hosts: model.HostResults[HostSnapshot] | None = None,
) -> rebuild.RebuildPlan:
    request = rebuild.RebuildRequest(names=names, all=all, older_than=older_than)
    hosts = hosts if hosts is not None else CLUSTER
    templates = {name: resolve(name) for name in rebuild.template_names(hosts)}
    return rebuild.plan_rebuild(request, hosts, templates, now=NOW)


CLUSTER = snap(
    host(
        "a",
        guest("web1", own_disk=True, meta=meta()),
        guest("pet", own_disk=True),
        guest("young", own_disk=True, meta=meta("2026-11-21T11:00:00Z")),
    ),
    host(
        "b",
        guest("db", own_disk=True, meta=meta(revision="2"), state=GuestState.SHUTOFF),
        guest("half", own_disk=True, meta=meta(state="building")),
    ),
)


def names(items: tuple[rebuild.Rebuild, ...]) -> list[tuple[str, str]]:
    return [(r.host, r.name) for r in items]


def test_named_guests_are_rebuilt_from_the_newest_revision() -> None:
    chosen = plan("web1", "b:db")
    assert names(chosen.rebuild) == [("a", "web1"), ("b", "db")]
    assert [r.revision for r in chosen.rebuild] == ["2", "2"]
    assert chosen.rebuild[0].meta == meta()
    assert chosen.skipped == () and chosen.refused == ()


def test_a_guest_named_twice_is_rebuilt_once() -> None:
    assert names(plan("web1", "a:web1", "web1").rebuild) == [("a", "web1")]


def test_all_takes_every_guest_mclu_built_and_skips_the_rest_saying_why() -> None:
    chosen = plan(all=True)
    assert names(chosen.rebuild) == [("a", "web1"), ("a", "young"), ("b", "db")]
    assert [(s.host, s.name) for s in chosen.skipped] == [("a", "pet"), ("b", "half")]
    assert "not built by mclu" in chosen.skipped[0].reason
    assert "pet" in chosen.skipped[0].reason
    assert "build has not finished" in chosen.skipped[1].reason
    assert chosen.refused == ()


def test_a_named_pet_is_refused_never_rebuilt() -> None:
    chosen = plan("pet", "web1")
    assert names(chosen.rebuild) == [("a", "web1")]
    (refused,) = chosen.refused
    assert isinstance(refused.error, errors.NotRebuildable)
    assert str(refused.error) == (
        "a: pet cannot be rebuilt: not built by mclu (no mclu metadata): a pet, never rebuilt"
    )


@pytest.mark.parametrize(
    ("g", "why"),
    [
        (guest("t", own_disk=True, meta=meta(), persistent=False), "transient"),
        (guest("t", meta=meta(), disks=()), "no disk"),
        (guest("t", meta=meta(), disks=("pool/vol",)), "not a file"),
        (guest("t", meta=meta(), disks=("/dev/sdb",)), "not a file"),
    ],
)
def test_guests_that_cannot_be_rebuilt(g: Guest, why: str) -> None:
    assert why in (rebuild.cannot_rebuild(g) or "")
    (refused,) = plan("t", hosts=snap(host("a", g))).refused
    assert why in str(refused.error)


def test_if_older_than_skips_younger_guests_as_asked() -> None:
    chosen = plan(all=True, older_than=2 * HOUR)
    assert names(chosen.rebuild) == [("a", "web1"), ("b", "db")]
    young = next(s for s in chosen.skipped if s.name == "young")
    assert young.reason == ("built 1 h ago (2026-11-21T11:00:00Z), not older than 2 h")
    assert plan("young", older_than=30 * 60).rebuild != ()
    assert plan("young", older_than=2 * HOUR).skipped[0].name == "young"


def test_an_unknown_build_time_counts_as_old() -> None:
    hosts = snap(
        host(
            "a",
            guest("x", own_disk=True, meta=meta(built="")),
            guest("y", own_disk=True, meta=meta(built="garbage")),
        )
    )
    assert names(plan(all=True, older_than=DAY, hosts=hosts).rebuild) == [("a", "x"), ("a", "y")]


def test_a_template_that_cannot_be_resolved_refuses_that_guest_only() -> None:
    hosts = snap(
        host(
            "a",
            guest("x", own_disk=True, meta=meta(template="gone")),
            guest("y", own_disk=True, meta=meta()),
        )
    )
    chosen = plan("x", "y", hosts=hosts)
    assert names(chosen.rebuild) == [("a", "y")]
    assert "its template 'gone' cannot be resolved: unknown template" in str(
        chosen.refused[0].error
    )


def test_names_not_found_or_ambiguous_or_on_a_failed_host_are_refused() -> None:
    down = errors.HostUnreachable(host="c", address="c.test", reason="timed out")
    hosts = snap(
        host(
            "a",
            guest("web1", own_disk=True, meta=meta()),
            guest("twin", own_disk=True, meta=meta()),
        ),
        host("b", guest("twin", own_disk=True, meta=meta())),
        failed={"c": down},
    )
    chosen = plan("nope", "twin", "c:web9", "web1", hosts=hosts)
    assert names(chosen.rebuild) == [("a", "web1")]
    kinds = [type(r.error) for r in chosen.refused]
    assert kinds == [errors.GuestNotFound, errors.GuestAmbiguous, errors.HostUnreachable]
    assert "(c did not answer: it may be there)" in str(chosen.refused[0].error)


def test_all_skips_a_host_that_is_off_and_refuses_one_that_failed() -> None:
    off = errors.HostUnreachable(host="c", address="c.test", reason="timed out")
    auth = errors.HostAuthFailed(host="d", user="root", address="d.test", reason="denied")
    chosen = plan(
        all=True,
        hosts=snap(
            host("a", guest("web1", own_disk=True, meta=meta())), failed={"c": off, "d": auth}
        ),
    )
    assert names(chosen.rebuild) == [("a", "web1")]
    assert [(s.host, s.name) for s in chosen.skipped] == [("c", None)]
    assert chosen.skipped[0].reason.startswith("host is off: c: unreachable")
    assert [(r.host, r.error) for r in chosen.refused] == [("d", auth)]


@pytest.mark.parametrize(("names_", "all_"), [((), False), (("web1",), True)])
def test_names_or_all_not_both_nor_neither(names_: tuple[str, ...], all_: bool) -> None:
    with pytest.raises(errors.UsageError, match="--all"):
        plan(*names_, all=all_)


# --- the new disk and the outcome --------------------------------------------------------------


def disk(fmt: str = "qcow2", size: int = 1 << 30) -> migrate.Disk:
    return migrate.Disk(
        path=f"{IMAGES}/web1.qcow2",
        format=fmt,
        virtual_size=size,
        data_bytes=0,
        backing=f"{IMAGES}/mclu-templates/tiny.x86_64.r1.raw",
    )


def test_new_disk_is_made_beside_the_old_on_the_newest_base() -> None:
    item = plan("web1").rebuild[0]
    spec = HostSpec(name="a", address="a.test", domain_type="qemu")
    work = rebuild.new_disk(item, spec, disk(), "2026-11-21T12:00:00Z")
    assert work.disk_path == f"{IMAGES}/web1.qcow2.mclu-rebuild"
    assert work.base_path == f"{IMAGES}/mclu-templates/tiny.x86_64.r2.0000000000000000.raw"
    assert work.spec.disk_format == "qcow2" and not work.full_copy
    assert work.disk_size == 1 << 30  # the old disk's size: a grown guest stays grown
    assert work.name == "web1"  # its hostname
    assert work.spec.meta == GuestMeta(
        template="tiny",
        revision="2",
        built="2026-11-21T12:00:00Z",
        state="ready",
        options=(("memory", "256 MiB"),),
    )
    raw = rebuild.new_disk(item, spec, disk("raw", size=1), "t")
    assert raw.full_copy and raw.disk_size == 128 << 20  # never below the base
    with pytest.raises(errors.NotRebuildable, match="vmdk"):
        rebuild.new_disk(item, spec, disk("vmdk"), "t")


@pytest.mark.parametrize(
    ("stopped", "swapped", "running", "problems", "text"),
    [
        (False, False, True, [], "web1 is unchanged and running"),
        (False, False, False, [], "web1 is unchanged"),
        (True, False, True, [], "web1 is unchanged and was started again"),
        (True, True, True, [], "the old disk is back and web1 runs again"),
        (False, True, False, [], "the old disk is back; web1 is shut off, as it was"),
        (
            True,
            True,
            True,
            ["could not x: y"],
            f"restoring web1 failed (could not x: y); its old disk may be {IMAGES}/web1.qcow2"
            ".mclu-old: check it",
        ),
    ],
)
def test_outcome(
    stopped: bool, swapped: bool, running: bool, problems: list[str], text: str
) -> None:
    assert (
        rebuild.outcome(
            "web1",
            stopped=stopped,
            swapped=swapped,
            was_running=running,
            problems=problems,
            old_disk=f"{IMAGES}/web1.qcow2",
        )
        == text
    )


# --- the shell that puts the old disk back, in each state the swap can be in ------------------


@pytest.mark.parametrize("state", ["nothing yet", "linked", "moved"])
def test_restore_script_puts_the_old_disk_back(tmp_path: Path, state: str) -> None:
    disk, old, new = tmp_path / "d.qcow2", tmp_path / "d.qcow2.mclu-old", tmp_path / "new"
    disk.write_text("old")
    new.write_text("new")
    if state in ("linked", "moved"):
        os.link(disk, old)
    if state == "moved":
        os.replace(new, disk)
    subprocess.run(commands.restore_disk(str(old), str(disk)), check=True)
    assert disk.read_text() == "old"
    assert not old.exists()


# --- the recorded cases (tests/data/plans/rebuild/, see its README) ----------------------------

CASE_GUEST: dict[str, Any] = {
    "template": "tiny",
    "revision": "1",
    "built": "2026-11-01T00:00:00Z",
    "state": "running",
    "mclu_state": "ready",
    "persistent": True,
    "pet": False,
}


def case_guest(data: dict[str, Any]) -> Guest:
    g = {**CASE_GUEST, **data}
    recorded = meta(g["built"], g["template"], g["revision"], g["mclu_state"])
    made = guest(
        g["name"],
        meta=None if g["pet"] else recorded,
        state=GuestState(g["state"]),
        own_disk="disks" not in g,
        disks=tuple(g.get("disks", ())),
        persistent=g["persistent"],
    )
    return dataclasses.replace(made, networks=tuple(g.get("networks", ())))


def case_host(name: str, data: dict[str, Any]) -> HostSnapshot:
    made = host(name, *(case_guest(g) for g in data.get("guests", [])))
    networks, bridges = data.get("networks"), data.get("bridges")
    facts = dataclasses.replace(
        made.facts,
        networks=None if networks is None else tuple(networks),
        bridges=None if bridges is None else tuple(bridges),
    )
    return dataclasses.replace(made, facts=facts)


def case_inputs(
    case: dict[str, Any],
) -> tuple[model.HostResults[HostSnapshot], dict[str, StorageFacts]]:
    def failure(name: str, kind: str) -> errors.HostError:
        if kind == "off":
            return errors.HostUnreachable(host=name, address=f"{name}.test", reason="timed out")
        return errors.HostAuthFailed(
            host=name, user="root", address=f"{name}.test", reason="denied"
        )

    hosts = [case_host(name, data) for name, data in case["hosts"].items() if "failed" not in data]
    failed = {
        name: failure(name, data["failed"])
        for name, data in case["hosts"].items()
        if "failed" in data
    }
    storage = {
        name: StorageFacts(IMAGES, 10 << 30, tuple(data["cached"]))
        for name, data in case["hosts"].items()
        if "cached" in data
    }
    return snap(*hosts, failed=failed), storage


def case_templates(data: dict[str, Any]) -> rebuild.Templates:
    """name → its revision (null: unknown), or a table of its revision and `personalise`."""
    templates: dict[str, model.ResolvedTemplate | errors.MCLUError] = {}
    for name, listed in data.items():
        told = listed if isinstance(listed, dict) else {"revision": listed}
        if not told["revision"]:
            templates[name] = errors.UnknownTemplate(name=name, known=["tiny"])
            continue
        made = template(name, told["revision"])
        templates[name] = dataclasses.replace(
            made, personalise=told.get("personalise", made.personalise)
        )
    return templates


def run_case(case: dict[str, Any]) -> rebuild.RebuildPlan:
    snapshot, storage = case_inputs(case)
    r = case["request"]
    request = rebuild.RebuildRequest(
        names=tuple(r.get("names", ())),
        all=r.get("all", False),
        older_than=rebuild.parse_age(r["older_than"]) if "older_than" in r else None,
        if_newer=r.get("if_newer", False),
        exclude=tuple(r.get("exclude", ())),
        verify=r.get("verify", True),
    )
    templates = case_templates(case.get("templates", {"tiny": 2}))
    local = case.get("controller_cached", ())
    return rebuild.plan_rebuild(
        request, snapshot, templates, now=NOW, storage=storage, local_cached=local
    )


def rebuild_fields(r: rebuild.Rebuild) -> dict[str, Any]:
    return {
        "name": r.name,
        "host": r.host,
        "revision": r.revision,
        "from_revision": r.meta.revision,
        "base_cached": r.base_cached,
        "steps": list(r.steps),
        "verify": r.verify,
    }


@pytest.mark.parametrize("case", plan_cases.load("rebuild"))
def test_rebuild_case(case: dict[str, Any]) -> None:
    expected = case["expected"]
    if plan_cases.refused(expected, lambda: run_case(case)):
        return
    chosen = run_case(case)
    wanted = expected.get("rebuild", [])
    # Each expected guest lists the fields the case is about; name and host always.
    assert [
        {k: rebuild_fields(r)[k] for k in w} for r, w in zip(chosen.rebuild, wanted, strict=True)
    ] == wanted
    assert [[s.name, s.host, s.reason] for s in chosen.skipped] == expected.get("skipped", [])
    assert [
        [r.name, r.host, type(r.error).__name__, str(r.error)] for r in chosen.refused
    ] == expected.get("refused", [])
    # Downloaded: each base some host lacks, once, unless the controller has it (default: not).
    needed = [t.base.cache_name for t in chosen.bases_needed]
    assert [t.base.cache_name for t in chosen.downloads] == expected.get("downloads", needed)
