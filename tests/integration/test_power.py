"""`mclu on` and `mclu off` on the sandbox: wake-on-LAN through the sandbox's listener, and the
fake hosts' power-off stand-in (never the real poweroff: it would stop the whole machine).

The sandbox's layout is restored at the end: the powered-off host off again, the others on.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from mclu.sandbox import config
from tests.integration import sandbox as sb

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(900)]

WAIT = "120"


def states(sandbox: sb.Sandbox) -> dict[str, str]:
    _code, doc = sb.mclu_json("status", inventory=sandbox.inventory)
    hosts = doc["hosts"]
    assert isinstance(hosts, list)
    return {h["name"]: h["state"] for h in hosts}


def stand_in_verified(sandbox: sb.Sandbox, host: str) -> None:
    """The host's `poweroff` is the sandbox's stand-in (docs/sandbox.md), checked read-only."""
    done = sandbox.exec(
        host,
        [
            "sh",
            "-c",
            'head -3 "$(PATH=/usr/local/sbin:$PATH command -v poweroff)"; cat /run/mclu-host',
        ],
    )
    assert "mclu-sandbox power stand-in" in done.stdout and done.stdout.split()[-1] == host


@pytest.fixture
def layout(sandbox: sb.Sandbox) -> Iterator[None]:
    """Whatever a test does, leave the up hosts on and the spare one off."""
    yield
    for host in sandbox.up_hosts:
        sb.sandbox("start", host, check=False)  # "already running" is fine
    sb.sandbox("stop", sandbox.off_host, check=False)


@pytest.fixture
def running_guest(sandbox: sb.Sandbox) -> Iterator[tuple[str, str]]:
    """A diskless TCG guest running on the second up host; removed afterwards."""
    host, name = sandbox.up_hosts[1], f"pw-{uuid.uuid4().hex[:6]}"
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>"
    )
    sandbox.exec(
        host,
        [
            "sh",
            "-c",
            'f=$(mktemp) && cat > "$f" && virsh -q define "$f" && '
            "virsh -q start " + name + '; r=$?; rm -f "$f"; exit $r',
        ],
        input=xml,
    )
    yield host, name
    sandbox.exec(host, ["virsh", "-q", "destroy", name], check=False)
    sandbox.exec(host, ["virsh", "-q", "undefine", name], check=False)


@pytest.mark.usefixtures("layout")
def test_on_wakes_the_powered_off_host_through_the_listener(sandbox: sb.Sandbox) -> None:
    spare = sandbox.off_host
    assert states(sandbox)[spare] == "off"
    done = sb.mclu(
        "on", spare, "--wait", "--timeout", WAIT, inventory=sandbox.inventory, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{spare}: on, answering ssh after ")
    assert states(sandbox)[spare] == "on"
    log = (sandbox.state / "wol-listener.log").read_text()
    assert f"({spare}): powering on" in log


@pytest.mark.usefixtures("layout")
def test_off_is_refused_while_a_guest_runs_then_forced(
    sandbox: sb.Sandbox, running_guest: tuple[str, str]
) -> None:
    host, guest = running_guest
    refused = sb.mclu("off", host, inventory=sandbox.inventory)
    assert refused.returncode == 1
    assert refused.stderr == (
        f"mclu: error: {host}: refusing to power off: 1 running guest "
        f"({guest}); move them with --drain, or power off anyway with "
        "--force\n"
    )
    assert states(sandbox)[host] == "on"

    stand_in_verified(sandbox, host)
    forced = sb.mclu(
        "off",
        host,
        "--force",
        "--wait",
        "--timeout",
        WAIT,
        inventory=sandbox.inventory,
        timeout=300,
    )
    assert forced.returncode == 0, forced.stderr
    assert f"{host}: off, no longer answering after " in forced.stdout
    assert states(sandbox)[host] == "off"

    back = sb.mclu(
        "on", host, "--wait", "--timeout", WAIT, inventory=sandbox.inventory, timeout=300
    )
    assert back.returncode == 0, back.stderr
    assert states(sandbox)[host] == "on"


@pytest.mark.usefixtures("layout")
def test_off_a_host_without_guests_then_on_again(sandbox: sb.Sandbox) -> None:
    host = sandbox.up_hosts[2]
    stand_in_verified(sandbox, host)
    off = sb.mclu(
        "off", host, "--wait", "--timeout", WAIT, "--json", inventory=sandbox.inventory, timeout=300
    )
    assert off.returncode == 0, off.stderr
    assert states(sandbox)[host] == "off"
    assert sb.sandbox("status", check=False).stdout.count(" off") == 2  # it and the spare

    on = sb.mclu("on", host, "--wait", "--timeout", WAIT, inventory=sandbox.inventory, timeout=300)
    assert on.returncode == 0, on.stderr
    assert states(sandbox)[host] == "on"


def test_the_listener_ignores_what_is_not_a_magic_packet(sandbox: sb.Sandbox) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.sendto(b"hello", (config.WOL_ADDRESS, config.WOL_PORT))
    log = sandbox.state / "wol-listener.log"
    for _ in range(50):
        if "5 bytes, not a magic packet: ignored" in log.read_text():
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the listener did not log the datagram: {log.read_text()[-500:]}")
    assert states(sandbox)[sandbox.off_host] == "off"
