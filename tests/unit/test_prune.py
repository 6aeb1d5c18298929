"""mclu.decide.prune: recorded cases (tests/data/plans/prune/*.json, see its README), and the
renderers of `templates prune` (mclu.cli.prune)."""

from __future__ import annotations

from typing import Any

import pytest

from mclu import errors, model
from mclu.cli import prune as prune_cli
from mclu.decide import prune
from tests import plan_cases

IMAGES = "/var/lib/libvirt/images"


def run_case(case: dict[str, Any]) -> prune.PrunePlan:
    image_dir = case.get("image_dir", IMAGES)
    use = prune.CacheUse(
        cache_dir=f"{image_dir}/mclu-templates",
        ages={name: float(age) for name, age in case["ages"].items()},
        used=frozenset(case["used"]),
    )
    return prune.plan(prune.PruneRequest(**case.get("request", {})), "ham0", use)


def run_local_case(case: dict[str, Any]) -> prune.LocalPrunePlan:
    return prune.plan_local(
        prune.PruneRequest(**case.get("request", {})),
        "/root/.cache/mclu",
        {name: float(age) for name, age in case["ages"].items()},
        frozenset(case["listed"]),
        sources_failed=case.get("sources_failed", False),
    )


@pytest.mark.parametrize("case", plan_cases.load("prune"))
def test_prune_case(case: dict[str, Any]) -> None:
    expected = case["expected"]
    if case.get("controller"):
        local = run_local_case(case)
        for key in ("remove", "listed", "too_new", "unsure"):
            assert list(getattr(local, key)) == expected.get(key, []), key
        return
    planned = run_case(case)
    assert planned.host == "ham0"
    assert list(planned.remove) == expected.get("remove", [])
    assert list(planned.in_use) == expected.get("in_use", [])
    assert list(planned.too_new) == expected.get("too_new", [])
    if "paths" in expected:
        assert list(planned.paths) == expected["paths"]


def test_the_default_min_age_is_ten_minutes() -> None:
    assert prune.PruneRequest().min_age == prune.MIN_AGE == 600


# --- rendering (mclu.cli.prune) -------------------------------------------------------------


def results() -> model.HostResults[prune.PrunePlan]:
    use = prune.CacheUse(
        f"{IMAGES}/mclu-templates",
        {"old.raw": 9999.0, "used.raw": 9999.0, "new.raw": 5.0},
        frozenset({f"{IMAGES}/mclu-templates/used.raw"}),
    )
    return model.HostResults(
        ok={"a": prune.plan(prune.PruneRequest(), "a", use)},
        failed={"b": errors.HostUnreachable(host="b", address="b", reason="connection refused")},
        order=["a", "b"],
    )


def test_pruned_text() -> None:
    assert prune_cli.pruned_text(results(), dry_run=True).splitlines() == [
        "a: would remove old.raw",
        "a: kept used.raw (in use)",
        "a: kept new.raw (arrived in the last minutes: a build may need it)",
    ]
    assert prune_cli.pruned_text(results(), dry_run=False).startswith("a: removed old.raw\n")
    assert (
        prune_cli.pruned_text(model.HostResults(order=[]), dry_run=False)
        == "no cached templates on any host"
    )


def test_pruned_json() -> None:
    document = prune_cli.pruned_json(results(), dry_run=False)
    assert document["dry_run"] is False
    assert document["hosts"] == [
        {"name": "a", "removed": ["old.raw"], "in_use": ["used.raw"], "too_new": ["new.raw"]}
    ]
    (failed,) = document["failed_hosts"]
    assert (failed["name"], failed["state"]) == ("b", "off")
