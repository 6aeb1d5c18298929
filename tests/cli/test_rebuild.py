"""`mclu rebuild` end to end, in-process, on fake hosts.

What is checked is what a user (or cron) sees: stdout, one line per failure on stderr, the
exit code; and what the hosts were made to do: the guest's state, metadata, and the commands
run on its host (the disk work is canned: the fake host has no shell). Personalisation needs
libguestfs, so tests of the whole swap replace that one step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import pytest

from mclu import errors, model
from mclu.hosts import commands as host_commands
from mclu.hosts import fake
from mclu.hosts.session import CommandResult
from tests.builders import IMAGES, RUNNING, SHUTOFF, built, guest
from tests.cli.harness import (
    BASE,
    DISK,
    NEW,
    OLD,
    Cli,
    rebuild_disk_commands,
    storage_scan,
)

LOCK = f"{IMAGES}/.mclu-locks/web1.lock"
RESTORE = tuple(host_commands.restore_disk(OLD, DISK))  # the old disk back, as it must be
META = model.GuestMeta(
    template="tiny", revision="2", built="2026-11-01T10:00:00Z", options=(("memory", "256 MiB"),)
)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path)
    c.host("a").guests["web1"] = built("web1", META)
    c.host("a").guests["pet"] = guest("pet", memory=256 << 20, own_disk=True)
    c.host("b").guests["db"] = built("db", META, state=SHUTOFF)
    rebuild_disk_commands(c.host("a"))
    return c


@pytest.fixture
def no_libguestfs(cli: Cli) -> list[str]:
    """Personalisation replaced: records the guests it would have personalised."""
    personalised: list[str] = []

    async def personalise(name: str) -> model.GuestTraits:
        personalised.append(name)
        return model.GuestTraits()  # nothing found: "started" is the rule

    cli.personalise_with(personalise)
    return personalised


@pytest.fixture
def serial_login(cli: Cli) -> None:
    """Personalisation replaced; it finds a getty on the serial console (as in tiny)."""

    async def personalise(name: str) -> model.GuestTraits:
        return model.GuestTraits(serial_login=True)

    cli.personalise_with(personalise)


PANIC = (
    "[    2.1] Run /init as init process\r\nswitch_root: can't execute '/sbin/init'\r\n"
    "[    2.3] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r\n"
)


# --- planning: --dry-run, skips, refusals ------------------------------------------------------


def test_dry_run_says_what_would_be_rebuilt_and_skipped(cli: Cli) -> None:
    cli.host("b").commands = dict([storage(cached=False)])  # b lacks tiny r3, a holds it
    assert cli.rebuild("--all", "--dry-run") == 0
    assert cli.stdout.splitlines() == [
        "web1 on a: would rebuild from tiny r3 (built from r2 at 2026-11-01T10:00:00Z)",
        "db on b: would rebuild from tiny r3 (built from r2 at 2026-11-01T10:00:00Z)",
        "download tiny r3 into the controller's cache: 10.5 MiB",
        "pet on a: skipped: not built by mclu (no mclu metadata): a pet, never rebuilt",
    ]
    assert cli.stderr == ""
    assert cli.host("a").ran == [tuple(host_commands.storage_scan(IMAGES))]  # read, nothing done


def test_dry_run_json(cli: Cli) -> None:
    assert cli.rebuild("--all", "--dry-run", "--json", "--host", "a") == 0
    doc = cli.json()
    assert doc == {
        "version": 1,
        "rebuild": [
            {
                "name": "web1",
                "host": "a",
                "template": "tiny",
                "revision": "3",
                "from_revision": "2",
                "built": "2026-11-01T10:00:00Z",
                "state": "running",
            }
        ],
        "download": [],  # a holds tiny r3
        "skipped": [
            {
                "name": "pet",
                "host": "a",
                "reason": "not built by mclu (no mclu metadata): a pet, never rebuilt",
            }
        ],
        "failed": [],
    }


def storage(*, cached: bool) -> tuple[tuple[str, ...], CommandResult]:
    """A host's image directory as `mclu.read.storage` reads it, tiny r3's base cached or not."""
    return fake.canned(host_commands.storage_scan(IMAGES), storage_scan(cached=cached))


def dry_run_lines(cli: Cli, *argv: str) -> list[str]:
    assert cli.rebuild(*argv, "--dry-run") == 0, cli.stderr
    return cli.stdout.splitlines()


def test_dry_run_says_what_it_downloads_in_builds_words_only_when_a_host_lacks_the_base(
    cli: Cli,
) -> None:
    """The issue: download only what some host needs, and say in --dry-run what will be."""
    cli.give_key()
    cli.host("b").commands = dict([storage(cached=False)])
    assert cli("build", "tiny", "new", "--on", "b", "--dry-run") == 0, cli.stderr
    (builds,) = [line for line in cli.stdout.splitlines() if line.startswith("download ")]
    assert builds == "download tiny r3 into the controller's cache: 10.5 MiB"
    rebuild_disk_commands(cli.host("a"), base_cached=False)
    assert dry_run_lines(cli, "web1") == [
        "web1 on a: would rebuild from tiny r3 (built from r2 at 2026-11-01T10:00:00Z)",
        builds,
    ]
    assert cli.rebuild("web1", "--dry-run", "--json") == 0
    assert cli.json()["download"] == [
        {
            "template": "tiny",
            "revision": "3",
            "base": BASE.rpartition("/")[2],
            "bytes": 11000000,
            "from": f"file://{cli.repo}/tiny.xz",
        }
    ]
    # Two hosts lacking it, web1's and db's: downloaded once.
    assert dry_run_lines(cli, "web1", "db").count(builds) == 1
    assert cli.rebuild("web1", "db", "--dry-run", "--json") == 0
    assert len(cli.json()["download"]) == 1
    assert not (cli.tmp / "cache").exists()  # a dry run downloads nothing


def test_dry_run_says_nothing_of_a_download_when_every_host_holds_the_base(cli: Cli) -> None:
    cli.host("b").commands = dict([storage(cached=True)])
    assert dry_run_lines(cli, "web1", "db") == [
        "web1 on a: would rebuild from tiny r3 (built from r2 at 2026-11-01T10:00:00Z)",
        "db on b: would rebuild from tiny r3 (built from r2 at 2026-11-01T10:00:00Z)",
    ]
    assert cli.rebuild("web1", "db", "--dry-run", "--json") == 0
    assert cli.json()["download"] == []


def test_dry_run_says_a_base_in_the_controllers_cache_is_not_downloaded(cli: Cli) -> None:
    rebuild_disk_commands(cli.host("a"), base_cached=False)
    (cli.tmp / "cache").mkdir()
    (cli.tmp / "cache" / BASE.rpartition("/")[2]).write_bytes(b"tiny")
    assert dry_run_lines(cli, "web1")[1:] == [
        "nothing to download: tiny r3 is in the controller's cache"
    ]
    assert cli.rebuild("web1", "--dry-run", "--json") == 0
    assert cli.json()["download"] == []


def test_all_skips_the_pet_and_says_so_quiet_says_nothing(cli: Cli) -> None:
    cli.host("a").guests.pop("web1")
    assert cli.rebuild("--all", "--host", "a") == 0
    assert cli.stdout == (
        "pet on a: skipped: not built by mclu (no mclu metadata): a pet, never rebuilt\n"
    )
    assert cli.rebuild("--all", "--host", "a", "--quiet") == 0
    assert (cli.stdout, cli.stderr) == ("", "")
    assert cli.guest("a", "pet").state == RUNNING


def test_a_named_pet_is_a_failure_of_one_line(cli: Cli) -> None:
    assert cli.rebuild("pet", "--quiet") == 1
    assert cli.stdout == ""
    assert cli.stderr == (
        "mclu: error: a: pet cannot be rebuilt: not built by mclu (no mclu "
        "metadata): a pet, never rebuilt\n"
    )


def test_if_older_than_skips_young_guests_quietly(cli: Cli) -> None:
    assert cli.rebuild("web1", "--if-older-than", "100000w", "--quiet") == 0
    assert (cli.stdout, cli.stderr) == ("", "")
    assert cli.rebuild("web1", "--if-older-than", "100000w") == 0
    assert cli.stdout.startswith("web1 on a: skipped: built ")
    assert cli.host("a").ran == []


@pytest.mark.parametrize(
    "argv",
    [
        ("rebuild",),
        ("rebuild", "web1", "--all"),
        ("rebuild", "web1", "--if-older-than", "7"),
        ("rebuild", "web1", "--quiet", "--json"),
        ("rebuild", "web1", "--stop-timeout", "-1"),
    ],
)
def test_usage_errors_exit_2(
    cli: Cli, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(*argv) == 2
    assert cli.host("a").ran == []


def test_a_tag_no_host_has_is_refused_not_an_empty_run(cli: Cli) -> None:
    """A typo in a cron line's --tag must not rebuild nothing and exit 0, night after night."""
    for argv in (("--all", "--tag", "nope", "--dry-run"), ("--all", "--tag", "nope", "--quiet")):
        assert cli.rebuild(*argv) == 2
        assert cli.stderr == (
            f"mclu: error: unknown tag 'nope' (the hosts of {cli.inventory} have: rack1, rack2)\n"
        )
        assert cli.stdout == ""
    assert cli.host("a").ran == []
    assert cli.rebuild("--all", "--tag", "rack2", "--dry-run") == 0  # c: no guests to rebuild


