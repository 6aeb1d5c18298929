"""The sandbox for real: fake hosts with their own sshd and libvirtd in network namespaces.

Needs root. Uses the sandbox in $MCLU_SANDBOX_DIR (default: the test instance's,
/var/tmp/mclu-sandbox-9): if one is already up it is reused, and the up/down test brings it
back to its previous size afterwards.
Power commands are only ever run after checking, in the same shell inside the fake host,
that they resolve to the sandbox's stand-in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mclu.sandbox import config, lan
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
    # Its NAT network is up again, over a bridge made afresh as on a real host's boot.
    assert config.NAT_NETWORK in active_networks("ham0")


# --- guest networks: br0 on the LAN with its DHCP server, libvirt's NAT network on ham0 -------

# A stand-in guest NIC: a veth whose far end is plugged into BRIDGE (as libvirt plugs a
# guest's tap), asking for a lease with busybox's udhcpc; removed whatever happens.
_DHCP_CLIENT = """
set -e
ip link add mclut0 address "$2" type veth peer name mclut0p
trap 'ip link del mclut0' EXIT
ip link set mclut0p master "$1" up
ip link set mclut0 up
busybox udhcpc -i mclut0 -n -q -R -t 20 -T 1 -s /bin/true 2>&1
"""
_LEASE = re.compile(r"lease of ([0-9.]+) obtained from ([0-9.]+)")


def dhcp_lease(host: str, bridge: str, mac: str) -> tuple[str, str]:
    """(address, server) a client on `bridge` inside `host` is offered (released at once)."""
    out = ok("exec", host, "--", "sh", "-c", _DHCP_CLIENT, "dhcp", bridge, mac)
    match = _LEASE.search(out)
    assert match, out
    return match.group(1), match.group(2)


def active_networks(host: str) -> list[str]:
    return ok(
        "exec", host, "--", "virsh", "-q", "-c", "qemu:///system", "net-list", "--name"
    ).split()


def test_br0_carries_each_host_onto_the_lan_and_its_dhcp_server(hosts: int) -> None:
    for index in range(hosts):
        host = config.HostSpec(index)
        shown = ok("exec", host.name, "--", "ip", "-j", "addr", "show")
        links = {link["ifname"]: link for link in json.loads(shown)}
        assert links[config.HOST_IFACE]["master"] == config.HOST_BRIDGE
        (inet,) = [a for a in links[config.HOST_BRIDGE]["addr_info"] if a["family"] == "inet"]
        assert (inet["local"], inet["prefixlen"], inet["broadcast"]) == (
            host.address,
            config.PREFIX_LEN,
            config.WOL_ADDRESS,
        )
        assert not [a for a in links[config.HOST_IFACE]["addr_info"] if a["family"] == "inet"]
    inv = tomllib.loads((STATE / "hosts.toml").read_text())
    assert inv["defaults"]["network"] == f"bridge:{config.HOST_BRIDGE}"
    # One DHCP server, bound to this instance's bridge, answers a client on a host's br0.
    (pid,) = lan.running_pids()
    assert f"--interface={config.BRIDGE}" in Path(f"/proc/{pid}/cmdline").read_text()
    address, server = dhcp_lease("ham1", config.HOST_BRIDGE, "52:54:00:fe:00:01")
    assert server == config.BRIDGE_ADDRESS
    first, last = (int(a.rsplit(".", 1)[1]) for a in (config.DHCP_FIRST, config.DHCP_LAST))
    prefix, octet = address.rsplit(".", 1)
    assert prefix == config.SUBNET and first <= int(octet) <= last


def test_ham0_runs_libvirts_nat_network_inside_its_namespaces(hosts: int) -> None:
    assert config.NAT_NETWORK in active_networks("ham0")
    if hosts > 1:
        assert config.NAT_NETWORK not in active_networks("ham1")
    address, server = dhcp_lease("ham0", "virbr0", "52:54:00:fe:00:02")
    assert server == f"{config.NAT_SUBNET}.1"
    assert address.startswith(f"{config.NAT_SUBNET}.")
    # libvirt's masquerading rule is in ham0's namespace, not the machine's.
    rules = ok("exec", "ham0", "--", "iptables", "-t", "nat", "-S")
    assert f"-s {config.NAT_SUBNET}.0/24" in rules
    machine = subprocess.run(
        ["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True
    )
    assert f"{config.NAT_SUBNET}." not in machine.stdout


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
