"""`mclu build --dry-run` end to end, in-process, on fake hosts: what a build asks of the user
before it makes anything (a way into the guests) and what it tells them (names it could not
check on hosts that did not answer). The build itself needs libguestfs: tests/integration.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mclu import errors
from mclu.hosts import commands, fake
from mclu.hosts.session import CommandResult
from tests.builders import IMAGES, guest
from tests.cli.harness import SHA, Cli

# The one storage command of a build's read pass: lots of room, nothing cached, no leftovers.
STORAGE = fake.canned(
    commands.storage_scan(IMAGES),
    b"@now 1\n@df\nAvail\n99999999999\n@dfstatus 0\n@cache\n@partial\n@locks\n@proclocks\n",
)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """Fake hosts a, b, c with room; the user's ~/.ssh is empty until give_key()."""
    c = Cli(tmp_path)
    for host in c.cluster.hosts.values():
        host.commands = dict([STORAGE])
    return c


def test_an_empty_ssh_dir_is_refused_before_any_host_is_asked(cli: Cli) -> None:
    assert cli("build", "tiny", "web1") == 2
    assert cli.stderr == (
        f"mclu: error: no ssh key for the guests' root: {cli.home}/.ssh has no id_*.pub; give "
        "--ssh-key FILE (or --root-password-file FILE), or --no-login for guests nobody logs "
        "in to\n"
    )
    assert cli.stdout == ""
    assert not any(h.ran or h.guests for h in cli.cluster.hosts.values())


@pytest.mark.parametrize(
    "way_in", [["--no-login"], ["--ssh-key", "KEY"], ["--root-password-file", "PASSWORD"], []]
)
def test_a_key_a_password_or_no_login_lets_the_build_plan(
    cli: Cli, tmp_path: Path, way_in: list[str]
) -> None:
    (tmp_path / "KEY").write_text("ssh-ed25519 AAAA other@ctl\n")
    (tmp_path / "PASSWORD").write_text("secret\n")
    if not way_in:
        cli.give_key()  # the default: the user's own ~/.ssh/id_*.pub
    argv = [str(tmp_path / a) if a.isupper() else a for a in way_in]
    assert cli("build", "tiny", "web1", "--dry-run", *argv) == 0, cli.stderr
    assert cli.stdout.splitlines()[0] == "build 1 guest from tiny r3:"
    assert cli.stderr == ""


def test_a_host_that_did_not_answer_is_a_warning(cli: Cli) -> None:
    """mclu keeps no state: the off host may hold a guest of the new name (issue: two nu-h)."""
    cli.give_key()
    cli.cluster.fail("c", errors.HostUnreachable(host="c", address="c", reason="no route to host"))
    warning = (
        "c did not answer (off): the name nu-h could not be checked there; a guest there "
        "of that name would make two (`mclu list` flags them)"
    )
    assert cli("build", "tiny", "nu-h", "--dry-run") == 0, cli.stderr
    assert cli.stdout.splitlines()[-1] == f"warning: {warning}"
    assert cli("build", "tiny", "nu-h", "--dry-run", "--json") == 0
    assert json.loads(cli.stdout)["warnings"] == [warning]


def test_list_flags_one_name_on_two_hosts(cli: Cli) -> None:
    cli.cluster.hosts["a"].guests["nu-h"] = guest("nu-h")
    cli.cluster.hosts["c"].guests["nu-h"] = guest("nu-h")
    cli.cluster.hosts["b"].guests["db"] = guest("db")
    assert cli("list") == 0
    assert [line.split()[:2] for line in cli.stdout.splitlines()[1:]] == [
        ["db", "b"],
        ["nu-h", "a"],
        ["nu-h", "c"],
    ]
    assert cli.stderr == "mclu: two guests named nu-h, on a and c: name them as HOST:nu-h\n"
    assert cli("list", "--json") == 0
    assert [(g["name"], g["host"], g["duplicate"]) for g in json.loads(cli.stdout)["guests"]] == [
        ("db", "b", False),
        ("nu-h", "a", True),
        ("nu-h", "c", True),
    ]
    assert cli.stderr == ""  # --json: the field says it


# --- networks and disk names (issue 12): refused before anything is made ----------------------


def test_a_pinned_host_without_the_network_is_one_line_before_anything_is_made(cli: Cli) -> None:
    cli.give_key()
    cli.cluster.hosts["b"].networks, cli.cluster.hosts["b"].bridges = (), ("br0",)
    assert cli("build", "tiny", "web1", "--on", "b") == 1
    assert cli.stderr == (
        "mclu: error: b: no libvirt network 'default' active (has: none; bridges: br0): set "
        "network in hosts.toml or the template\n"
    )
    for host in cli.cluster.hosts.values():
        assert host.guests == {} and host.ran == [tuple(commands.storage_scan(IMAGES))]


def ssh_ready_on_user_networking(tmp_path: Path) -> Cli:
    c = Cli(tmp_path, own_templates=True)
    (c.templates / "sshy.toml").write_text('base = "tiny"\nready = "ssh"\nnetwork = "user"\n')
    for host in c.cluster.hosts.values():
        host.commands = dict([STORAGE])
    c.give_key()
    return c


def test_ready_by_ssh_where_no_address_can_be_found_is_one_line_before_anything_is_made(
    tmp_path: Path,
) -> None:
    cli = ssh_ready_on_user_networking(tmp_path)
    assert cli("build", "sshy", "web1", "--on", "b") == 2
    assert cli.stderr == (
        'mclu: error: b: ready = "ssh" needs an address mclu can find, and the guest\'s network '
        "here is user: set network (a bridge or libvirt network) or ready\n"
    )
    for host in cli.cluster.hosts.values():
        assert host.guests == {} and host.ran == [tuple(commands.storage_scan(IMAGES))]

    assert cli("build", "sshy", "web1") == 1  # no host can: each one's reason
    assert 'a: ready = "ssh" needs an address mclu can find' in cli.stderr
    assert cli.stderr.count("\n") == 1
    assert all(host.guests == {} for host in cli.cluster.hosts.values())