def test_no_key_no_password_is_refused_and_no_login_says_it_is_meant(cli: Cli) -> None:
    """keys are not in the metadata: a rebuild takes them again, by the rule of build."""
    assert cli("rebuild", "web1", "--dry-run") == 2
    assert cli.stderr.startswith("mclu: error: no ssh key for the guests' root: ")
    assert cli("rebuild", "web1", "--dry-run", "--no-login") == 0
    assert cli.stdout.startswith("web1 on a: would rebuild from tiny r3")


def test_a_guest_not_found_fails(cli: Cli) -> None:
    assert cli.rebuild("nope", "--quiet") == 1
    assert cli.stderr == "mclu: error: no guest named 'nope'\n"


# --- locking -----------------------------------------------------------------------------------


def test_a_guest_locked_by_another_run_fails_fast_with_75_naming_the_holder(
    cli: Cli,
) -> None:
    holder = "alice@ctl2 pid 4242 (mclu rebuild, since 2026-11-21T02:00:00Z)"
    cli.host("a").locks[LOCK] = holder
    assert cli.rebuild("web1", "--quiet") == errors.EXIT_LOCKED == 75
    assert cli.stdout == ""
    assert cli.stderr == (
        f"mclu: error: a: guest 'web1' is locked by {holder}; try again when that run has ended\n"
    )
    assert cli.guest("a", "web1") == built("web1", META)  # untouched
    assert cli.host("a").ran == [tuple(host_commands.storage_scan(IMAGES))]  # read, no more
    assert cli.host("a").locks == {LOCK: holder}  # the other run's lock is not ours to drop


