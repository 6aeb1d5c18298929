"""`mclu ssh` and `mclu ssh-config` on the sandbox (issue 12, part 4): a debian-12 guest
(sshd, DHCP) bridged on the sandbox LAN answers `mclu ssh NAME -- hostname` with its name,
checked against exactly the host keys mclu made for it; its guest agent reports its address;
plain OpenSSH reads `mclu ssh-config` (KnownHostsCommand); the exit status is the remote
command's; once the guest's host keys are replaced, ssh refuses it. A bridged tiny guest
(dropbear, udhcpc, ready = "ssh") keeps its address through migrate and rebuild and answers
mclu ssh after; a rebuild whose ssh server does not start is rolled back. A tiny guest on the
NAT network is found by its lease and reached through its host (ProxyJump)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration import sandbox as sb

pytestmark = pytest.mark.sandbox


def test_ssh_checks_the_guest_against_the_keys_mclu_made(
    sandbox: sb.Sandbox, builds: sb.Guests, ssh_key: Path, tmp_path: Path
) -> None:
    host = sandbox.up_hosts[0]
    # Ready by ssh: its sshd, asked from its host, presents a key mclu gave it.
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "debian-12.toml").write_text(
        'ready = "ssh"\n' + (Path(__file__).parents[2] / "templates" / "debian-12.toml").read_text()
    )
    name = builds.name()
    done = builds.build("debian-12", name, "--on", host, templates=templates)
    assert done.returncode == 0, done.stderr
    assert "by ssh)" in done.stdout
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    own = f"IdentityFile {ssh_key.with_suffix('')}\nIdentitiesOnly yes\nBatchMode yes\n"
    (home / ".ssh" / "config").write_text(own)
    env = {"HOME": str(home)}

    done = builds.mclu("ssh", name, "--", "hostname", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == name
    assert builds.mclu("ssh", name, "--", "exit 3", env=env).returncode == 3
    # debian-12 runs qemu-guest-agent: info asks it (list leaves it out), and it knows.
    assert agent_ipv4(builds, name), f"{name}: no IPv4 address from its guest agent"

    printed = builds.mclu("ssh-config", name, env=env)
    assert printed.returncode == 0, printed.stderr
    config = tmp_path / "config"
    config.write_text(f"{printed.stdout}\nHost *\n{own}")
    plain = subprocess.run(
        ["ssh", "-F", str(config), name, "hostname"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(home)},
    )
    assert plain.stdout.strip() == name, plain.stderr

    replace = "rm -f /etc/ssh/ssh_host_*; ssh-keygen -A; systemctl reload ssh"
    assert builds.mclu("ssh", name, "--", replace, env=env).returncode == 0
    refused = builds.mclu("ssh", name, "--", "hostname", env=env)
    assert refused.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    assert name not in refused.stdout


# --- A bridged tiny guest (dropbear, udhcpc) through migrate and rebuild (issue 12, part 4) ---

ADDRESS_WAIT = 120.0  # seconds for a live source (the neighbour table mclu fills) to know it


@pytest.fixture
def tiny_ssh(tmp_path: Path) -> Path:
    """A templates directory whose tiny is ready by ssh: dropbear presents mclu's keys."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "tiny.toml").write_text('base = "tiny"\nmemory = "128 MiB"\nready = "ssh"\n')
    return templates


def ssh_env(tmp_path: Path, ssh_key: Path) -> dict[str, str]:
    """A HOME whose ssh config logs in with the key the guests were built with, never asking."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"IdentityFile {ssh_key.with_suffix('')}\nIdentitiesOnly yes\nBatchMode yes\n"
    )
    return {"HOME": str(home)}


def hostname_by_ssh(builds: sb.Guests, name: str, env: dict[str, str]) -> str:
    done = builds.mclu("ssh", name, "--", "hostname", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def ipv4_from(builds: sb.Guests, name: str, sources: Callable[[str], bool]) -> list[dict[str, Any]]:
    """The guest's IPv4 addresses in `mclu info --json` from the sources `sources` accepts, once
    there are any, else [] after ADDRESS_WAIT (a live source may learn it late in a TCG boot)."""
    deadline = time.monotonic() + ADDRESS_WAIT
    while time.monotonic() < deadline:
        done = builds.mclu("info", name, "--json", timeout=120)
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout)["guest"]["addresses"]
        chosen = [a for a in found if a["family"] == 4 and sources(a["source"])]
        if chosen:
            return chosen
        time.sleep(3)
    return []


def live_ipv4(builds: sb.Guests, name: str) -> dict[str, Any]:
    """The guest's IPv4 address as a live source knows it (not the one recorded when it became
    ready, which may be stale)."""
    live = ipv4_from(builds, name, lambda source: source != "ready")
    assert live, f"{name}: no live IPv4 address within {ADDRESS_WAIT:g} s"
    return live[0]


def agent_ipv4(builds: sb.Guests, name: str) -> list[dict[str, Any]]:
    """The guest's IPv4 addresses its guest agent reports (info asks it; list does not)."""
    return ipv4_from(builds, name, lambda source: source == "agent")


def macs(builds: sb.Guests, host: str, name: str) -> list[str]:
    return re.findall(r"<mac address='([^']+)'", builds.virsh(host, "dumpxml", name))


def recorded_host_keys(builds: sb.Guests, host: str, name: str) -> list[str]:
    """The public host keys in the guest's mclu metadata."""
    xml = builds.virsh(host, "dumpxml", name)
    return [" ".join(k.split()) for k in re.findall(r"<(?:\w+:)?hostkey>([^<]+)<", xml)]


