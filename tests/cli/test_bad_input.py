"""Bad input, end to end: every malformed file or value is one line on stderr, never a traceback.

The corpus is tests/data/bad/: `hosts/` inventories, `templates/` mclu template files,
`repos.d/` virt-builder source files and `index/` virt-builder index files. Each file's first
line is `# expect: FRAGMENT`, the text its error must contain (or, where the first line
belongs to the format, a side file `NAME.expect` holds it). The error line must also name the
file. Command-line values (guest names, sizes, hosts, templates) are the table at the end.

Every case runs the real `mclu.cli.main.run` in-process against fake hosts; a few also run
`python -m mclu` as a process, to see what a user's terminal sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mclu.hosts import fake
from tests.cli.harness import Cli

BAD = Path(__file__).parent.parent / "data" / "bad"
SHA = "0" * 128
INDEX = f"""[tiny]
name=Tiny busybox
file=tiny.xz
revision=3
checksum[sha512]={SHA}
size=134217728
"""
IMAGE_DIR = "/var/lib/libvirt/images"


def corpus(kind: str) -> list[Path]:
    return sorted(p for p in (BAD / kind).iterdir() if p.suffix != ".expect")


def expected(path: Path) -> str:
    """The fragment the error about `path` must contain."""
    side = path.with_name(path.name + ".expect")
    if side.exists():
        return side.read_text(encoding="utf-8").strip()
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith("# expect: "), f"{path}: first line must be '# expect: ...'"
    return first.removeprefix("# expect: ")


# Fake hosts a and b with lots of room and an empty cache; this module's one repository.
INVENTORY = 'template_repos = ["{repos}"]\n[hosts.a]\n[hosts.b]\n'
ROOM = [
    fake.canned(["df", "--output=avail", "-B1", IMAGE_DIR], b"Avail\n99999999999\n"),
    fake.canned(
        [
            "find",
            f"{IMAGE_DIR}/mclu-templates",
            "-maxdepth",
            "1",
            "-type",
            "f",
            "-name",
            "*.raw",
            "-printf",
            "%f\\n",
        ]
    ),
]


@pytest.fixture
def mclu(tmp_path: Path) -> Cli:
    """A good inventory of hosts a and b, a template directory of its own, and a key in
    ~/.ssh, as a user has: builds go ahead."""
    cli = Cli(tmp_path, hosts=("a", "b"), inventory=INVENTORY, index=INDEX, own_templates=True)
    for host in cli.cluster.hosts.values():
        host.commands = dict(ROOM)
    cli.give_key()
    return cli


def with_repos(cli: Cli, repos: Path, name: str) -> None:
    """The inventory's template_repos: `repos` (a repos.d directory or one .conf file)."""
    cli.use_inventory(cli.write_inventory(INVENTORY.replace("{repos}", str(repos)), name))


def test_the_corpus_is_there() -> None:
    counts = {kind: len(corpus(kind)) for kind in ("hosts", "templates", "index", "repos.d")}
    assert counts["hosts"] >= 40 and counts["templates"] >= 20
    assert counts["index"] >= 10 and counts["repos.d"] >= 5


# --- files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", corpus("hosts"), ids=lambda p: p.stem)
def test_bad_inventory(mclu: Cli, path: Path) -> None:
    result = mclu.result("-c", str(path), "status")
    line = result.one_error_line()
    assert result.code == 2
    assert line.startswith(f"mclu: error: {path}: ")
    assert expected(path) in line
    assert result.stdout == ""


@pytest.mark.parametrize("path", corpus("templates"), ids=lambda p: p.stem)
def test_bad_template(mclu: Cli, path: Path) -> None:
    copy = mclu.templates / path.name
    copy.write_bytes(path.read_bytes())
    for argv in (["templates"], ["build", "tiny", "web1", "--dry-run"]):
        result = mclu.result(*argv)
        line = result.one_error_line()
        assert result.code == 2
        assert line.startswith(f"mclu: error: {copy}: ")
        assert expected(path) in line


@pytest.mark.parametrize("path", corpus("repos.d"), ids=lambda p: p.stem)
def test_bad_repository_source(mclu: Cli, path: Path) -> None:
    with_repos(mclu, path, "with-source.toml")
    result = mclu.result("templates")
    line = result.one_error_line()
    assert result.code == 2
    assert line.startswith(f"mclu: error: {path}: ")
    assert expected(path) in line


