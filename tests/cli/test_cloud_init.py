"""Guests of a cloud-init template (`personalise = "cloud-init"`) on fake hosts, end to end in
process: build (the seed written beside the disk, attached as a CD-ROM, taken out once cloud-init
has finished, before "ready" is recorded), a failed build that keeps or undoes it, rebuild,
delete and cleanup. No libguestfs runs: a seed needs none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mclu import model
from mclu.decide import cloudinit
from mclu.hosts import commands, fake
from mclu.hosts.fake_files import Image
from mclu.images import seed
from tests.builders import IMAGES, built
from tests.cli.harness import BASE, Cli, rebuild_disk_commands

SEED = f"{IMAGES}/web1.mclu-seed.iso"
FINISHED = (
    "[   45.1] cloud-init[512]: Cloud-init v. 22.4.2 finished at Sun, 29 Nov 2026 12:00:00 "
    "+0000. Datasource DataSourceNoCloud [seed=/dev/sr0][dsmode=net].  Up 45.10 seconds\r\n"
)
TEMPLATE = 'description = "tiny, by cloud-init"\nbase = "tiny"\npersonalise = "cloud-init"\n'


# The harness's tiny r3 as mclu caches it, by name and revision and (newer) by its digest too:
# host a and the controller hold it under both, so no base travels and nothing is fetched.
CACHED = sorted({"tiny.x86_64.r3.raw", BASE.rpartition("/")[2]})


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path, own_templates=True)
    (c.templates / "cloudy.toml").write_text(TEMPLATE)
    (c.templates / "plain.toml").write_text('base = "tiny"\n')
    c.give_key()
    a = c.host("a")
    listed = "".join(f"{name}\n" for name in CACHED)
    scan = f"@now 0\n@df\nAvail\n10737418240\n@dfstatus 0\n@cache\n{listed}@partial\n@locks\n"
    a.commands.update([fake.canned(commands.storage_scan(IMAGES), scan.encode())])
    controller = tmp_path / "cache"
    controller.mkdir(exist_ok=True)
    for name in CACHED:
        a.files.write(f"{IMAGES}/mclu-templates/{name}", Image("raw", 128 << 20))
        (controller / name).write_bytes(b"\0" * 512)
    return c


@pytest.fixture
def user_data(tmp_path: Path) -> Path:
    path = tmp_path / "user-data.yaml"
    path.write_text("#cloud-config\npackages: [htop]\nruncmd: [touch /mine]\n")
    return path


def read_seed(host: fake.FakeHost, path: str = SEED) -> tuple[str, dict[str, str]]:
    data = host.files.files[path]
    assert isinstance(data, bytes)
    return seed.read_iso(data)


def test_build_writes_attaches_then_removes_the_seed_before_ready(
    cli: Cli, user_data: Path
) -> None:
    a = cli.host("a")
    a.consoles["web1"] = FINISHED
    assert cli("build", "cloudy", "web1", "--on", "a", "--user-data", str(user_data)) == 0, (
        cli.stderr
    )
    web1 = cli.guest("a", "web1")
    assert web1.state == model.GuestState.RUNNING
    assert web1.mclu is not None and web1.mclu.state == "ready"
    assert web1.mclu.ready == str(cloudinit.FINISHED)
    assert len(web1.mclu.host_keys) == 3  # the seed's, recorded as the appliance's are
    assert web1.cdroms == ()  # ejected
    assert SEED not in a.files.files  # and gone
    written = a.ran.index(tuple(commands.write_new_file(SEED)))
    removed = a.ran.index(tuple(commands.remove(SEED)))
    assert written < removed
    assert cli.stdout.startswith("web1 runs on a (ready in ")
    assert cli.stdout.endswith(", by console:Cloud-init v\\. \\S+ finished at)\n")


def test_a_guest_kept_for_a_look_keeps_its_seed_which_says_what_was_asked(
    cli: Cli, user_data: Path
) -> None:
    a = cli.host("a")
    a.consoles["web1"] = "Booting...\r\n"  # cloud-init never finishes
    argv = ["build", "cloudy", "web1", "--on", "a", "--ready-timeout", "0.1", "--keep-failed"]
    assert cli(*argv, "--user-data", str(user_data)) == 1
    web1 = cli.guest("a", "web1")
    assert web1.cdroms == (SEED,)  # defined with it, as a read-only CD-ROM
    label, files = read_seed(a)
    assert label == "cidata"
    meta = yaml.safe_load(files["meta-data"])
    assert meta["local-hostname"] == "web1" and meta["instance-id"]
    config = yaml.safe_load(files["user-data"])
    assert config["hostname"] == "web1"
    assert config["ssh_authorized_keys"] == ["ssh-ed25519 AAAA user@ctl"]
    assert config["packages"] == ["htop"] and config["runcmd"] == ["touch /mine"]
    publics = {config["ssh_keys"][f"{k}_public"].split()[1] for k in ("rsa", "ecdsa", "ed25519")}
    assert web1.mclu is not None
    assert {k.split()[1] for k in web1.mclu.host_keys} == publics

    # mclu delete takes the seed with the guest
    assert cli("delete", "web1", "--force") == 0, cli.stderr
    assert "web1" not in a.guests and SEED not in a.files.files


def test_a_failed_build_undoes_its_seed(cli: Cli) -> None:
    a = cli.host("a")
    a.consoles["web1"] = "Booting...\r\n"
    assert cli("build", "cloudy", "web1", "--on", "a", "--ready-timeout", "0.1") == 1
    assert a.guests == {}
    assert SEED not in a.files.files
    assert tuple(commands.write_new_file(SEED)) in a.ran


def test_a_seed_left_there_is_never_overwritten(cli: Cli) -> None:
    """A file of the seed's name that the plan did not know of (the scan lists no files):
    the host refuses to write over it, and the build undoes only what it made."""
    a = cli.host("a")
    a.files.write(SEED, b"someone else's")
    assert cli("build", "cloudy", "web1", "--on", "a") == 1
    assert "personalise" in cli.stderr
    assert a.files.files[SEED] == b"someone else's"
    assert a.guests == {}


def test_user_data_with_a_template_libguestfs_personalises_is_refused(
    cli: Cli, user_data: Path
) -> None:
    result = cli.result("build", "plain", "web1", "--on", "a", "--user-data", str(user_data))
    assert result.code == 2
    assert result.one_error_line() == (
        "mclu: error: --user-data: template plain is personalised by libguestfs, not "
        'cloud-init (its personalise = "cloud-init" takes user data)'
    )
    assert cli.host("a").guests == {}


def test_user_data_that_sets_the_hostname_is_refused_before_any_host_is_asked(
    cli: Cli, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("#cloud-config\nhostname: other\n")
    result = cli.result("build", "cloudy", "web1", "--user-data", str(bad))
    assert result.code == 2
    assert "sets hostname, which mclu sets itself" in result.one_error_line()
    assert cli.opened == []


def test_rebuild_gives_the_new_disk_a_seed_and_takes_it_out_once_ready(cli: Cli) -> None:
    a = cli.host("a")
    old_keys: tuple[str, ...] = ("ssh-ed25519 OLD",)
    meta = model.GuestMeta(
        template="cloudy", revision="2", built="2026-11-01T10:00:00Z", host_keys=old_keys
    )
    a.guests["web1"] = built("web1", meta)
    rebuild_disk_commands(a)
    a.consoles["web1"] = FINISHED
    assert cli.rebuild("web1") == 0, cli.stderr
    web1 = cli.guest("a", "web1")
    assert web1.mclu is not None and web1.mclu.revision == "3"
    assert web1.mclu.ready == str(cloudinit.FINISHED)
    assert len(web1.mclu.host_keys) == 3 and old_keys[0] not in web1.mclu.host_keys
    assert web1.cdroms == ()
    ran = a.ran
    assert ran.index(tuple(commands.write_new_file(SEED))) < ran.index(
        tuple(commands.remove(SEED)), ran.index(tuple(commands.write_new_file(SEED)))
    )


def test_cleanup_removes_a_seed_no_run_is_at(cli: Cli) -> None:
    a = cli.host("a")
    scan = (f"@now 1795200000\n@partial\n1795199990.0 {SEED}\n@locks\n@proclocks\n").encode()
    a.commands.update(
        [
            fake.canned(commands.leftover_scan(IMAGES), scan),
            fake.canned(commands.remove_unused(), f"{SEED}\n".encode()),
        ]
    )
    for name in ("b", "c"):
        cli.host(name).commands.update(
            [fake.canned(commands.leftover_scan(IMAGES), b"@now 1\n@partial\n")]
        )
    assert cli("cleanup", "--dry-run") == 0
    assert cli.stdout.splitlines() == [
        f"a: would remove {SEED} (partial file of an interrupted run for web1)"
    ]
    assert cli("cleanup") == 0, cli.stderr
    assert tuple(commands.remove_unused()) in a.ran


def test_a_rebuild_not_ready_is_rolled_back_without_its_seed(cli: Cli) -> None:
    """cloud-init never finishes on the new disk: the old disk is back, the seed detached
    and gone, and the old guest (ready by cloud-init when built: its seed is long gone, so it
    prints no such line again) is waited for as started."""
    a = cli.host("a")
    meta = model.GuestMeta(
        template="cloudy", revision="2", built="2026-11-01T10:00:00Z", ready=str(cloudinit.FINISHED)
    )
    a.guests["web1"] = built("web1", meta)
    rebuild_disk_commands(a)
    a.consoles["web1"] = "Booting...\r\n"
    assert cli.rebuild("web1", "--ready-timeout", "0.1") == 1
    assert "the old disk is back and web1 runs again" in cli.stderr, cli.stderr
    web1 = cli.guest("a", "web1")
    assert web1.state == model.GuestState.RUNNING
    assert web1.mclu == meta
    assert web1.cdroms == ()
    assert tuple(commands.remove(SEED)) in a.ran  # the seed's undo


def test_a_dry_run_names_each_guests_seed_and_makes_nothing(cli: Cli) -> None:
    assert cli("build", "cloudy", "web1", "--on", "a", "--dry-run") == 0, cli.stderr
    assert f"personalise web1 by cloud-init: a NoCloud seed {SEED} (no appliance)" in (
        cli.stdout.splitlines()
    )
    assert cli("build", "cloudy", "web1", "--on", "a", "--dry-run", "--json") == 0
    [guest] = json.loads(cli.stdout)["guests"]
    assert (guest["personalise"], guest["seed_path"]) == ("cloud-init", SEED)
    assert cli("build", "plain", "web1", "--on", "a", "--dry-run") == 0
    assert "seed" not in cli.stdout  # the appliance's plan says nothing new
    a = cli.host("a")
    assert a.guests == {} and SEED not in a.files.files