def test_locked_and_failed_together_exit_1(cli: Cli) -> None:
    cli.host("a").locks[LOCK] = "bob@ctl pid 1 (mclu rebuild, since now)"
    assert cli.rebuild("web1", "pet", "--quiet") == 1
    assert len(cli.stderr.splitlines()) == 2


# --- the rebuild itself ------------------------------------------------------------------------


def test_rebuild_swaps_the_disk_and_keeps_the_domain(cli: Cli, no_libguestfs: list[str]) -> None:
    before = cli.guest("a", "web1")
    assert cli.rebuild("web1") == 0, cli.stderr
    # The fake repository's tiny declares no readiness rule and its disk was not looked at
    # (no libguestfs here): "started" is all that can be checked.
    assert re.fullmatch(
        r"web1 on a: rebuilt from tiny r3 \(was r2\), ready in [\d.]+ s by "
        r"started\n",
        cli.stdout,
    )
    assert cli.stderr == ""
    after = cli.guest("a", "web1")
    assert after.state == RUNNING
    assert (after.uuid, after.disks, after.memory) == (before.uuid, before.disks, before.memory)
    assert after.mclu is not None
    assert (after.mclu.template, after.mclu.revision, after.mclu.state, after.mclu.options) == (
        "tiny",
        "3",
        "ready",
        META.options,
    )
    assert after.mclu.built > META.built
    assert no_libguestfs == ["web1"]
    ran = cli.host("a").ran
    swap = [
        ran.index(tuple(a))
        for a in (
            ["ln", "--", DISK, OLD],
            ["mv", "-f", "-T", "--", NEW, DISK],
            ["rm", "-f", "--", OLD],
        )
    ]
    assert swap == sorted(swap)
    assert RESTORE not in ran  # nothing undone
    assert cli.host("a").locks == {}  # released


