"""`mclu start/stop/reboot/destroy/delete/console/viewer` end to end, in-process, on fake hosts.

What is checked is what a user sees (stdout, one-line errors, exit codes) and what the hosts
were made to do (their guests' states, the commands run on them).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from mclu import errors
from mclu.act import lifecycle
from mclu.hosts import commands, fake
from tests.builders import IMAGES, RUNNING, SHUTOFF, guest
from tests.cli.harness import Cli

BASE = f"{IMAGES}/mclu-templates/tiny.x86_64.r1.raw"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path)
    c.host("a").guests["web1"] = guest("web1", own_disk=True)
    c.host("b").guests["db"] = guest("db")
    c.host("b").guests["old"] = guest("old", state=SHUTOFF)
    return c


# --- start ----------------------------------------------------------------------------------


def test_start_a_shut_off_guest(cli: Cli) -> None:
    assert cli("start", "old") == 0
    assert cli.stdout == "old on b: started\n"
    assert cli.state("b", "old") == RUNNING


def test_start_a_running_guest_is_a_noop_note(cli: Cli) -> None:
    assert cli("start", "web1", "--json") == 0
    assert cli.json() == {
        "version": 1,
        "guest": "web1",
        "host": "a",
        "action": "start",
        "changed": False,
        "state": "running",
    }
    assert cli("start", "web1") == 0
    assert cli.stdout == "web1 on a: already running, nothing to do\n"


# --- stop -----------------------------------------------------------------------------------


def test_stop_waits_for_the_acpi_shutdown(cli: Cli) -> None:
    assert cli("stop", "web1", "--json") == 0
    doc = cli.json()
    assert isinstance(doc.pop("seconds"), float)  # how long is bench's to say, not a test's
    assert doc == {
        "version": 1,
        "guest": "web1",
        "host": "a",
        "action": "stop",
        "changed": True,
        "state": "shut off",
        "forced": False,
    }
    assert cli.state("a", "web1") == SHUTOFF


def test_stop_a_shut_off_guest_is_a_noop_note(cli: Cli) -> None:
    assert cli("stop", "old") == 0
    assert cli.stdout == "old on b: already shut off, nothing to do\n"


def test_stop_timeout_without_force_fails_and_says_to_use_force(cli: Cli) -> None:
    cli.host("a").ignores_acpi.add("web1")
    assert cli("stop", "web1", "--timeout", "0.3") == 1
    assert cli.stderr == (
        "mclu: error: a: web1 did not shut off within 0.3 s of the ACPI "
        "request; use --force to power it off\n"
    )
    assert cli.state("a", "web1") == RUNNING


def test_stop_timeout_with_force_powers_off(cli: Cli) -> None:
    cli.host("a").ignores_acpi.add("web1")
    assert cli("stop", "web1", "--timeout", "0.3", "--force") == 0
    assert cli.stdout == "web1 on a: did not shut off within 0.3 s; powered off (--force)\n"
    assert cli.state("a", "web1") == SHUTOFF
    assert cli("start", "web1") == 0
    assert cli("stop", "web1", "--timeout", "0", "--force", "--json") == 0
    assert cli.json()["forced"] is True


def test_stop_force_a_guest_that_goes_off_just_before_the_destroy(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.host("a").ignores_acpi.add("web1")
    original = fake.FakeSession.destroy

    async def destroy(self: fake.FakeSession, name: str) -> None:
        self.fake_host.guests[name] = guest(name, state=SHUTOFF)  # off on its own at last
        await original(self, name)  # refused: "domain is not running"

    monkeypatch.setattr(fake.FakeSession, "destroy", destroy)
    assert cli("stop", "web1", "--timeout", "0", "--force", "--json") == 0
    assert cli.json()["forced"] is False
    assert cli.state("a", "web1") == SHUTOFF


def test_stop_force_fails_when_the_destroy_is_refused(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.host("a").ignores_acpi.add("web1")

    async def destroy(self: fake.FakeSession, name: str) -> None:
        raise errors.LibvirtCallFailed(host="a", what=f"destroy {name}", reason="internal error")

    monkeypatch.setattr(fake.FakeSession, "destroy", destroy)
    assert cli("stop", "web1", "--timeout", "0", "--force") == 1
    assert cli.stderr == "mclu: error: a: destroy web1: internal error\n"
    assert cli.state("a", "web1") == RUNNING


@pytest.fixture
def quick_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """ACPI requests repeated every 10 ms instead of every few seconds."""
    monkeypatch.setattr(lifecycle, "ACPI_REPEAT", 0.01)
    monkeypatch.setattr(lifecycle, "POLL_INTERVAL", 0.005)


def test_stop_repeats_the_acpi_request_a_booting_guest_ignored(
    cli: Cli, quick_repeat: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = 0
    original = fake.FakeSession.shutdown

    async def shutdown(self: fake.FakeSession, name: str) -> None:
        nonlocal requests
        requests += 1
        if requests > 3:  # still booting: the first three go unheard
            await original(self, name)

    monkeypatch.setattr(fake.FakeSession, "shutdown", shutdown)
    assert cli("stop", "web1", "--timeout", "30") == 0
    assert cli.stdout.startswith("web1 on a: shut off (")
    assert cli.state("a", "web1") == SHUTOFF and requests == 4


def test_stop_a_guest_that_goes_off_just_before_the_repeated_request(
    cli: Cli, quick_repeat: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = 0
    original = fake.FakeSession.shutdown

    async def shutdown(self: fake.FakeSession, name: str) -> None:
        nonlocal requests
        requests += 1
        if requests == 2:  # it powers off on its own, then libvirt refuses the request
            self.fake_host.guests[name] = guest(name, state=SHUTOFF)
        if requests >= 2:
            await original(self, name)

    monkeypatch.setattr(fake.FakeSession, "shutdown", shutdown)
    assert cli("stop", "web1", "--timeout", "30") == 0
    assert cli.state("a", "web1") == SHUTOFF and requests == 2


def test_stop_a_repeated_request_refused_while_running_fails(
    cli: Cli, quick_repeat: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = 0

    async def shutdown(self: fake.FakeSession, name: str) -> None:
        nonlocal requests
        requests += 1
        if requests == 2:
            raise errors.LibvirtCallFailed(
                host="a", what=f"shutdown {name}", reason="internal error"
            )

    monkeypatch.setattr(fake.FakeSession, "shutdown", shutdown)
    assert cli("stop", "web1", "--timeout", "30") == 1
    assert cli.stderr == "mclu: error: a: shutdown web1: internal error\n"
    assert cli.state("a", "web1") == RUNNING


def test_stop_rejects_a_negative_timeout(cli: Cli) -> None:
    assert cli("stop", "web1", "--timeout", "-1") == 2
    assert "must not be negative" in cli.stderr


# --- reboot and destroy -------------------------------------------------------------------------


def test_reboot_a_running_guest(cli: Cli) -> None:
    assert cli("reboot", "db", "--json") == 0
    assert cli.json() == {
        "version": 1,
        "guest": "db",
        "host": "b",
        "action": "reboot",
        "changed": True,
        "state": "running",
    }
    assert cli.state("b", "db") == RUNNING


def test_reboot_a_shut_off_guest_fails(cli: Cli) -> None:
    assert cli("reboot", "old") == 1
    assert cli.stderr == (
        "mclu: error: b: old is not running (shut off); start it with `mclu start old`\n"
    )


def test_destroy(cli: Cli) -> None:
    assert cli("destroy", "web1") == 0
    assert cli.stdout == "web1 on a: powered off\n"
    assert cli.state("a", "web1") == SHUTOFF
    assert cli("destroy", "web1", "--json") == 0
    assert cli.json() == {
        "version": 1,
        "guest": "web1",
        "host": "a",
        "action": "destroy",
        "changed": False,
        "state": "shut off",
    }


def test_destroy_a_transient_guest_leaves_nothing(cli: Cli) -> None:
    cli.host("c").guests["tmp"] = guest("tmp", memory=1, persistent=False)
    assert cli("destroy", "tmp", "--json") == 0
    assert cli.json()["state"] == "gone"
    assert cli.state("c", "tmp") is None


# --- finding the guest: not found, ambiguous, hosts down ------------------------------------------


@pytest.mark.parametrize(
    "verb", ["start", "stop", "reboot", "destroy", "delete", "console", "viewer"]
)
def test_a_guest_that_is_nowhere(cli: Cli, verb: str) -> None:
    cli.environ["PATH"] = str(fake_viewer(cli.inventory.parent))
    assert cli(verb, "nope") == 1
    assert cli.stderr == "mclu: error: no guest named 'nope'\n"


@pytest.mark.parametrize("verb", ["start", "stop", "reboot", "destroy", "delete"])
def test_a_name_on_two_hosts_must_be_named_with_its_host(cli: Cli, verb: str) -> None:
    cli.host("c").guests["web1"] = guest("web1", state=SHUTOFF)
    assert cli(verb, "web1") == 1
    assert cli.stderr == "mclu: error: guest 'web1' exists on a and c; name it as HOST:web1\n"
    assert cli.state("a", "web1") == RUNNING and cli.state("c", "web1") == SHUTOFF
    assert cli("start", "c:web1") == 0
    assert cli.stdout == "web1 on c: started\n"


def test_the_host_with_the_guest_is_down(cli: Cli) -> None:
    cli.cluster.fail("a", errors.HostUnreachable(host="a", address="a", reason="no route to host"))
    assert cli("stop", "web1") == 1
    assert cli.stderr == "mclu: error: no guest named 'web1' (a did not answer: it may be there)\n"
    assert cli("stop", "a:web1") == 1
    assert cli.stderr == "mclu: error: a: unreachable at a: no route to host\n"


def test_another_host_down_does_not_matter(cli: Cli) -> None:
    cli.cluster.fail("c", errors.HostUnreachable(host="c", address="c", reason="no route to host"))
    assert cli("destroy", "db") == 0
    assert cli.state("b", "db") == SHUTOFF


def test_a_host_failing_during_the_action(cli: Cli) -> None:
    cli.cluster.fail("b", errors.LibvirtUnavailable(host="b", reason="libvirtd went away"))
    assert cli("start", "b:old") == 1
    assert cli.stderr == "mclu: error: b: libvirt is not answering: libvirtd went away\n"


# --- delete ------------------------------------------------------------------------------------


def backing_argv(*disks: str) -> list[str]:
    """The qemu-img check delete runs on the other guests' disks (read.storage.backing_files)."""
    return commands.backing_info(disks)


