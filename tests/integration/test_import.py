"""`mclu templates import` on the sandbox: the sandbox repository's tiny image imported from
its http server and from a path, then a guest built from the import that boots to its login
prompt (the real download, conversion and compression, the real build)."""

from __future__ import annotations

import functools
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mclu.config import repo_index
from tests.integration import sandbox as sb

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(1200)]

PROJECT_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@pytest.fixture
def served(repo: Path) -> Iterator[str]:
    """The sandbox repository over http on loopback: its URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(repo))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_import_from_url_and_path_builds_a_guest_that_boots(
    sandbox: sb.Sandbox, builds: sb.Guests, repo: Path, served: str, tmp_path: Path
) -> None:
    repos_d = tmp_path / "repos.d"  # the import's .conf goes in the first directory
    repos_d.mkdir()
    inventory = sandbox.variant(
        tmp_path / "hosts.toml",
        top={"template_repos": [str(repos_d), *sandbox.doc.get("template_repos", [])]},
    )
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    [tiny] = [
        e
        for e in repo_index.parse_index((repo / "index").read_text(), "file:///index")
        if e.name == "tiny"
    ]
    url = f"{served}/tiny.xz"
    done = builds.mclu(
        "templates", "import", url, "imported", "--sha512", tiny.sha512,
        inventory=inventory, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported imported revision 1 from raw in xz: 128.00 MiB disk")
    done = builds.mclu(
        "templates", "import", str(repo / "tiny.xz"), "imported", inventory=inventory, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "revision 2" in done.stdout
    listed = builds.mclu("templates", inventory=inventory, env=env)
    assert re.search(r"^imported\s+mclu-local\s+2\s", listed.stdout, re.MULTILINE)

    templates = tmp_path / "templates"  # tiny's settings over the imported base
    templates.mkdir()
    text = (PROJECT_TEMPLATES / "tiny.toml").read_text()
    (templates / "mine.toml").write_text(text.replace('base = "tiny"', 'base = "imported"'))
    host = sandbox.up_hosts[0]
    name = builds.name()
    done = builds.build(
        "mine", name, "--on", host, inventory=inventory, env=env, templates=templates
    )
    assert done.returncode == 0, done.stderr
    assert f"{name} runs on {host}" in done.stdout
    sb.console_shows(sandbox, host, name, f"{name} login:")