def test_the_new_disks_host_keys_are_recorded_in_the_metadata(cli: Cli) -> None:
    keys = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEW",)

    async def personalise(name: str) -> model.GuestTraits:
        return model.GuestTraits(host_keys=keys)

    cli.personalise_with(personalise)
    assert cli.rebuild("web1") == 0, cli.stderr
    after = cli.guest("a", "web1").mclu
    assert after is not None and after.host_keys == keys and after.state == "ready"


def test_a_networked_guest_with_an_ssh_server_is_ready_by_ssh_and_its_address_recorded(
    cli: Cli,
) -> None:
    # Its new disk has dropbear and the host keys mclu gave it; its NIC is on a libvirt network:
    # the default rule is ssh, and the address it has then is recorded, as build records it.
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEW"
    host = cli.host("a")
    host.guests["web1"] = dataclasses.replace(host.guests["web1"], networks=("network:default",))

    async def personalise(name: str) -> model.GuestTraits:
        return model.GuestTraits(serial_login=True, host_keys=(key,), ssh_server="dropbear")

    cli.personalise_with(personalise)
    host.addresses["web1"] = (
        model.Address(ip="10.0.0.5", family=4, source=model.AddressSource.LEASE, mac="52:54"),
    )
    scan = tuple(host_commands.ssh_keyscan("10.0.0.5", ("ed25519",)))
    host.commands[scan] = CommandResult(scan, 0, f"10.0.0.5 {key}\n".encode())
    assert cli.rebuild("web1") == 0, cli.stderr
    assert re.fullmatch(
        r"web1 on a: rebuilt from tiny r3 \(was r2\), ready in [\d.]+ s by ssh\n", cli.stdout
    )
    after = cli.guest("a", "web1").mclu
    assert after is not None
    assert (after.ready, after.ssh_server, after.addresses) == ("ssh", "dropbear", ("10.0.0.5",))
    assert scan in host.ran


def test_a_shut_off_guest_is_rebuilt_and_stays_off(cli: Cli, no_libguestfs: list[str]) -> None:
    cli.host("a").guests["web1"] = built("web1", META, state=SHUTOFF)
    assert cli.rebuild("web1", "--json") == 0, cli.stderr
    done = cli.json_lines()[-1]
    assert done["event"] == "done"
    assert [
        (r["name"], r["running"], r["revision"], r["from_revision"]) for r in done["rebuilt"]
    ] == [("web1", False, "3", "2")]
    assert cli.guest("a", "web1").state == SHUTOFF


def test_quiet_success_prints_nothing(cli: Cli, no_libguestfs: list[str]) -> None:
    assert cli.rebuild("web1", "--quiet") == 0
    assert (cli.stdout, cli.stderr) == ("", "")