@pytest.mark.parametrize("path", corpus("index"), ids=lambda p: p.stem)
def test_bad_index(mclu: Cli, path: Path) -> None:
    """A repository whose index is malformed is a source that failed, as one that does not
    answer: `mclu templates` lists the rest, names it in one line, exit status 1 (docs/cli.md);
    a build from it finds no such template (exit status 2)."""
    conf = mclu.tmp / "bad.conf"
    conf.write_text(f"[bad]\nuri={path.as_uri()}\n")
    with_repos(mclu, conf, "with-bad-index.toml")
    result = mclu.result("templates")
    line = result.one_error_line()
    assert result.code == 1
    assert line.startswith(f"mclu: {path.as_uri()}: ")
    assert expected(path) in line
    build = mclu.result("build", "a", "web1", "--dry-run")
    assert build.code == 2
    assert build.one_error_line().startswith("mclu: error: unknown template 'a'")


def test_missing_and_unreadable_inventory(mclu: Cli) -> None:
    missing = mclu.tmp / "nowhere.toml"
    result = mclu.result("-c", str(missing), "list")
    assert result.code == 2
    assert result.one_error_line() == (
        f"mclu: error: {missing}: no inventory here (use -c FILE or set MCLU_CONFIG)"
    )
    result = mclu.result("-c", str(mclu.tmp), "list")
    assert result.code == 2
    assert result.one_error_line().startswith(f"mclu: error: {mclu.tmp}: cannot read: ")


# --- command-line values --------------------------------------------------------------------

NAME_RULE = "use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"


@pytest.mark.parametrize(
    "name",
    [
        "a;rm -rf /",
        "$(x)",
        "`x`",
        "a b",
        "../x",
        "a/b",
        "",
        "x" * 64,
        ".x",
        "a\nb",
        "a'b",
        "a|b",
        "a>b",
        "*",
        "wëb",
        "a\x00b",
    ],
)
def test_bad_guest_names(mclu: Cli, name: str) -> None:
    result = mclu.result("build", "tiny", "--", name)
    assert result.code == 2
    assert result.one_error_line() == f"mclu: error: invalid guest name {name!r}: {NAME_RULE}"
    ran = [arg for h in mclu.cluster.hosts.values() for argv in h.ran for arg in argv]
    assert not name or not any(name in arg for arg in ran)  # it never reached a host
    assert not any(g for h in mclu.cluster.hosts.values() for g in h.guests)


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        # names the shell or argparse would misread
        (["build", "tiny", "-x"], 2, "the following arguments are required: [HOST:]NAME"),
        (["build", "tiny", "--", "-x"], 2, "invalid guest name '-x'"),
        (["build", "tiny", "web1", "web1"], 2, "guest name 'web1' is given more than once"),
        (["build", "tiny", "a:"], 2, "invalid guest name '"),
        # sizes and counts
        (["build", "tiny", "web1", "--size", "-1"], 2, "argument --size: must be a size like"),
        (["build", "tiny", "web1", "--size", "1Q"], 2, "argument --size: must be a size like"),
        (["build", "tiny", "web1", "--size", "1e3"], 2, "argument --size: must be a size like"),
        (["build", "tiny", "web1", "--size", "9" * 400], 2, "argument --size: must be a size like"),
        (
            ["build", "tiny", "web1", "--size", "99999999 TiB"],
            2,
            "argument --size: size out of range",
        ),
        (["build", "tiny", "web1", "--size", "1M"], 2, "--size 1 MiB: smaller than the template's"),
        (["build", "tiny", "web1", "--size", "100T"], 2, "--size 100 TiB: larger than 64 TiB"),
        (
            ["build", "tiny", "web1", "--memory", "0"],
            2,
            "--memory 0 B: must be from 16 MiB to 16 TiB",
        ),
        (["build", "tiny", "web1", "--memory", "17T"], 2, "--memory 17 TiB: must be from 16 MiB"),
        (["build", "tiny", "web1", "--memory", "-1"], 2, "argument --memory: must be a size like"),
        (
            ["build", "tiny", "web1", "--memory", "lots"],
            2,
            "argument --memory: must be a size like",
        ),
        (["build", "tiny", "web1", "--vcpus", "0"], 2, "--vcpus 0: must be from 1 to 512"),
        (["build", "tiny", "web1", "--vcpus", "-3"], 2, "--vcpus -3: must be from 1 to 512"),
        (["build", "tiny", "web1", "--vcpus", "9999"], 2, "--vcpus 9999: must be from 1 to 512"),
        (["build", "tiny", "web1", "--vcpus", "two"], 2, "argument --vcpus: invalid int value"),
        (
            ["build", "tiny", "web1", "--transport", "scp"],
            2,
            "argument --transport: invalid choice",
        ),
        # A size in range that no host can hold is not a usage error: no host has room.
        (["build", "tiny", "web1", "--memory", "10T"], 1, "no host can take web1"),
        # hosts and templates
        (["build", "tiny", "web1", "--on", "nosuch"], 2, "unknown host 'nosuch' (the inventory"),
        (["build", "tiny", "nosuch:web1"], 2, "unknown host 'nosuch' (the inventory"),
        (["build", "nosuch", "web1"], 2, "unknown template 'nosuch' (known: tiny)"),
        (["build", "../tiny", "web1"], 2, "unknown template '../tiny'"),
        (["templates", "info", "nosuch"], 2, "unknown template 'nosuch'"),
        (["status", "--host", "nosuch"], 2, "unknown host 'nosuch'"),
        (["list", "--host", "a;b"], 2, "unknown host 'a;b'"),
        (["info", "nosuch:web1"], 2, "unknown host 'nosuch'"),
        # files named on the command line
        (
            ["build", "tiny", "web1", "--ssh-key", "/nonexistent/id.pub"],
            2,
            "cannot read ssh key /nonexistent/id.pub",
        ),
        (
            ["build", "tiny", "web1", "--root-password-file", "/nonexistent/pw"],
            2,
            "no root password file /nonexistent/pw",
        ),
        (["build", "tiny", "web1", "--ssh-key", "/dev/null"], 2, "ssh key /dev/null holds no key"),
        (
            ["build", "tiny", "web1", "--no-login", "--ssh-key", "/dev/null"],
            2,
            "--no-login and --ssh-key do not go together",
        ),
        (
            ["rebuild", "web1", "--no-login", "--root-password-file", "/dev/null"],
            2,
            "--no-login and --root-password-file do not go together",
        ),
        # options of the other commands
        (["templates", "prune", "--min-age", "soon"], 2, "argument --min-age: invalid float value"),
        (["bogus"], 2, "invalid choice: 'bogus'"),
        ([], 2, "the following arguments are required: COMMAND"),
    ],
)
def test_bad_command_line(mclu: Cli, argv: list[str], code: int, fragment: str) -> None:
    result = mclu.result(*argv)
    line = result.one_error_line()
    assert result.code == code
    assert line.startswith("mclu: error: ")
    assert fragment in line
    assert not any(g for h in mclu.cluster.hosts.values() for g in h.guests)


