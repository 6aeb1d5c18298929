"""docs/cli.md's JSON examples against the program's own output, so that they cannot drift.

Every fenced ```json block of docs/cli.md is run here: the command it documents runs on fake
hosts, and the example must have exactly the keys mclu's output has, object by object (values
differ from cluster to cluster and are not compared). A new block must be added to EXAMPLES.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mclu import errors, model
from tests.builders import SHUTOFF, WEB1, built, guest
from tests.cli.harness import Cli, rebuild_disk_commands

# What the rebuilt guests' records say before the rebuild.
TINY_R2 = model.GuestMeta(
    template="tiny", revision="2", built="2026-11-01T10:00:00Z", options=(("memory", "256 MiB"),)
)

CLI_MD = Path(__file__).parents[2] / "docs" / "cli.md"

SKIPPED_SECTIONS: tuple[str, ...] = ()  # sections whose examples are not checked (none)


@dataclass(frozen=True)
class Block:
    section: str  # the `## ` heading it is under
    lead_in: str  # the line just before the fence
    line: int
    text: str


def blocks() -> list[Block]:
    found: list[Block] = []
    section, lines = "", CLI_MD.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i]
        if lines[i].strip() == "```json":
            end = lines.index("```", i + 1)
            found.append(Block(section, lines[i - 1], i + 1, "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return found


def cluster(tmp_path: Path) -> Cli:
    """Hosts a and b on, c off; a guest built by mclu (web1) and a shut off pet (old)."""
    c = Cli(tmp_path)
    c.cluster.hosts["a"].guests["web1"] = WEB1
    c.cluster.hosts["a"].addresses["web1"] = (
        model.Address("192.168.122.7", 4, model.AddressSource.LEASE, "52:54:00:12:34:56", 24),
    )
    c.cluster.hosts["b"].guests["old"] = guest("old", state=SHUTOFF)
    c.cluster.fail("c", errors.HostUnreachable(host="c", address="c", reason="no route to host"))
    # A second repository that cannot be read: `failed_sources` has an entry.
    (c.repo / "repos.d" / "gone.conf").write_text(f"[gone]\nuri=file://{tmp_path}/nowhere\n")
    return c


def ran(
    *argv: str, code: int = 0, part: Callable[[Any], Any] = lambda doc: doc
) -> Callable[[Cli], Any]:
    def run(cli: Cli) -> Any:
        assert cli(*argv) == code, cli.stderr
        return part(json.loads(cli.stdout))

    return run


def rebuild_done(cli: Cli) -> Any:
    """`rebuild --all --json`'s last line: web1 on a rebuilt (its disk work canned, its
    personalisation skipped: no libguestfs here), the pet on b skipped, web2 on b failed (its
    disk cannot be read: b has no shell), c off."""
    a = cli.cluster.hosts["a"]
    a.guests["web1"] = built("web1", TINY_R2)
    rebuild_disk_commands(a)
    cli.cluster.hosts["b"].guests["web2"] = built("web2", TINY_R2)

    async def personalise(name: str) -> model.GuestTraits:
        return model.GuestTraits(serial_login=True)

    a.consoles["web1"] = "web1 login: "
    cli.personalise_with(personalise)
    assert cli.rebuild("--all", "--json") == 1, cli.stderr
    return json.loads(cli.stdout.splitlines()[-1])


# The lead-in line of each block (a part of it) -> the command whose output it shows.
EXAMPLES: dict[str, Callable[[Cli], Any]] = {
    "The JSON of every one of them:": ran("start", "old", "--json"),
    "`status`:": ran("status", "--json"),
    "where GUEST is": ran("info", "web1", "--json", part=lambda doc: doc["guest"]),
    "`templates`:": ran("templates", "--json", code=1),
    "one line on stdout, after whatever": ran("info", "web9", "--json", code=1),
    "run and nothing else failed. JSON (the last line):": rebuild_done,
}


def lead_in_key(block: Block) -> str | None:
    text = " ".join(block.lead_in.split())
    for key in EXAMPLES:
        if " ".join(key.split()) in text:
            return key
    return None


def shape_errors(doc: Any, real: Any, where: str = "$") -> list[str]:
    """Where the example's objects differ in keys from the program's (values not compared).

    A list item of the example must match some item of the program's list."""
    if isinstance(doc, dict):
        if not isinstance(real, dict):
            return [f"{where}: the docs show an object, mclu gives {real!r}"]
        problems = []
        if real.keys() - doc.keys():
            problems.append(f"{where}: the docs lack {sorted(real.keys() - doc.keys())}")
        if doc.keys() - real.keys():
            problems.append(f"{where}: mclu has no {sorted(doc.keys() - real.keys())}")
        for key in (k for k in doc if k in real):
            problems += shape_errors(doc[key], real[key], f"{where}.{key}")
        return problems
    if isinstance(doc, list):
        if not isinstance(real, list):
            return [f"{where}: the docs show a list, mclu gives {real!r}"]
        problems = []
        for i, item in enumerate(doc):
            if not isinstance(item, (dict, list)):
                continue
            if not real:
                problems.append(
                    f"{where}: mclu's list is empty here; make the test's cluster "
                    "give an item to compare"
                )
                continue
            tries = [shape_errors(item, r, f"{where}[{i}]") for r in real]
            if all(tries):
                closest: list[str] = min(tries, key=len)
                problems += closest
        return problems
    return []


DOCUMENTED = [b for b in blocks() if not b.section.startswith(SKIPPED_SECTIONS)]


def test_every_example_is_known() -> None:
    assert DOCUMENTED, "no ```json blocks found in docs/cli.md"
    unknown = [
        f"docs/cli.md:{b.line} after {b.lead_in!r}" for b in DOCUMENTED if lead_in_key(b) is None
    ]
    assert unknown == [], "add these examples to EXAMPLES"
    assert len({lead_in_key(b) for b in DOCUMENTED}) == len(EXAMPLES)  # none went missing


@pytest.mark.parametrize("block", DOCUMENTED, ids=lambda b: f"cli.md:{b.line}")
def test_example_has_the_keys_of_the_output(block: Block, tmp_path: Path) -> None:
    doc = json.loads(block.text)
    key = lead_in_key(block)
    assert key is not None
    real = EXAMPLES[key](cluster(tmp_path))
    assert shape_errors(doc, real) == []


def test_shape_errors_sees_missing_extra_and_nested_keys() -> None:
    real = {"a": 1, "b": [{"x": 1}, {"y": None}], "c": {"d": 1}}
    assert shape_errors({"a": 2, "b": [{"y": 3}], "c": {"d": 0}}, real) == []
    assert shape_errors({"a": 2, "b": [], "c": {"d": 0, "e": 1}}, real) == [
        "$.c: mclu has no ['e']"
    ]
    assert shape_errors({"b": [{"z": 1}], "c": {}}, real) == [
        "$: the docs lack ['a']",
        "$.b[0]: the docs lack ['x']",
        "$.b[0]: mclu has no ['z']",
        "$.c: the docs lack ['d']",
    ]
    assert shape_errors({"b": [{"x": 1}]}, {"b": []}) == [
        "$.b: mclu's list is empty here; make the test's cluster give an item to compare"
    ]