def test_a_failed_new_build_leaves_the_old_guest_running_untouched(cli: Cli) -> None:
    # Personalisation cannot reach the fake host's disk (no socket forwarding): it fails.
    before = cli.guest("a", "web1")
    assert cli.rebuild("web1", "--quiet") == 1
    assert cli.stdout == ""
    (line,) = cli.stderr.splitlines()
    assert line.startswith("mclu: error: rebuild of web1 on a failed at 'personalise': ")
    assert line.endswith("; web1 is unchanged and running")
    assert cli.guest("a", "web1") == before
    ran = cli.host("a").ran
    assert ran[-1] == ("rm", "-f", "--", NEW)  # the new disk, undone
    assert not any(argv[0] in ("ln", "mv") and DISK in argv for argv in ran)
    assert RESTORE not in ran
    assert cli.host("a").running == []  # no qemu-nbd left


def test_a_rebuild_downloads_nothing_when_the_guests_host_holds_the_base(
    cli: Cli, no_libguestfs: list[str]
) -> None:
    """The repository has no tiny.xz: a rebuild that fetched it would fail at 'download
    template' (as the next test shows). Its host holding the base, nothing is fetched."""
    assert cli.rebuild("web1") == 0, cli.stderr
    assert not (cli.tmp / "cache").exists()


def test_a_failed_download_leaves_the_old_guest_alone(cli: Cli) -> None:
    rebuild_disk_commands(
        cli.host("a"), base_cached=False
    )  # the repository's tiny.xz does not exist
    assert cli.rebuild("web1") == 1
    assert "failed at 'download template'" in cli.stderr
    assert cli.stderr.rstrip().endswith("web1 is unchanged and running")
    assert cli.guest("a", "web1") == built("web1", META)