@pytest.mark.parametrize(
    "argv",
    [
        ["build", "tiny", "web1"],
        ["build", "tiny", "web1", "--dry-run"],
        ["rebuild", "--all", "--dry-run"],
    ],
)
def test_no_ssh_key_anywhere_is_refused(mclu: Cli, argv: list[str]) -> None:
    """An empty ~/.ssh and no --ssh-key would make guests nobody can log in to."""
    (mclu.home / ".ssh" / "id_ed25519.pub").unlink()
    result = mclu.result(*argv)
    assert result.code == 2
    assert result.one_error_line() == (
        f"mclu: error: no ssh key for the guests' root: {mclu.home}/.ssh has no id_*.pub; "
        "give --ssh-key FILE (or --root-password-file FILE), or --no-login for guests nobody "
        "logs in to"
    )
    assert result.stdout == ""
    assert not any(h.ran for h in mclu.cluster.hosts.values())  # refused before any host
    assert not any(g for h in mclu.cluster.hosts.values() for g in h.guests)


def test_a_private_key_is_not_given_to_guests(mclu: Cli) -> None:
    private = mclu.home / ".ssh" / "id_ed25519"
    private.write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    result = mclu.result("build", "tiny", "web1", "--ssh-key", str(private))
    assert result.code == 2
    assert result.one_error_line() == (
        f"mclu: error: ssh key {private} is a private key: give its .pub file"
    )


def test_argparse_errors_name_the_command_and_point_to_help(mclu: Cli) -> None:
    result = mclu.result("build", "tiny", "web1", "--vcpus", "two")
    assert result.one_error_line() == (
        "mclu: error: mclu build: argument --vcpus: invalid int "
        "value: 'two' (see `mclu build --help`)"
    )


# --- as a process ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", str(BAD / "hosts" / "not-toml.toml"), "status"],
        ["-c", str(BAD / "hosts" / "not-utf8.toml"), "list"],
        ["-c", str(BAD / "hosts" / "deeply-nested.toml"), "status"],
        [
            "-c",
            str(BAD / "hosts" / "bad-port-string.toml"),
            "build",
            "tiny",
            "web1",
            "--size",
            "1Q",
        ],
    ],
)
def test_as_a_process(argv: list[str], tmp_path: Path) -> None:
    environ = {**os.environ, "HOME": str(tmp_path), "MCLU_CACHE": str(tmp_path / "cache")}
    environ.pop("MCLU_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "mclu", *argv],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("mclu: error: ")
    assert done.stdout == ""
