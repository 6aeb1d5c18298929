"""Guest lifecycle on the sandbox: a real tiny guest stopped by ACPI, started, rebooted,
attached to through `mclu console` on a real pseudo-terminal, destroyed and deleted.

The tests share one guest, to build it once, but none depends on what another left: the
`guest` fixture hands each a running guest that has shown its login prompt, started again or
built again if an earlier test left it shut off or deleted it. Any test runs alone.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from mclu.sandbox import images as sandbox_images
from tests.integration import sandbox as sb

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(1800)]

IMAGES = "/var/lib/libvirt/images"


@pytest.fixture(scope="module")
def guests(sandbox: sb.Sandbox, ssh_key: Path, cache_dir: Path) -> Iterator[sb.Guests]:
    sandbox_images.build_repository(sandbox.state, names=["tiny"])  # the only one used here
    made = sb.Guests(sandbox, ssh_key, cache_dir, prefix="lc")
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture(scope="module")
def host(sandbox: sb.Sandbox) -> str:
    return sandbox.up_hosts[0]


@pytest.fixture
def guest(guests: sb.Guests, host: str) -> str:
    """A running tiny guest whose console has shown its login prompt: the module's guest,
    started (by virsh, not by the mclu under test) if a test left it off, built if none is
    left."""
    alive = [n for n in guests.names if guests.state(host, n) != "undefined"]
    if not alive:
        return guests.built(host)
    name = alive[0]
    if guests.state(host, name) != "running":
        guests.sandbox.exec(host, ["virsh", "start", name])
    sb.console_shows(guests.sandbox, host, name, f"{name} login:")
    return name


def test_stop_by_acpi_then_start(guests: sb.Guests, host: str, guest: str) -> None:
    done = guests.mclu("stop", guest, "--timeout", "120", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["host"], doc["changed"], doc["forced"], doc["state"]) == (
        host,
        True,
        False,
        "shut off",
    )  # tiny's acpid powered it off
    assert guests.state(host, guest) == "shut off"
    done = guests.mclu("start", guest)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{guest} on {host}: started\n"
    assert guests.state(host, guest) == "running"
    sb.console_shows(guests.sandbox, host, guest, f"{guest} login:")
    again = guests.mclu("start", guest)
    assert (again.returncode, again.stdout) == (
        0,
        f"{guest} on {host}: already running, nothing to do\n",
    )


def test_stop_right_after_start_is_heard(guests: sb.Guests, host: str, guest: str) -> None:
    """A guest still booting ignores the ACPI request; stop repeats it until the guest's
    acpid hears it, instead of failing after its timeout."""
    assert guests.mclu("destroy", guest).returncode == 0
    assert guests.mclu("start", guest).returncode == 0
    done = guests.mclu("stop", guest, "--timeout", "120", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["forced"] is False
    assert guests.state(host, guest) == "shut off"
    assert guests.mclu("start", guest).returncode == 0
    sb.console_shows(guests.sandbox, host, guest, f"{guest} login:")


def test_console_log_prints_this_boots_console(guests: sb.Guests, host: str, guest: str) -> None:
    done = guests.mclu("console", guest, "--log")
    assert done.returncode == 0, done.stderr
    assert f"{guest} login:" in done.stdout


def test_reboot_boots_the_guest_again(guests: sb.Guests, host: str, guest: str) -> None:
    prompts = sb.console_log(guests.sandbox, host, guest).count(f"{guest} login:")
    done = guests.mclu("reboot", guest)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{guest} on {host}: rebooting (ACPI request sent)\n"
    # A reboot keeps the same qemu and so the same console log: one more boot's prompt.
    shows_more_prompts(guests.sandbox, host, guest, prompts)
    assert guests.state(host, guest) == "running"


def shows_more_prompts(
    sandbox: sb.Sandbox, host: str, name: str, before: int, seconds: float = 240
) -> None:
    deadline = time.monotonic() + seconds
    log = ""
    while time.monotonic() < deadline:
        log = sb.console_log(sandbox, host, name)
        if log.count(f"{name} login:") > before:
            return
        time.sleep(2)
    raise AssertionError(f"{name}: no second boot on its console; it shows:\n{log[-2000:]}")


def enter_until_login(child: pexpect.spawn, seconds: float = 120) -> None:
    """Press Enter until the guest's getty answers with a new login prompt.

    mclu prints its banner before `virsh console` runs on the host, and virsh puts its
    terminal in raw mode with TCSAFLUSH, which discards what was typed before: an Enter sent
    in that window never reaches the guest (the whole file under load: no prompt in 120 s).
    A user presses Enter again; so does the test, until the deadline.
    """
    deadline = time.monotonic() + seconds
    while True:
        child.sendline("")
        try:
            child.expect("login:", timeout=10)
            return
        except pexpect.TIMEOUT:
            if time.monotonic() > deadline:
                raise


def test_console_logs_in_and_leaves_with_ctrl_bracket(
    guests: sb.Guests, host: str, guest: str
) -> None:
    child = pexpect.spawn(
        str(sb.BIN / "mclu"),
        ["-c", str(guests.sandbox.inventory), "console", guest],
        encoding="utf-8",
        timeout=120,
        dimensions=(30, 100),
    )
    try:
        child.expect_exact("Escape character is ^]")
        enter_until_login(child)
        child.sendline("root")  # tiny's root has an empty password on the console
        child.expect("# ")
        child.sendline('hostname; echo END""-mark')  # the echo of this line cannot match
        child.expect("END-mark")
        assert guest in child.before
        child.sendcontrol("]")
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close(force=True)
    assert (child.exitstatus, child.signalstatus) == (0, None)


def test_viewer_runs_virt_viewer_for_the_guests_host(
    guests: sb.Guests, host: str, guest: str, tmp_path: Path
) -> None:
    script = tmp_path / "virt-viewer"
    script.write_text(f'#!/bin/sh\nfor a; do printf "%s\\n" "$a"; done > {tmp_path}/argv\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    done = guests.mclu("viewer", guest, env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    client = guests.sandbox.state / "client"
    address = guests.sandbox.address(host)
    assert (tmp_path / "argv").read_text().splitlines() == [
        "--connect",
        f"qemu+ssh://root@{address}:22/system?keyfile={client}/id_ed25519"
        f"&known_hosts={client}/known_hosts&no_verify=0",
        guest,
    ]
    missing = guests.mclu("viewer", guest, env={"PATH": str(tmp_path / "nowhere")})
    assert missing.returncode == 1
    assert "install the virt-viewer package" in missing.stderr


def test_destroy_powers_off_at_once(guests: sb.Guests, host: str, guest: str) -> None:
    done = guests.mclu("destroy", guest)
    assert done.returncode == 0, done.stderr
    assert guests.state(host, guest) == "shut off"


def test_delete_removes_the_guests_disk_and_keeps_the_shared_base(
    guests: sb.Guests, host: str, guest: str
) -> None:
    guests.sandbox.exec(host, ["virsh", "destroy", guest])  # shut off: deleted without --force
    other = guests.built(host)  # an overlay on the same cached base
    base = [f for f in guests.files(host, f"{IMAGES}/mclu-templates") if f.startswith("tiny.")]
    assert base
    done = guests.mclu("delete", guest, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["removed"] == [
        f"{IMAGES}/{guest}.qcow2",
        f"/var/log/libvirt/qemu/{guest}-console.log",
    ]
    assert guests.state(host, guest) == "undefined"
    assert f"{guest}.qcow2" not in guests.files(host, IMAGES)
    assert f"{other}.qcow2" in guests.files(host, IMAGES)
    assert set(base) <= set(guests.files(host, f"{IMAGES}/mclu-templates"))
    refused = guests.mclu("delete", other)
    assert refused.returncode == 1
    assert refused.stderr == (
        f"mclu: error: {host}: {other} is running; stop it first, "
        "or use --force to power it off and delete it\n"
    )
    forced = guests.mclu("delete", other, "--force")
    assert forced.returncode == 0, forced.stderr
    assert guests.state(host, other) == "undefined"
    assert f"{other}.qcow2" not in guests.files(host, IMAGES)