def test_a_new_guest_that_does_not_start_gets_its_old_disk_back(
    cli: Cli, no_libguestfs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    starts: list[str] = []
    real_start = fake.FakeSession.start

    async def start(self: fake.FakeSession, name: str) -> None:
        starts.append(name)
        if len(starts) == 1:
            raise errors.LibvirtCallFailed(
                host=self.host, what=f"start {name}", reason="no bootable device"
            )
        await real_start(self, name)

    monkeypatch.setattr(fake.FakeSession, "start", start)
    assert cli.rebuild("web1") == 1
    assert cli.stderr == (
        "mclu: error: rebuild of web1 on a failed at 'start': a: start "
        "web1: no bootable device; the old disk is back and web1 runs "
        "again\n"
    )
    assert starts == ["web1", "web1"]
    assert cli.guest("a", "web1") == built("web1", META)  # old metadata, running
    ran = cli.host("a").ran
    back = ran.index(RESTORE)
    assert back > ran.index(("mv", "-f", "-T", "--", NEW, DISK))
    assert ("rm", "-f", "--", OLD) not in ran


def test_restoring_that_fails_is_said_in_the_one_line(
    cli: Cli, no_libguestfs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def start(self: fake.FakeSession, name: str) -> None:
        raise errors.LibvirtCallFailed(host=self.host, what=f"start {name}", reason="broken")

    monkeypatch.setattr(fake.FakeSession, "start", start)
    assert cli.rebuild("web1") == 1
    (line,) = cli.stderr.splitlines()
    assert (
        f"restoring web1 failed (could not start web1 again on a: a: start web1: broken)"
        f"; its old disk may be {OLD}: check it" in line
    )


def test_an_interrupted_earlier_rebuild_is_not_overwritten(
    cli: Cli, no_libguestfs: list[str]
) -> None:
    cli.host("a").commands.update(
        [fake.canned(["test", "-e", OLD]), fake.canned(["test", OLD, "-ef", DISK], exit_status=1)]
    )
    assert cli.rebuild("web1") == 1
    assert cli.stderr == (
        f"mclu: error: a: web1 cannot be rebuilt: {OLD} is left from an "
        f"interrupted rebuild and is the disk from before it: move it back "
        f"over {DISK} or remove it\n"
    )
    assert cli.guest("a", "web1") == built("web1", META)


def test_one_failure_does_not_stop_the_others(cli: Cli, no_libguestfs: list[str]) -> None:
    cli.host("a").guests["web2"] = built("web2", META)
    cli.host("a").commands.update(
        [
            fake.canned(
                host_commands.disk_info([f"{IMAGES}/web2.qcow2"]),
                exit_status=1,
                stderr=b"qemu-img: Could not open 'web2.qcow2': No such file or directory",
            )
        ]
    )
    assert cli.rebuild("web2", "web1") == 1
    assert "rebuild of web2 on a failed at 'read disk'" in cli.stderr
    assert cli.stdout.startswith("web1 on a: rebuilt")
    assert cli.guest("a", "web2") == built("web2", META)


# --- cancellation (Ctrl-C, SIGTERM) undoes the guest under way ----------------------------------


def test_cancelled_while_personalising_leaves_the_old_guest(cli: Cli) -> None:
    async def personalise(name: str) -> model.GuestTraits:
        raise asyncio.CancelledError

    cli.personalise_with(personalise)
    assert cli.rebuild("web1") == 143
    assert cli.stderr == "mclu: error: terminated\n"
    assert cli.guest("a", "web1") == built("web1", META)
    assert cli.host("a").ran[-1] == ("rm", "-f", "--", NEW)
    assert cli.host("a").locks == {}


def test_cancelled_after_the_swap_puts_the_old_guest_back(
    cli: Cli, no_libguestfs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[model.GuestMeta] = []
    real = fake.FakeSession.set_metadata

    async def set_metadata(self: fake.FakeSession, name: str, meta: model.GuestMeta) -> None:
        calls.append(meta)
        await real(self, name, meta)
        if len(calls) == 1:
            raise asyncio.CancelledError  # Ctrl-C just as the new metadata was written

    monkeypatch.setattr(fake.FakeSession, "set_metadata", set_metadata)
    assert cli.rebuild("web1") == 143
    assert cli.guest("a", "web1") == built("web1", META)  # old metadata, running again
    assert calls[-1] == META
    ran = cli.host("a").ran
    assert ran.index(RESTORE) > ran.index(("mv", "-f", "-T", "--", NEW, DISK))


# --- readiness: the new guest must show it booted -----------------------------------------------


def test_a_new_disk_that_does_not_boot_is_rolled_back(cli: Cli, serial_login: None) -> None:
    cli.host("a").consoles["web1"] = PANIC
    assert cli.rebuild("web1") == 1
    (line,) = cli.stderr.splitlines()
    assert line.startswith(
        "mclu: error: rebuild of web1 on a failed at 'ready': tiny r3 did not become ready "
        "(console:login:): its kernel panicked (Kernel panic - not syncing: Attempted to kill "
        "init! exitcode=0x00000100); its console ends: "
    )
    assert "switch_root: can't execute '/sbin/init'" in line  # the console, quoted
    assert line.endswith("; the old disk is back and web1 runs again")
    after = cli.guest("a", "web1")
    assert after.state == RUNNING and after.mclu == META  # old revision, old metadata
    ran = cli.host("a").ran
    assert RESTORE in ran  # the old disk renamed back over the disk
    assert ("rm", "-f", "--", OLD) not in ran  # never removed
    assert cli.host("a").locks == {}


def test_a_rule_that_never_matches_is_rolled_back_in_time(cli: Cli, serial_login: None) -> None:
    cli.host("a").consoles["web1"] = "Welcome\r\n"
    assert cli.rebuild("web1", "--ready-timeout", "0", "--json") == 1
    done = cli.json_lines()[-1]
    (failed,) = done["failed"]
    assert (
        "did not become ready (console:login:): not ready within 0 s; its console ends: "
        "Welcome;" in failed["error"]
    )
    assert done["rebuilt"] == []
    assert cli.guest("a", "web1").mclu == META


def test_all_stops_using_a_revision_that_did_not_become_ready(cli: Cli, serial_login: None) -> None:
    cli.host("a").guests["web2"] = built("web2", META)
    cli.host("a").consoles["web1"] = PANIC
    assert cli.rebuild("--all", "--host", "a", "--quiet") == 1
    lines = cli.stderr.splitlines()
    assert lines[0].startswith("mclu: error: rebuild of web1 on a failed at 'ready'")
    assert lines[1] == "mclu: error: a: web2 not rebuilt: tiny r3 did not become ready on web1"
    assert cli.guest("a", "web2") == built("web2", META)  # not touched


def test_a_shut_off_guest_is_booted_once_to_check_it_then_shut_off(
    cli: Cli, serial_login: None
) -> None:
    cli.host("a").guests["web1"] = built("web1", META, state=SHUTOFF)
    cli.host("a").consoles["web1"] = "Debian GNU/Linux 12\r\n\r\nweb1 login: "
    assert cli.rebuild("web1") == 0, cli.stderr
    assert re.fullmatch(
        r"web1 on a: rebuilt from tiny r3 \(was r2\) in [\d.]+ s; booted once, "
        r"ready by console:login:, shut off again\n",
        cli.stdout,
    )
    after = cli.guest("a", "web1")
    assert after.state == SHUTOFF
    assert after.mclu is not None and after.mclu.ready == "console:login:"


def test_a_shut_off_guest_that_does_not_boot_gets_its_old_disk_and_stays_off(
    cli: Cli, serial_login: None
) -> None:
    cli.host("a").guests["web1"] = built("web1", META, state=SHUTOFF)
    cli.host("a").consoles["web1"] = PANIC
    assert cli.rebuild("web1") == 1
    assert cli.stderr.rstrip().endswith("the old disk is back; web1 is shut off, as it was")
    assert cli.guest("a", "web1") == built("web1", META, state=SHUTOFF)


def test_no_verify_leaves_a_shut_off_guest_unbooted_and_says_so(
    cli: Cli, serial_login: None
) -> None:
    cli.host("a").guests["web1"] = built("web1", META, state=SHUTOFF)
    assert cli.rebuild("web1", "--no-verify") == 0, cli.stderr
    assert cli.stdout.endswith("; shut off, as it was, not checked (--no-verify)\n")
    assert cli.guest("a", "web1").state == SHUTOFF


def test_if_newer_skips_guests_already_at_the_newest_revision(
    cli: Cli, no_libguestfs: list[str]
) -> None:
    cli.host("a").guests["web2"] = built("web2", dataclasses.replace(META, revision="3"))
    assert cli.rebuild("web1", "web2", "--if-newer") == 0, cli.stderr
    assert no_libguestfs == ["web1"]
    assert "web2 on a: skipped: built from tiny r3, which is the newest (--if-newer)" in cli.stdout


def test_exclude_leaves_a_guest_out_and_a_name_no_host_has_is_a_usage_error(
    cli: Cli, no_libguestfs: list[str]
) -> None:
    assert cli.rebuild("--all", "--host", "a", "--exclude", "web1", "--dry-run") == 0
    assert "web1 on a: skipped: left out (--exclude)" in cli.stdout
    assert cli.rebuild("--all", "--exclude", "web9", "--dry-run") == 2
    assert cli.stderr == "mclu: error: --exclude web9: no guest of that name on the hosts asked\n"


def test_revision_rebuilds_from_the_revision_named(cli: Cli, no_libguestfs: list[str]) -> None:
    assert cli.rebuild("web1", "--revision", "3", "--dry-run") == 0
    assert cli.stdout.startswith("web1 on a: would rebuild from tiny r3 ")
    assert cli.rebuild("web1", "--revision", "2", "--dry-run") == 1
    assert cli.stderr.startswith(
        "mclu: error: a: web1 cannot be rebuilt: its template 'tiny' "
        "cannot be resolved: template tiny has no revision 2 "
        "(listed: r3)"
    )