def rm_argv(*files: str) -> list[str]:
    return commands.remove(*files)


def console_log(name: str) -> str:
    return f"/var/log/libvirt/qemu/{name}-console.log"


@pytest.fixture
def sharing(cli: Cli) -> fake.FakeHost:
    """Host c: `app` (its own overlay, a cached base, a disk shared with `peer`), and `peer`."""
    c = cli.host("c")
    c.guests["app"] = guest(
        "app",
        state=SHUTOFF,
        disks=(f"{IMAGES}/app.qcow2", BASE, f"{IMAGES}/shared.img", "/dev/sdb", "pool/vol"),
    )
    c.guests["peer"] = guest("peer", disks=(f"{IMAGES}/peer.qcow2", f"{IMAGES}/shared.img"))
    return c


def test_delete_removes_only_the_guests_own_disk(cli: Cli, sharing: fake.FakeHost) -> None:
    own = [f"{IMAGES}/app.qcow2", console_log("app")]
    sharing.commands.update(
        [
            fake.canned(
                backing_argv(f"{IMAGES}/peer.qcow2", f"{IMAGES}/shared.img"),
                b'{"filename": "peer.qcow2", "backing-filename": "%s"}' % BASE.encode(),
            ),
            fake.canned(rm_argv(*own)),
        ]
    )
    assert cli("delete", "app", "--json") == 0
    assert cli.json() == {
        "version": 1,
        "guest": "app",
        "host": "c",
        "action": "delete",
        "changed": True,
        "state": "deleted",
        "destroyed": False,
        "removed": own,
        "kept": [
            {"path": BASE, "reason": "a cached template base"},
            {"path": f"{IMAGES}/shared.img", "reason": "also a disk of peer"},
            {
                "path": "/dev/sdb",
                "reason": "not a file (a device, a pool volume or a network disk)",
            },
            {
                "path": "pool/vol",
                "reason": "not a file (a device, a pool volume or a network disk)",
            },
        ],
    }
    assert sharing.ran[-1] == tuple(rm_argv(*own))
    assert set(sharing.guests) == {"peer"}


