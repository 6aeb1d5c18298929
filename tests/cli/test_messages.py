"""What mclu says besides its answer: usage errors with suggestions, the JSON error document,
-v logging, and Ctrl-C. In-process against fake hosts, as the other CLI tests."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from mclu import errors, model
from mclu.cli import main
from mclu.hosts import fake
from mclu.images import customize
from tests.builders import WEB1
from tests.cli.harness import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path)
    c.cluster.hosts["a"].guests["web1"] = WEB1
    return c


# --- misspelt commands and options ------------------------------------------------------------


def test_a_misspelt_command_is_one_line_with_one_prefix_and_a_suggestion(cli: Cli) -> None:
    assert cli("stauts") == 2
    assert cli.stderr == (
        "mclu: error: argument COMMAND: invalid choice: 'stauts'; "
        "did you mean status? (see `mclu --help`)\n"
    )
    assert cli.stdout == ""


def test_a_misspelt_option_is_reported_by_its_command_with_a_suggestion(cli: Cli) -> None:
    assert cli("list", "--hots", "a") == 2
    assert cli.stderr == (
        "mclu: error: mclu list: unrecognized arguments: --hots a; "
        "did you mean --host? (see `mclu list --help`)\n"
    )


def test_a_misspelt_choice_gets_a_suggestion(cli: Cli) -> None:
    assert cli("templates", "prnue") == 2
    assert "invalid choice: 'prnue'; did you mean prune?" in cli.stderr


def test_nothing_near_is_no_suggestion(cli: Cli) -> None:
    assert cli("zzz") == 2
    assert "did you mean" not in cli.stderr
    assert "invalid choice: 'zzz' (choose from 'status', 'list'," in cli.stderr
    assert cli("status", "--bogus") == 2
    assert cli.stderr == (
        "mclu: error: mclu status: unrecognized arguments: --bogus (see `mclu status --help`)\n"
    )


# --- --json errors ----------------------------------------------------------------------------


def test_with_json_an_error_is_also_a_document_on_stdout(cli: Cli) -> None:
    cli.cluster.fail("c", fake_off("c"))
    assert cli("info", "nope", "--json") == 1
    message = "no guest named 'nope' (c did not answer: it may be there)"
    assert cli.stderr == f"mclu: error: {message}\n"
    assert cli.json() == {
        "version": 1,
        "error": {
            "type": "GuestNotFound",
            "message": message,
            "exit_status": 1,
            "name": "nope",
            "host": None,
            "unreachable": ["c"],
        },
    }


def test_with_json_a_usage_error_is_also_a_document_on_stdout(cli: Cli) -> None:
    assert cli("status", "--json", "--hots", "a") == 2
    doc = cli.json()
    assert doc["error"]["type"] == "UsageError"
    assert doc["error"]["exit_status"] == 2
    assert "--hots" in doc["error"]["message"]
    assert cli.stderr.count("\n") == 1
    assert cli("status", "--bogus") == 2  # without --json, stdout stays empty
    assert cli.stdout == ""


def test_with_json_an_unknown_host_gives_its_fields(cli: Cli) -> None:
    assert cli("status", "--host", "zz", "--json") == 2
    error = cli.json()["error"]
    assert (error["type"], error["name"], error["exit_status"]) == ("UnknownHost", "zz", 2)


# --- Ctrl-C -------------------------------------------------------------------------------------


def interrupt(*_: Any) -> Any:
    raise KeyboardInterrupt


def test_ctrl_c_is_one_line_exit_130(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake.FakeSession, "guests", interrupt)
    assert cli("list") == 130
    assert cli.stderr == "mclu: error: interrupted\n"
    assert cli("list", "--json") == 130
    assert cli.json() == {
        "version": 1,
        "error": {"type": "Interrupted", "message": "interrupted", "exit_status": 130},
    }


def test_killing_the_appliance_on_ctrl_c_adds_no_line() -> None:
    """The build's own error says why the appliance went; its watchdog logs only for -v."""
    for verbosity, expected in (
        (0, ""),
        (1, "killing the libguestfs appliance: the build was interrupted"),
    ):
        err = io.StringIO()
        with main.logging_to(err, verbosity):
            customize.Watchdog(seconds=None).kill("the build was interrupted")
        assert (expected in err.getvalue()) if expected else err.getvalue() == ""


def test_a_warning_without_v_is_a_plain_mclu_line() -> None:
    err = io.StringIO()
    with main.logging_to(err, 0):
        logging.getLogger("mclu.images").warning("ham0: could not remove %s", "/x")
        logging.getLogger("mclu.images").info("not shown")
    assert err.getvalue() == "mclu: ham0: could not remove /x\n"


# --- -v and -vv ---------------------------------------------------------------------------------


def chatty_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake hosts whose 'ssh library' logs, as asyncssh and asyncio do."""
    facts = fake.FakeSession.facts

    async def logged_facts(self: fake.FakeSession) -> model.HostFacts:
        logging.getLogger("asyncssh").info("[conn=0] Connected to SSH server")
        logging.getLogger("asyncio").debug("Using selector: EpollSelector")
        return await facts(self)

    monkeypatch.setattr(fake.FakeSession, "facts", logged_facts)


def test_v_says_what_mclu_does_and_not_what_the_libraries_do(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    chatty_library(monkeypatch)
    assert cli("status") == 0
    assert cli.stderr == ""  # no -v: nothing
    assert cli("-v", "status") == 0
    lines = cli.stderr.splitlines()
    assert all(line.startswith("mclu ") for line in lines), lines
    assert any(
        " fanout: read on 3 hosts " in line and line.endswith("at once): a, b, c") for line in lines
    ), lines
    for host in "abc":
        assert any(f"fanout: {host}: read done in " in line for line in lines), lines
    assert "Connected to SSH server" not in cli.stderr
    assert "EpollSelector" not in cli.stderr
    assert cli("status", "-vv") == 0  # -v after the command, twice: the libraries too
    assert "Connected to SSH server" in cli.stderr
    assert "EpollSelector" in cli.stderr


def test_v_names_a_host_that_failed_and_when(cli: Cli) -> None:
    cli.cluster.fail("c", fake_off("c"))
    assert cli("status", "-v") == 0
    assert "fanout: c: read failed after " in cli.stderr
    assert "c: unreachable at c: no route to host" in cli.stderr


def test_logging_is_left_as_it_was(cli: Cli) -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers), logging.getLogger("mclu").level)
    assert cli("-vv", "list") == 0
    assert (root.level, list(root.handlers), logging.getLogger("mclu").level) == before


def fake_off(host: str) -> errors.HostUnreachable:
    return errors.HostUnreachable(host=host, address=host, reason="no route to host")


def test_json_document_of_errors_is_one_line(cli: Cli) -> None:
    """Commands that stream JSON lines (build, migrate) end with the error as one more line."""
    assert cli("info", "nope", "--json") == 1
    assert len(cli.stdout.splitlines()) == 1
    assert json.loads(cli.stdout.splitlines()[0])["version"] == 1
