"""The sandbox for real: fake hosts with their own sshd and libvirtd in network namespaces.

Needs root. Uses the sandbox in $MCLU_SANDBOX_DIR (default: the test instance's,
/var/tmp/mclu-sandbox-9): if one is already up it is reused, and the up/down test brings it
back to its previous size afterwards.
Power commands are only ever run after checking, in the same shell inside the fake host,
that they resolve to the sandbox's stand-in.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mclu.sandbox import config
from mclu.sandbox import config as sandbox_config
from mclu.sandbox.state import Paths, read_record, state_dir_from_env
from mclu.sandbox.status import leftovers

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root"),
    pytest.mark.skipif(shutil.which("libvirtd") is None, reason="libvirtd not installed"),
]

STATE = state_dir_from_env()
PATHS = Paths(STATE)
STANDIN_MARK = "# mclu-sandbox power stand-in."

HAM0 = f"{sandbox_config.SUBNET}.10"  # ham0's address in the instance under test


def sandbox(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mclu.sandbox.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(*args: str) -> str:
    proc = sandbox(*args)
    assert proc.returncode == 0, f"mclu-sandbox {' '.join(args)}: {proc.stderr}{proc.stdout}"
    return proc.stdout


def ssh(host: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(STATE / "client" / "ssh_config"), host, command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def answers(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def hosts() -> int:
    """Number of running hosts (3 unless a sandbox of another size was already up)."""
    count = read_record(PATHS) or 3
    ok("up", str(count))
    return count


def test_ssh_reaches_the_hosts_own_libvirtd(hosts: int) -> None:
    proc = ssh(
        HAM0,
        "hostname; virsh -c qemu:///system hostname; virsh -c qemu:///system list;"
        " ls -l /var/run/libvirt/libvirt-sock",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "ham0"
    assert lines[1] == "ham0"  # libvirtd runs in the host's UTS namespace
    assert any(line.split() == ["Id", "Name", "State"] for line in lines)
    assert "libvirt-sock" in proc.stdout


def test_new_host_has_empty_libvirtd(hosts: int) -> None:
    spare = f"ham{hosts}"
    ok("start", spare)
    try:
        proc = ssh(spare, "virsh -c qemu:///system list --all --name")
        assert proc.returncode == 0, proc.stderr
        # Its own libvirtd: only domains defined earlier on this very host could show up.
        defined = sorted(
            p.stem for p in (STATE / "hosts" / spare / "etc-libvirt/qemu").glob("*.xml")
        )
        assert sorted(proc.stdout.split()) == defined
    finally:
        ok("stop", spare)


def test_hosts_trust_each_other(hosts: int) -> None:
    if hosts < 2:
        pytest.skip("needs two hosts")
    proc = ssh("ham0", "ssh -o BatchMode=yes ham1 hostname")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ham1"


def test_power_commands_resolve_to_the_stand_in(hosts: int) -> None:
    script = (
        'for c in poweroff reboot halt shutdown systemctl; do readlink -f "$(command -v $c)"; done;'
        " for p in /usr/sbin/poweroff /sbin/reboot /usr/sbin/halt /usr/sbin/shutdown"
        ' /usr/bin/systemctl; do [ -e "$p" ] && sed -n 2p "$p"; done'
    )
    out = ok("exec", "ham0", "--", "sh", "-c", script).splitlines()
    assert out[:5] == [
        f"/usr/local/sbin/{c}" for c in ("poweroff", "reboot", "halt", "shutdown", "systemctl")
    ]
    assert out[5:] and all(line == STANDIN_MARK for line in out[5:])
    first = ok("exec", "ham0", "--", "sed", "-n", "2p", "/usr/local/sbin/poweroff")
    assert first.strip() == STANDIN_MARK


def test_stand_in_powers_off_only_its_host(hosts: int) -> None:
    spare = config.HostSpec(hosts)
    ok("start", spare.name)
    assert answers(spare.address)
    # Verify, inside the host and in the same shell, that poweroff is the stand-in; only then
    # run it.
    proc = ssh(
        spare.name,
        'p=$(readlink -f "$(command -v poweroff)");'
        f' if sed -n 2p "$p" | grep -qxF "{STANDIN_MARK}"'
        f' && [ "$(cat /run/mclu-host)" = {spare.name} ]'
        ' && [ "$(readlink /proc/self/ns/net)" != "$(readlink /proc/2/ns/net)" ];'
        " then poweroff; else echo NOT-THE-STAND-IN; exit 99; fi",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "powering off fake host" in proc.stdout
    status = ""
    for _ in range(50):
        status = sandbox("status").stdout  # non-zero while the host is half way down
        if f"{spare.name:<6} {spare.address:<12} off" in status:
            break
        subprocess.run(["sleep", "0.1"], check=True)
    assert f"{spare.name:<6} {spare.address:<12} off" in status
    assert not answers(spare.address)
    assert f"ham0   {HAM0:<12} up" in status


def test_inventory_lists_running_hosts_and_one_powered_off(hosts: int) -> None:
    inv = tomllib.loads((STATE / "hosts.toml").read_text())
    assert list(inv["hosts"]) == [f"ham{i}" for i in range(hosts + 1)]
    assert inv["defaults"]["domain_type"] == "qemu"
    assert Path(inv["defaults"]["identity_file"]).exists()
    assert not answers(inv["hosts"][f"ham{hosts}"]["address"])


def test_stop_and_start_a_host(hosts: int) -> None:
    ok("stop", "ham0")
    assert not answers(HAM0)
    ok("start", "ham0")
    assert answers(HAM0)
    assert ok("exec", "ham0", "--", "hostname").strip() == "ham0"


def test_daemon_stop_and_start(hosts: int) -> None:
    ok("daemon", "ham0", "libvirtd", "stop")
    assert sandbox("exec", "ham0", "--", "virsh", "-c", "qemu:///system", "uri").returncode != 0
    ok("daemon", "ham0", "libvirtd", "start")
    assert ok("exec", "ham0", "--", "virsh", "-c", "qemu:///system", "uri").strip() == (
        "qemu:///system"
    )


def test_exec_passes_the_exit_status(hosts: int) -> None:
    assert sandbox("exec", "ham0", "--", "sh", "-c", "exit 7").returncode == 7


def test_up_is_idempotent(hosts: int) -> None:
    assert "already up" in ok("up", str(hosts))


_IN_STATE = re.compile(re.escape(str(STATE).encode()) + rb"(?=/|\x00|$)")


def _processes_using_state_dir() -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        # The state directory or a path in it; not another instance's (STATE-1, ...).
        if state != "Z" and _IN_STATE.search(cmdline):
            found.append(f"{entry}: {cmdline!r}")
    return found


def test_down_leaves_nothing_then_up_again(hosts: int) -> None:
    try:
        ok("down")
        assert leftovers() == []
        assert _processes_using_state_dir() == []
        assert not any(n.startswith("mclu-") for n in os.listdir("/sys/class/net"))
        assert "down" in sandbox("status").stdout
        ok("down")  # idempotent
    finally:
        ok("up", str(hosts))  # leave the sandbox as we found it
    assert ok("exec", "ham0", "--", "hostname").strip() == "ham0"