def test_delete_keeps_a_disk_another_guests_disk_is_an_overlay_on(cli: Cli) -> None:
    c = cli.host("c")
    c.guests["gold"] = guest("gold", state=SHUTOFF, disks=(f"{IMAGES}/gold.img",))
    c.guests["child"] = guest("child", disks=(f"{IMAGES}/child.qcow2",))
    c.commands.update(
        [
            fake.canned(
                backing_argv(f"{IMAGES}/child.qcow2"),
                b'{"full-backing-filename": "%s/gold.img"}' % IMAGES.encode(),
            ),
            fake.canned(rm_argv(console_log("gold"))),
        ]
    )
    assert cli("delete", "gold") == 0
    assert cli.stdout == (
        f"gold on c: deleted; removed {console_log('gold')}; kept "
        f"{IMAGES}/gold.img (the backing file of another guest's disk)\n"
    )


def test_delete_refuses_a_running_guest_without_force(cli: Cli) -> None:
    assert cli("delete", "web1") == 1
    assert cli.stderr == (
        "mclu: error: a: web1 is running; stop it first, or use --force to "
        "power it off and delete it\n"
    )
    assert cli.state("a", "web1") == RUNNING
    assert cli.host("a").ran == []  # nothing was even looked at on the host


def test_delete_with_force_powers_off_first(cli: Cli) -> None:
    a = cli.host("a")
    a.commands.update([fake.canned(rm_argv(f"{IMAGES}/web1.qcow2", console_log("web1")))])
    assert cli("delete", "web1", "--force") == 0
    assert cli.stdout == (
        f"web1 on a: powered off and deleted; removed {IMAGES}/web1.qcow2, {console_log('web1')}\n"
    )
    assert a.guests == {}