def test_a_pinned_host_with_a_file_of_the_disks_name_is_one_line(cli: Cli) -> None:
    cli.give_key()
    cli.cluster.hosts["b"].commands = dict(
        [
            fake.canned(
                commands.storage_scan(IMAGES),
                b"@now 1\n@df\nAvail\n99999999999\n@dfstatus 0\n@cache\n@files\nweb1.qcow2\n"
                b"@partial\n@locks\n@proclocks\n",
            )
        ]
    )
    assert cli("build", "tiny", "b:web1") == 1
    assert cli.stderr == (
        f"mclu: error: b: a file already has the new disk's name: {IMAGES}/web1.qcow2\n"
    )
    assert not any(h.guests for h in cli.cluster.hosts.values())


def test_dry_run_says_why_hosts_were_skipped(cli: Cli) -> None:
    cli.give_key()
    for name in ("a", "b"):
        cli.cluster.hosts[name].networks = ()
    assert cli("build", "tiny", "web1", "web2", "--dry-run") == 0, cli.stderr
    lines = cli.stdout.splitlines()
    assert [line.split()[:3] for line in lines[1:3]] == [["web1", "→", "c"], ["web2", "→", "c"]]
    assert lines[-2:] == [
        f"warning: {h} skipped for web1, web2: no libvirt network 'default' active (has: none; "
        "bridges: none)"
        for h in ("a", "b")
    ]


# --- the controller's cache: filled only for a host that lacks the base (issue 13) ------------

CACHED = f"tiny.x86_64.r3.{SHA[:16]}.raw"  # the harness repository's tiny r3, by its digest


def storage_with(*cached: str) -> tuple[tuple[str, ...], CommandResult]:
    listed = "".join(f"{name}\n" for name in cached)
    return fake.canned(
        commands.storage_scan(IMAGES),
        f"@now 1\n@df\nAvail\n99999999999\n@dfstatus 0\n@cache\n{listed}@partial\n@locks\n"
        "@proclocks\n".encode(),
    )


def test_dry_run_says_what_will_be_downloaded_or_that_nothing_is(cli: Cli) -> None:
    cli.give_key()
    assert cli("build", "tiny", "web1", "--on", "a", "--dry-run") == 0
    assert "\ndownload tiny r3 into the controller's cache: 10.5 MiB\n" in cli.stdout
    assert cli("build", "tiny", "web1", "--on", "a", "--dry-run", "--json") == 0
    assert cli.json()["download"] == {"bytes": 11000000, "from": f"file://{cli.repo}/tiny.xz"}
    assert cli.json()["base"] == CACHED
    cli.cluster.hosts["a"].commands = dict([storage_with(CACHED)])
    assert cli("build", "tiny", "web1", "--on", "a", "--dry-run") == 0
    assert cli.stdout.splitlines()[-1] == (
        "nothing to download or send: tiny r3 is cached on every host chosen"
    )
    assert cli("build", "tiny", "web1", "--on", "a", "--dry-run", "--json") == 0
    assert cli.json()["download"] is None
    assert not (cli.tmp / "cache").exists()  # a dry run downloads nothing


def test_the_same_revision_under_another_digest_or_its_old_name_is_not_the_base(
    cli: Cli,
) -> None:
    """A repository that published r3 again with other content: the host's r3 files are not
    the base the index describes, so it is downloaded and sent under its own name."""
    cli.give_key()
    stale = ("tiny.x86_64.r3.raw", "tiny.x86_64.r3.1111111111111111.raw")
    cli.cluster.hosts["a"].commands = dict([storage_with(*stale)])
    assert cli("build", "tiny", "web1", "--on", "a", "--dry-run", "--json") == 0
    document = cli.json()
    assert document["hosts_needing_base"] == ["a"] and document["download"] is not None
    assert document["guests"][0]["base_path"] == f"{IMAGES}/mclu-templates/{CACHED}"


def test_a_build_downloads_nothing_when_every_host_chosen_holds_the_base(cli: Cli) -> None:
    """The repository has no tiny.xz: a build that fetched it would stop at once with
    'cannot fetch'. Every host holding the base, it goes on to make the disk (here refused
    by the host, so the build stops there and undoes its guest)."""
    cli.give_key()
    disk = f"{IMAGES}/web1.qcow2"
    create = commands.image_create(
        disk + ".mclu-new", "qcow2", 128 << 20, f"{IMAGES}/mclu-templates/{CACHED}", "raw"
    )
    cli.cluster.hosts["a"].commands = dict(
        [storage_with(CACHED), fake.canned(create, stderr=b"no room", exit_status=1)]
    )
    assert cli("build", "tiny", "web1", "--on", "a") == 1
    assert "create disk" in cli.stderr and "cannot fetch" not in cli.stderr, cli.stderr
    assert tuple(create) in cli.cluster.hosts["a"].ran
    assert cli.cluster.hosts["a"].guests == {}  # undone
    assert not any((cli.tmp / "cache").glob("*.raw"))

    cli.cluster.hosts["a"].commands = dict([STORAGE])  # the host lacks it: fetched first
    assert cli("build", "tiny", "web1", "--on", "a") == 1
    assert cli.stderr == (
        f"mclu: error: cannot fetch file://{cli.repo}/tiny.xz: [Errno 2] No such file or "
        f"directory: '{cli.repo}/tiny.xz'\n"
    )
