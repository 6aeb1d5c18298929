"""Guest lifecycle on the sandbox: a real tiny guest stopped by ACPI, started, rebooted,
attached to through `mclu console` on a real pseudo-terminal, destroyed and deleted.

The tests share one guest and run in file order (each leaves it as the next expects).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from mclu.sandbox import images as sandbox_images
from tests.integration import sandbox as sb
from tests.integration.test_build import console_shows

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(1800)]

IMAGES = "/var/lib/libvirt/images"


class Guests:
    """Guests this module builds on one host, removed at the end whatever happened."""

    def __init__(self, sandbox: sb.Sandbox, host: str, key: Path, cache: Path) -> None:
        self.sandbox = sandbox
        self.host = host
        self.key = key
        self.env = {"MCLU_CACHE": str(cache)}
        self.names: list[str] = []

    def build(self) -> str:
        name = f"lc{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        done = sb.mclu(
            "build",
            "tiny",
            name,
            "--on",
            self.host,
            "--ssh-key",
            str(self.key),
            inventory=self.sandbox.inventory,
            env=self.env,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr
        console_shows(self.sandbox, self.host, name, f"{name} login:")
        return name

    def mclu(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return sb.mclu(*args, inventory=self.sandbox.inventory, env=env, timeout=300)

    def state(self, name: str) -> str:
        done = self.sandbox.exec(self.host, ["virsh", "domstate", name], check=False)
        return done.stdout.strip() if done.returncode == 0 else "undefined"

    def files(self, directory: str) -> list[str]:
        return self.sandbox.exec(self.host, ["ls", "-a", directory], check=False).stdout.split()

    def cleanup(self) -> None:
        for name in self.names:
            self.sandbox.exec(self.host, ["virsh", "-q", "destroy", name], check=False)
            self.sandbox.exec(self.host, ["virsh", "-q", "undefine", name], check=False)
            self.sandbox.exec(self.host, ["rm", "-f", f"{IMAGES}/{name}.qcow2"], check=False)


@pytest.fixture(scope="module")
def guests(sandbox: sb.Sandbox, ssh_key: Path, cache_dir: Path) -> Iterator[Guests]:
    sandbox_images.build_repository(sandbox.state)
    made = Guests(sandbox, sandbox.up_hosts[0], ssh_key, cache_dir)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture(scope="module")
def guest(guests: Guests) -> str:
    """The tiny guest the tests below share, running with its login prompt shown."""
    return guests.build()


def test_stop_by_acpi_then_start(guests: Guests, guest: str) -> None:
    done = guests.mclu("stop", guest, "--timeout", "120", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["host"], doc["changed"], doc["forced"], doc["state"]) == (
        guests.host,
        True,
        False,
        "shut off",
    )  # tiny's acpid powered it off
    assert guests.state(guest) == "shut off"
    done = guests.mclu("start", guest)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{guest} on {guests.host}: started\n"
    assert guests.state(guest) == "running"
    console_shows(guests.sandbox, guests.host, guest, f"{guest} login:")
    again = guests.mclu("start", guest)
    assert (again.returncode, again.stdout) == (
        0,
        f"{guest} on {guests.host}: already running, nothing to do\n",
    )


def test_stop_right_after_start_is_heard(guests: Guests, guest: str) -> None:
    """A guest still booting ignores the ACPI request; stop repeats it until the guest's
    acpid hears it, instead of failing after its timeout."""
    assert guests.mclu("destroy", guest).returncode == 0
    assert guests.mclu("start", guest).returncode == 0
    done = guests.mclu("stop", guest, "--timeout", "120", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["forced"] is False
    assert guests.state(guest) == "shut off"
    assert guests.mclu("start", guest).returncode == 0
    console_shows(guests.sandbox, guests.host, guest, f"{guest} login:")


def test_console_log_prints_this_boots_console(guests: Guests, guest: str) -> None:
    done = guests.mclu("console", guest, "--log")
    assert done.returncode == 0, done.stderr
    assert f"{guest} login:" in done.stdout


def test_reboot_boots_the_guest_again(guests: Guests, guest: str) -> None:
    done = guests.mclu("reboot", guest)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{guest} on {guests.host}: rebooting (ACPI request sent)\n"
    # A reboot keeps the same qemu and so the same console log: a second boot's prompt.
    shows_prompt_twice(guests, guest)
    assert guests.state(guest) == "running"


def shows_prompt_twice(guests: Guests, name: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    log = ""
    while time.monotonic() < deadline:
        log = guests.sandbox.exec(
            guests.host, ["cat", f"/var/log/libvirt/qemu/{name}-console.log"], check=False
        ).stdout
        if log.count(f"{name} login:") >= 2:
            return
        time.sleep(2)
    raise AssertionError(f"{name}: no second boot on its console; it shows:\n{log[-2000:]}")


def test_console_logs_in_and_leaves_with_ctrl_bracket(guests: Guests, guest: str) -> None:
    child = pexpect.spawn(
        str(sb.BIN / "mclu"),
        ["-c", str(guests.sandbox.inventory), "console", guest],
        encoding="utf-8",
        timeout=120,
        dimensions=(30, 100),
    )
    try:
        child.expect_exact("Escape character is ^]")
        child.sendline("")
        child.expect("login:")
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
    guests: Guests, guest: str, tmp_path: Path
) -> None:
    script = tmp_path / "virt-viewer"
    script.write_text(f'#!/bin/sh\nfor a; do printf "%s\\n" "$a"; done > {tmp_path}/argv\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    done = guests.mclu("viewer", guest, env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    client = guests.sandbox.state / "client"
    address = guests.sandbox.address(guests.host)
    assert (tmp_path / "argv").read_text().splitlines() == [
        "--connect",
        f"qemu+ssh://root@{address}:22/system?keyfile={client}/id_ed25519"
        f"&known_hosts={client}/known_hosts&no_verify=0",
        guest,
    ]
    missing = guests.mclu("viewer", guest, env={"PATH": str(tmp_path / "nowhere")})
    assert missing.returncode == 1
    assert "install the virt-viewer package" in missing.stderr


def test_destroy_powers_off_at_once(guests: Guests, guest: str) -> None:
    done = guests.mclu("destroy", guest)
    assert done.returncode == 0, done.stderr
    assert guests.state(guest) == "shut off"


def test_delete_removes_the_guests_disk_and_keeps_the_shared_base(
    guests: Guests, guest: str
) -> None:
    other = guests.build()  # an overlay on the same cached base
    base = [f for f in guests.files(f"{IMAGES}/mclu-templates") if f.startswith("tiny.")]
    assert base
    done = guests.mclu("delete", guest, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["removed"] == [
        f"{IMAGES}/{guest}.qcow2",
        f"/var/log/libvirt/qemu/{guest}-console.log",
    ]
    assert guests.state(guest) == "undefined"
    assert f"{guest}.qcow2" not in guests.files(IMAGES)
    assert f"{other}.qcow2" in guests.files(IMAGES)
    assert set(base) <= set(guests.files(f"{IMAGES}/mclu-templates"))
    refused = guests.mclu("delete", other)
    assert refused.returncode == 1
    assert refused.stderr == (
        f"mclu: error: {guests.host}: {other} is running; stop it first, "
        "or use --force to power it off and delete it\n"
    )
    forced = guests.mclu("delete", other, "--force")
    assert forced.returncode == 0, forced.stderr
    assert guests.state(other) == "undefined"
    assert f"{other}.qcow2" not in guests.files(IMAGES)
