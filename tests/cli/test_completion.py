"""Shell completion (argcomplete) as the shell sees it: the words offered for a command line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from mclu import model
from mclu.cli import completion
from mclu.hosts import fake
from tests.builders import guest
from tests.cli.harness import Cli


@pytest.fixture
def shell(tmp_path: Path) -> Cli:
    """Fake hosts a, b and c (c tagged slow): a holds web1 and db, b web2 and db."""
    c = Cli(tmp_path, inventory="[hosts.a]\n[hosts.b]\n[hosts.c]\ntags = ['slow']\n")
    c.host("a").guests.update(web1=guest("web1"), db=guest("db"))
    c.host("b").guests.update(web2=guest("web2"), db=guest("db"))
    return c


def hanging(cli: Cli) -> None:
    """Host c never answers from now on."""
    opener = cli.opener

    @asynccontextmanager
    async def open(spec: model.HostSpec) -> AsyncIterator[fake.FakeSession]:
        if spec.name == "c":
            await asyncio.sleep(3600)
        async with opener(spec) as session:
            assert isinstance(session, fake.FakeSession)
            yield session

    cli.opener = open


def test_commands(shell: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shell.complete("mclu st", monkeypatch) == ["status", "start", "stop"]


def test_host_names_from_the_inventory(shell: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shell.complete("mclu off ", monkeypatch) == ["a", "b", "c"]
    assert shell.complete("mclu list --host ", monkeypatch) == ["a", "b", "c"]
    assert shell.complete("mclu migrate web1 --to b", monkeypatch) == ["b"]


def test_guest_names_from_the_hosts(shell: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shell.complete("mclu stop ", monkeypatch) == ["db", "web1", "web2"]
    assert shell.complete("mclu delete web1 w", monkeypatch) == ["web1", "web2"]
    assert shell.complete("mclu info --host b ", monkeypatch) == ["db", "web2"]


def test_host_colon_completes_that_hosts_guests(
    shell: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sorted(shell.complete("mclu start b:", monkeypatch)) == ["b:db", "b:web2"]


def test_new_names_of_build_are_not_completed(shell: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shell.complete("mclu build tiny ", monkeypatch) == []


def test_a_host_that_does_not_answer_does_not_hang_the_shell(
    shell: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(completion, "GUEST_LOOKUP_SECONDS", 0.2)
    hanging(shell)
    assert shell.complete("mclu stop ", monkeypatch) == ["db", "web1", "web2"]  # a's and b's


def test_a_bad_inventory_completes_nothing(shell: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    shell.inventory.write_text("[hosts.a\n")
    assert shell.complete("mclu stop ", monkeypatch) == []
    assert shell.complete("mclu off ", monkeypatch) == []