def test_delete_when_removing_files_fails_names_the_host(cli: Cli) -> None:
    cli.host("b").commands.update(
        [
            fake.canned(
                rm_argv(console_log("old")), exit_status=1, stderr=b"rm: cannot remove: Read-only\n"
            )
        ]
    )
    assert cli("delete", "old") == 1
    assert cli.stderr.startswith(
        "mclu: error: b: `rm -f -- /var/log/libvirt/qemu/old-console.log`"
        " failed with exit status 1: rm: cannot remove: Read-only"
    )


def test_delete_dry_run_changes_nothing(cli: Cli, sharing: fake.FakeHost) -> None:
    sharing.commands.update(
        [fake.canned(backing_argv(f"{IMAGES}/peer.qcow2", f"{IMAGES}/shared.img"))]
    )
    assert cli("delete", "app", "--dry-run") == 0
    assert cli.stdout == (
        f"app on c: would delete; would remove {IMAGES}/app.qcow2, "
        f"{console_log('app')}; would keep {BASE} (a cached template base); "
        f"would keep {IMAGES}/shared.img (also a disk of peer); would keep "
        "/dev/sdb (not a file (a device, a pool volume or a network disk)); "
        "would keep pool/vol (not a file (a device, a pool volume or a "
        "network disk))\n"
    )
    assert set(sharing.guests) == {"app", "peer"}
    assert not any(argv[0] == "rm" for argv in sharing.ran)
    assert sharing.locks == {}


def test_delete_dry_run_of_a_running_guest(cli: Cli) -> None:
    assert cli("delete", "web1", "--dry-run") == 1  # it would be refused
    assert "web1 is running" in cli.stderr
    assert cli("delete", "web1", "--dry-run", "--force", "--json") == 0
    assert cli.json() == {
        "version": 1,
        "guest": "web1",
        "host": "a",
        "action": "delete",
        "changed": False,
        "state": "running",
        "dry_run": True,
        "destroyed": True,
        "kept": [],
        "removed": [f"{IMAGES}/web1.qcow2", console_log("web1")],
    }
    assert cli.state("a", "web1") == RUNNING and cli.host("a").ran == []


# --- several guests ------------------------------------------------------------------------------


