"""Shell completion (argcomplete) as the shell sees it: the words offered for a command line."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import argcomplete
import pytest
from argcomplete.finders import CompletionFinder

from mclu import model
from mclu.cli import commands, completion, main, output
from mclu.hosts import fake
from tests.cli.test_read_commands import guest

IFS = "\013"


class Finder(CompletionFinder):
    """argcomplete's finder, its debug stream on stderr: by default it takes file descriptor
    9, which under pytest is faulthandler's (closing it fails pytest's exit)."""

    def _init_debug_stream(self) -> None:
        argcomplete.io.debug_stream = sys.stderr


class Shell:
    """Completes command lines against fake hosts a, b and c (c hangs when `hanging`)."""

    def __init__(self, tmp_path: Path) -> None:
        self.cluster = fake.FakeCluster.of("a", "b", "c")
        self.cluster.hosts["a"].guests.update(web1=guest("web1"), db=guest("db"))
        self.cluster.hosts["b"].guests.update(web2=guest("web2"), db=guest("db"))
        self.inventory = tmp_path / "hosts.toml"
        self.inventory.write_text("[hosts.a]\n[hosts.b]\n[hosts.c]\ntags = ['slow']\n")
        self.hanging = False

    @asynccontextmanager
    async def open(self, spec: model.HostSpec) -> AsyncIterator[fake.FakeSession]:
        if self.hanging and spec.name == "c":
            await asyncio.sleep(3600)  # a host that never answers
        async with self.cluster.open(spec) as session:
            yield session

    def __call__(self, line: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        environ = {"MCLU_CONFIG": str(self.inventory), "_ARGCOMPLETE": "1"}
        for key, value in {
            **environ,
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE_IFS": IFS,
        }.items():
            monkeypatch.setenv(key, value)
        env = commands.Env(
            environ=environ,
            printer=output.Printer(out=io.StringIO(), err=io.StringIO()),
            open_session=self.open,
        )
        parser = main.build_parser()
        completion.attach(parser, env)
        out = io.StringIO()
        Finder()(parser, exit_method=lambda *_: None, output_stream=out)
        words = [w.strip() for w in out.getvalue().split(IFS)]  # a lone word ends in a space
        return [w for w in words if w and not w.startswith("-")]


@pytest.fixture
def shell(tmp_path: Path) -> Shell:
    return Shell(tmp_path)


def test_commands(shell: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shell("mclu st", monkeypatch) == ["status", "start", "stop"]


def test_host_names_from_the_inventory(shell: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shell("mclu off ", monkeypatch) == ["a", "b", "c"]
    assert shell("mclu list --host ", monkeypatch) == ["a", "b", "c"]
    assert shell("mclu migrate web1 --to b", monkeypatch) == ["b"]


def test_guest_names_from_the_hosts(shell: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shell("mclu stop ", monkeypatch) == ["db", "web1", "web2"]
    assert shell("mclu delete web1 w", monkeypatch) == ["web1", "web2"]
    assert shell("mclu info --host b ", monkeypatch) == ["db", "web2"]


def test_host_colon_completes_that_hosts_guests(
    shell: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sorted(shell("mclu start b:", monkeypatch)) == ["b:db", "b:web2"]


def test_new_names_of_build_are_not_completed(
    shell: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert shell("mclu build tiny ", monkeypatch) == []


def test_a_host_that_does_not_answer_does_not_hang_the_shell(
    shell: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(completion, "GUEST_LOOKUP_SECONDS", 0.2)
    shell.hanging = True
    assert shell("mclu stop ", monkeypatch) == ["db", "web1", "web2"]  # a's and b's


def test_a_bad_inventory_completes_nothing(shell: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    shell.inventory.write_text("[hosts.a\n")
    assert shell("mclu stop ", monkeypatch) == []
    assert shell("mclu off ", monkeypatch) == []