@pytest.mark.timeout(900)  # a few TCG boots on a shared 2-core machine
def test_a_bridged_guest_keeps_its_address_through_migrate_and_answers_ssh(
    sandbox: sb.Sandbox, builds: sb.Guests, ssh_key: Path, tiny_ssh: Path, tmp_path: Path
) -> None:
    source, destination = sandbox.up_hosts[0], sandbox.up_hosts[1]
    name = builds.name()
    done = builds.build("tiny", name, "--on", source, templates=tiny_ssh)
    assert done.returncode == 0, done.stderr
    assert "by ssh)" in done.stdout
    env = ssh_env(tmp_path, ssh_key)
    assert hostname_by_ssh(builds, name, env) == name
    before, mac = live_ipv4(builds, name), macs(builds, source, name)

    moved = builds.mclu("migrate", name, "--to", destination)
    assert moved.returncode == 0, moved.stderr
    assert builds.state(source, name) == "undefined"
    assert builds.state(destination, name) == "running"
    assert macs(builds, destination, name) == mac
    after = live_ipv4(builds, name)
    assert (after["ip"], after["mac"]) == (before["ip"], before["mac"])
    assert hostname_by_ssh(builds, name, env) == name


@pytest.mark.timeout(900)  # a few TCG boots on a shared 2-core machine
def test_a_bridged_guest_keeps_its_address_through_rebuild_and_answers_ssh_with_new_keys(
    sandbox: sb.Sandbox, builds: sb.Guests, ssh_key: Path, tiny_ssh: Path, tmp_path: Path
) -> None:
    host = sandbox.up_hosts[2]
    name = builds.name()
    done = builds.build("tiny", name, "--on", host, templates=tiny_ssh)
    assert done.returncode == 0, done.stderr
    env = ssh_env(tmp_path, ssh_key)
    assert hostname_by_ssh(builds, name, env) == name
    before, mac = live_ipv4(builds, name), macs(builds, host, name)
    old_keys = recorded_host_keys(builds, host, name)
    assert old_keys

    done = builds.rebuild(name, templates=tiny_ssh)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("by ssh"), done.stdout
    assert macs(builds, host, name) == mac
    new_keys = recorded_host_keys(builds, host, name)
    # Fresh keys, recorded: ssh below checks the guest against these, not the old ones.
    assert new_keys and not set(new_keys) & set(old_keys)
    after = live_ipv4(builds, name)
    assert (after["ip"], after["mac"]) == (before["ip"], before["mac"])
    assert hostname_by_ssh(builds, name, env) == name


@pytest.mark.timeout(900)  # a few TCG boots on a shared 2-core machine
def test_rebuild_to_a_revision_whose_ssh_server_does_not_start_is_rolled_back(
    sandbox: sb.Sandbox, builds: sb.Guests, ssh_key: Path, tiny_ssh: Path, tmp_path: Path
) -> None:
    host = sandbox.up_hosts[1]
    name = builds.name()
    done = builds.build("tiny", name, "--on", host, templates=tiny_ssh)
    assert done.returncode == 0, done.stderr
    keys = recorded_host_keys(builds, host, name)
    # The template changed since: its guests boot to a login prompt, but without dropbear.
    (tiny_ssh / "tiny.toml").write_text(
        'base = "tiny"\nmemory = "128 MiB"\nready = "ssh"\nready_timeout = 60\n'
        '[customize]\nrun = ["rm /usr/sbin/dropbear"]\n'
    )
    done = builds.rebuild(name, "--quiet", templates=tiny_ssh)
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"mclu: error: rebuild of {name} on {host} failed at 'ready': ")
    assert "did not become ready (ssh)" in line
    assert line.endswith(f"the old disk is back and {name} runs again")
    assert builds.state(host, name) == "running"
    assert recorded_host_keys(builds, host, name) == keys
    assert hostname_by_ssh(builds, name, ssh_env(tmp_path, ssh_key)) == name


@pytest.mark.timeout(600)  # one TCG boot on a shared 2-core machine
def test_a_guest_on_the_nat_network_is_reached_through_its_host(
    sandbox: sb.Sandbox, builds: sb.Guests, ssh_key: Path, tmp_path: Path
) -> None:
    """tiny on libvirt's NAT network `default` (active on the sandbox's first host only): ready
    by ssh (mclu's default for it), asked from its host; its address from the network's lease;
    `mclu ssh` goes through the host (ProxyJump), as `mclu ssh-config` says."""
    host = sandbox.up_hosts[0]
    networks = sandbox.exec(host, ["virsh", "net-list", "--name"]).stdout.split()
    assert "default" in networks, f"no active libvirt network 'default' on {host}"
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "tiny.toml").write_text(
        'base = "tiny"\nmemory = "128 MiB"\nnetwork = "network:default"\n'
    )
    name = builds.name()
    done = builds.build("tiny", name, "--on", host, templates=templates)
    assert done.returncode == 0, done.stderr
    assert "by ssh)" in done.stdout
    info = builds.mclu("info", name, "--json", timeout=120)
    assert info.returncode == 0, info.stderr
    addresses = json.loads(info.stdout)["guest"]["addresses"]
    assert any(a["family"] == 4 and a["source"] == "lease" for a in addresses), addresses

    env = ssh_env(tmp_path, ssh_key)
    printed = builds.mclu("ssh-config", name, env=env)
    assert printed.returncode == 0, printed.stderr
    assert "ProxyJump" in printed.stdout
    assert hostname_by_ssh(builds, name, env) == name