def test_start_several_guests_one_line_each(cli: Cli) -> None:
    cli.host("c").guests["app"] = guest("app", state=SHUTOFF)
    assert cli("start", "old", "web1", "c:app") == 0
    assert cli.stdout == (
        "old on b: started\nweb1 on a: already running, nothing to do\napp on c: started\n"
    )
    assert cli.state("b", "old") == RUNNING and cli.state("c", "app") == RUNNING


def test_one_failure_among_several_the_others_still_done(cli: Cli) -> None:
    cli.host("a").ignores_acpi.add("web1")
    assert cli("stop", "web1", "nope", "db", "--timeout", "0") == 1
    assert cli.stdout.startswith("db on b: shut off (")
    assert cli.stderr == (
        "mclu: error: a: web1 did not shut off within 0 s of the ACPI "
        "request; use --force to power it off\n"
        "mclu: error: no guest named 'nope'\n"
    )
    assert cli.state("b", "db") == SHUTOFF and cli.state("a", "web1") == RUNNING


def test_several_guests_json_lines(cli: Cli) -> None:
    assert cli("destroy", "web1", "nope", "db", "--json") == 1
    lines = [json.loads(line) for line in cli.stdout.splitlines()]
    assert lines == [
        {
            "version": 1,
            "guest": "web1",
            "host": "a",
            "action": "destroy",
            "changed": True,
            "state": "shut off",
        },
        {
            "version": 1,
            "guest": "nope",
            "host": None,
            "action": "destroy",
            "changed": False,
            "error": "no guest named 'nope'",
            "exit_status": 1,
        },
        {
            "version": 1,
            "guest": "db",
            "host": "b",
            "action": "destroy",
            "changed": True,
            "state": "shut off",
        },
    ]


def test_several_guests_all_locked_is_exit_75(cli: Cli) -> None:
    cli.host("a").locks[f"{IMAGES}/.mclu-locks/web1.lock"] = "ops@ctl pid 1 (mclu rebuild)"
    cli.host("b").locks[f"{IMAGES}/.mclu-locks/db.lock"] = "ops@ctl pid 1 (mclu rebuild)"
    assert cli("destroy", "web1", "db") == 75
    assert cli.stderr.count("is locked by ops@ctl pid 1") == 2
    assert cli.state("a", "web1") == RUNNING
    assert cli("destroy", "web1", "db", "old") == 75  # old: nothing to do, not a failure
    cli.host("b").locks.clear()
    assert cli("destroy", "web1", "db", "nope") == 1  # a lock and another failure
    assert cli.state("b", "db") == SHUTOFF


def test_delete_two_guests_sharing_a_disk_removes_it_with_the_second(cli: Cli) -> None:
    c = cli.host("c")
    c.guests["x"] = guest("x", state=SHUTOFF, disks=(f"{IMAGES}/shared.img",))
    c.guests["y"] = guest("y", state=SHUTOFF, disks=(f"{IMAGES}/shared.img",))
    c.commands.update(
        [
            fake.canned(backing_argv(f"{IMAGES}/shared.img")),
            fake.canned(backing_argv()),
            fake.canned(rm_argv(console_log("x"))),
            fake.canned(rm_argv(f"{IMAGES}/shared.img", console_log("y"))),
        ]
    )
    assert cli("delete", "x", "y") == 0
    assert c.guests == {}
    assert c.ran[-1] == tuple(rm_argv(f"{IMAGES}/shared.img", console_log("y")))


def test_a_name_given_twice_is_done_once(cli: Cli) -> None:
    assert cli("start", "old", "b:old", "old") == 0
    assert cli.stdout == "old on b: started\n"


# --- console -----------------------------------------------------------------------------------


def test_console_of_a_shut_off_guest(cli: Cli) -> None:
    assert cli("console", "old") == 1
    assert cli.stderr == (
        "mclu: error: b: old is not running (shut off); start it with `mclu start old`\n"
    )


def test_console_needs_a_terminal(cli: Cli) -> None:
    assert cli("console", "web1") == 2  # pytest's stdin is no terminal
    assert cli.stderr == "mclu: error: mclu console needs a terminal: standard input is not one\n"


def test_console_log_prints_the_saved_log(cli: Cli) -> None:
    cli.host("a").commands.update(
        [fake.canned(["cat", "--", console_log("web1")], b"Booting\r\nweb1 login: ")]
    )
    assert cli("console", "web1", "--log") == 0
    assert cli.stdout == "Booting\r\nweb1 login: \n"  # a last line without end gets one
    assert cli("console", "web1", "--log", "--json") == 0
    assert cli.json() == {
        "version": 1,
        "guest": "web1",
        "host": "a",
        "action": "console",
        "changed": False,
        "state": "running",
        "path": console_log("web1"),
        "log": "Booting\r\nweb1 login: ",
    }


def test_console_log_of_a_shut_off_guest_is_its_last_boots(cli: Cli) -> None:
    cli.host("b").commands.update([fake.canned(["cat", "--", console_log("old")], b"bye\n")])
    assert cli("console", "b:old", "--log") == 0
    assert cli.stdout == "bye\n"


def test_console_log_that_does_not_exist(cli: Cli) -> None:
    cli.host("b").commands.update(
        [
            fake.canned(
                ["cat", "--", console_log("old")],
                exit_status=1,
                stderr=b"cat: No such file or directory\n",
            ),
            fake.canned(["test", "-e", console_log("old")], exit_status=1),
        ]
    )
    assert cli("console", "old", "--log") == 1
    assert cli.stderr == (
        f"mclu: error: b: old has no console log ({console_log('old')}): it "
        "has not run since it was defined, or its definition logs no "
        "console\n"
    )


def test_console_log_unreadable_is_the_hosts_error(cli: Cli) -> None:
    cli.host("b").commands.update(
        [
            fake.canned(
                ["cat", "--", console_log("old")], exit_status=1, stderr=b"cat: Permission denied\n"
            ),
            fake.canned(["test", "-e", console_log("old")]),
        ]
    )
    assert cli("console", "old", "--log") == 1
    assert "failed with exit status 1: cat: Permission denied" in cli.stderr


# --- viewer ------------------------------------------------------------------------------------


def fake_viewer(directory: Path) -> Path:
    """A directory holding a `virt-viewer` that records its arguments in argv.txt there."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "virt-viewer"
    script.write_text(f'#!/bin/sh\nfor a; do printf "%s\\n" "$a"; done > {bin_dir}/argv.txt\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_viewer_runs_virt_viewer_over_qemu_ssh(cli: Cli, tmp_path: Path) -> None:
    cli.inventory.write_text(
        '[hosts.a]\naddress = "10.0.0.5"\nuser = "root"\nport = 2222\n'
        'identity_file = "/keys/id_ed25519"\nknown_hosts = "/keys/known hosts"\n'
    )
    bin_dir = fake_viewer(tmp_path)
    cli.environ["PATH"] = str(bin_dir)
    assert cli("viewer", "web1", "--json") == 0
    argv = (bin_dir / "argv.txt").read_text().splitlines()
    uri = (
        "qemu+ssh://root@10.0.0.5:2222/system?keyfile=/keys/id_ed25519"
        "&known_hosts=/keys/known%20hosts&no_verify=0"
    )
    assert argv == ["--connect", uri, "web1"]
    assert cli.json()["argv"] == [str(bin_dir / "virt-viewer"), "--connect", uri, "web1"]


def test_viewer_without_virt_viewer_says_what_to_install(cli: Cli, tmp_path: Path) -> None:
    cli.environ["PATH"] = str(tmp_path)
    assert cli("viewer", "web1") == 1
    assert cli.stderr == (
        "mclu: error: `virt-viewer` is not installed on this machine (needed "
        "for the graphical console; install the virt-viewer package)\n"
    )


def test_viewer_that_fails(cli: Cli, tmp_path: Path) -> None:
    bin_dir = fake_viewer(tmp_path)
    (bin_dir / "virt-viewer").write_text("#!/bin/sh\nexit 3\n")
    cli.environ["PATH"] = str(bin_dir)
    assert cli("viewer", "web1") == 1
    assert "failed with exit status 3" in cli.stderr
    assert os.path.exists(bin_dir / "virt-viewer")
