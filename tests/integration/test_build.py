"""`mclu build` on the sandbox: real transfers, real libguestfs, real guests that boot.

Each test checks what a user would: the exit status and last line, the guest's own serial
console (its login prompt carries the hostname the build gave it), and that a failed or
interrupted build leaves nothing behind on any host.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import posixpath
import re
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mclu.sandbox import images as sandbox_images
from tests.integration import sandbox as sb

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(1800)]


def test_tiny_guest_streamed_boots_with_its_hostname(
    sandbox: sb.Sandbox, builds: sb.Guests
) -> None:
    host = sandbox.up_hosts[1]
    name = builds.name()
    done = builds.build("tiny", name, "--on", host, "--transport", "stream")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"{name} runs on {host} \(ready in [\d.]+ s, by ssh\)\n", done.stdout)
    sb.console_shows(sandbox, host, name, f"{name} login:")
    code, doc = sb.mclu_json("info", name, inventory=sandbox.inventory)
    assert code == 0
    guest = doc["guest"]
    assert guest["host"] == host and guest["state"] == "running"
    assert guest["mclu"]["template"] == "tiny" and guest["mclu"]["state"] == "ready"
    disk = guest["disks"][0]
    assert disk == f"/var/lib/libvirt/images/{name}.qcow2"
    info = json.loads(sandbox.exec(host, ["qemu-img", "info", "--output=json", "-U", disk]).stdout)
    assert info["backing-filename"].startswith("/var/lib/libvirt/images/mclu-templates/tiny.")


def test_two_guests_in_one_command_over_nbd(sandbox: sb.Sandbox, builds: sb.Guests) -> None:
    host = sandbox.up_hosts[2]
    a, b = builds.name(), builds.name()
    done = builds.build("tiny", a, b, "--on", host, "--transport", "nbd")
    assert done.returncode == 0, done.stderr
    assert f"{a} runs on {host}" in done.stdout and f"{b} runs on {host}" in done.stdout
    sb.console_shows(sandbox, host, a, f"{a} login:")
    sb.console_shows(sandbox, host, b, f"{b} login:")


def test_second_build_reuses_the_hosts_cached_base(sandbox: sb.Sandbox, builds: sb.Guests) -> None:
    host = sandbox.up_hosts[1]
    first = builds.build("tiny", builds.name(), "--on", host)
    assert first.returncode == 0, first.stderr
    plan = builds.build("tiny", builds.name(), "--on", host, "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert doc["guests"][0]["base_cached"] is True
    assert doc["send_bytes"] == 0


def test_prune_removes_only_bases_no_guest_uses(
    sandbox: sb.Sandbox, builds: sb.Guests, tmp_path: Path
) -> None:
    host = sandbox.up_hosts[0]
    name = builds.name()
    # A revision of its own: other guests on the host (`make demo`'s web1) use the published one.
    own = sandbox.with_tiny_at(10_000 + int(uuid.uuid4().int % 10_000), tmp_path)
    done = builds.build("tiny", name, "--on", host, inventory=own)
    assert done.returncode == 0, done.stderr
    # The guest's own base; the cache may hold others (older revisions, earlier runs).
    info = json.loads(
        sandbox.exec(
            host,
            ["qemu-img", "info", "--output=json", "-U", f"/var/lib/libvirt/images/{name}.qcow2"],
        ).stdout
    )
    base = posixpath.basename(info["backing-filename"])
    prune = ["templates", "prune", "--host", host, "--min-age", "0", "--json"]
    code, doc = sb.mclu_json(*prune, "--dry-run", inventory=sandbox.inventory)
    assert code == 0
    (mine,) = doc["hosts"]
    assert base in mine["in_use"] and base not in mine["removed"]
    cache = ["ls", "/var/lib/libvirt/images/mclu-templates"]
    assert set(mine["removed"]) <= set(sandbox.exec(host, cache).stdout.split())  # dry run
    builds.cleanup()  # the guest and its overlay go: nothing uses the base now
    code, doc = sb.mclu_json(*prune, inventory=sandbox.inventory)
    assert code == 0
    removed = doc["hosts"][0]["removed"]
    assert base in removed
    assert not set(removed) & set(sandbox.exec(host, cache).stdout.split())


def test_dry_run_changes_nothing(sandbox: sb.Sandbox, builds: sb.Guests) -> None:
    name = builds.name()
    done = builds.build("tiny", name, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert name in done.stdout
    assert sb.leftovers(sandbox, name) == []


def test_a_name_taken_anywhere_is_refused(sandbox: sb.Sandbox, builds: sb.Guests) -> None:
    host = sandbox.up_hosts[0]
    name = builds.name()
    sandbox.exec(
        host,
        [
            "sh",
            "-c",
            'f=$(mktemp) && cat > "$f" && virsh -q define "$f"; r=$?; rm -f "$f"; exit $r',
        ],
        input=f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32"
        "</memory><os><type arch='x86_64'>hvm</type></os></domain>",
    )
    done = builds.build("tiny", name, "--on", sandbox.up_hosts[1])
    assert done.returncode == 1
    assert done.stderr == f"mclu: error: {host}: a guest named {name!r} already exists\n"


def test_failed_build_leaves_nothing_behind(
    sandbox: sb.Sandbox, builds: sb.Guests, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "broken.toml").write_text('base = "tiny"\n[customize]\nrun = ["exit 3"]\n')
    name = builds.name()
    host = sandbox.up_hosts[2]
    done = builds.build("broken", name, "--on", host, "--templates", str(templates))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mclu: error: build of {name} failed at step 'personalise' on {host}")
    assert sb.leftovers(sandbox, name) == []


def test_interrupted_build_leaves_nothing_behind(sandbox: sb.Sandbox, builds: sb.Guests) -> None:
    name = builds.name()
    host = sandbox.up_hosts[1]
    argv = [
        str(sb.BIN / "mclu"),
        "-c",
        str(sandbox.inventory),
        "build",
        "tiny",
        name,
        "--on",
        host,
        "--json",
        "--ssh-key",
        str(builds.ssh_key),
    ]
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **sb.GUESTFS_ENV, **builds.env},
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # interrupt once the guest's disk exists on the host
            if json.loads(line).get("text", "").startswith("personalising"):
                proc.send_signal(signal.SIGINT)
                break
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert sb.leftovers(sandbox, name) == []


@pytest.fixture
def http_repo(repo: Path, tmp_path: Path) -> Iterator[Path]:
    """The sandbox repository served over http on loopback, and a repos.d pointing at it."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(repo))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    repos_d = tmp_path / "repos.d"
    repos_d.mkdir()
    (repos_d / "http.conf").write_text(
        f"[sandbox-http]\nuri={url}/index.asc\ngpgkey={url}/key.asc\n"
    )
    try:
        yield repos_d
    finally:
        server.shutdown()
        server.server_close()


def test_build_from_a_repository_over_http(
    sandbox: sb.Sandbox, builds: sb.Guests, http_repo: Path, tmp_path: Path
) -> None:
    inventory = sandbox.variant(tmp_path / "hosts.toml", top={"template_repos": [str(http_repo)]})
    name = builds.name()
    host = sandbox.up_hosts[2]
    done = builds.build(
        "tiny",
        name,
        "--on",
        host,
        inventory=inventory,
        env={"MCLU_CACHE": str(tmp_path / "fresh-cache")},
    )  # download over http
    assert done.returncode == 0, done.stderr
    sb.console_shows(sandbox, host, name, f"{name} login:")


@pytest.mark.parametrize("transport", ["stream", "nbd"])
def test_debian_guest_has_the_users_key_and_password(
    sandbox: sb.Sandbox, builds: sb.Guests, tmp_path: Path, transport: str
) -> None:
    password = tmp_path / "root-password"
    password.write_text(f"pw-{uuid.uuid4().hex[:12]}\n")
    password.chmod(0o600)
    name = builds.name()
    host = sandbox.up_hosts[1]
    sandbox.exec(host, ["sh", "-c", "rm -f /var/lib/libvirt/images/mclu-templates/debian-12.*"])
    done = builds.build(
        "debian-12",
        name,
        "--on",
        host,
        "--root-password-file",
        str(password),
        "--transport",
        transport,
    )
    assert done.returncode == 0, done.stderr
    assert password.read_text().strip() not in done.stdout + done.stderr
    sb.console_shows(sandbox, host, name, f"{name} login:")
    shown = sb.console_command(
        sandbox,
        host,
        name,
        "cat /root/.ssh/authorized_keys; hostname",
        password=password.read_text().strip(),
    )
    assert builds.ssh_key.read_text().split()[1] in shown
    assert name in shown


def test_a_host_without_the_network_is_one_line_and_nothing_made(
    sandbox: sb.Sandbox, ssh_key: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Issue 12: the plan knows the host's active libvirt networks and bridges (the sandbox's
    guests use user networking; its hosts may have no libvirt network active)."""
    sandbox_images.build_repository(sandbox.state, names=["tiny"])  # tiny only: no debian-12
    # A host where libvirt's NAT network "default" is not active (the sandbox runs it on one).
    nets = {
        h: sandbox.exec(h, ["virsh", "net-list", "--name"]).stdout.split() for h in sandbox.up_hosts
    }
    host = next((h for h, active in nets.items() if "default" not in active), sandbox.up_hosts[0])
    active = nets[host]
    bridges = sandbox.exec(
        host, ["sh", "-c", "cd /sys/class/net && for b in */bridge; do echo ${b%/bridge}; done"]
    ).stdout.split()
    bridges = [b for b in bridges if b != "*"]
    network = "default" if "default" not in active else "mclu-absent"
    inventory = sandbox.variant(tmp_path / "hosts.toml", network=f"network:{network}")
    made = sb.Guests(sandbox, ssh_key, cache_dir)
    name = made.name()
    before = [f for f in made.files(host) if f != ".mclu-locks"]
    try:
        done = made.build("tiny", name, "--on", host, inventory=inventory)
        assert done.returncode == 1, done.stderr
        has, bridged = ", ".join(sorted(active)) or "none", ", ".join(sorted(bridges)) or "none"
        assert done.stderr == (
            f"mclu: error: {host}: no libvirt network '{network}' active (has: {has}; bridges: "
            f"{bridged}): set network in hosts.toml or the template\n"
        )
        assert sb.leftovers(sandbox, name) == []
        # Only the lock directory every build makes (its lock is released): no base sent.
        assert [f for f in made.files(host) if f != ".mclu-locks"] == before
    finally:
        made.cleanup()


def test_a_file_with_the_new_disks_name_is_one_line_and_nothing_made(
    sandbox: sb.Sandbox, ssh_key: Path, cache_dir: Path
) -> None:
    """Issue 12: the storage scan lists the image directory, so `ln: ... File exists` at
    `create disk` (after the guest was defined) becomes a refusal before anything is made."""
    sandbox_images.build_repository(sandbox.state, names=["tiny"])  # tiny only: no debian-12
    host = sandbox.up_hosts[-1]
    made = sb.Guests(sandbox, ssh_key, cache_dir)
    name = made.name()
    disk = f"{sb.IMAGES}/{name}.qcow2"
    sandbox.exec(host, ["sh", "-c", 'echo not a disk > "$1"', "sh", disk])
    try:
        done = made.build("tiny", f"{host}:{name}")
        assert done.returncode == 1, done.stderr
        assert (
            done.stderr == f"mclu: error: {host}: a file already has the new disk's name: {disk}\n"
        )
        assert made.state(host, name) == "undefined"
        assert sandbox.exec(host, ["cat", disk]).stdout == "not a disk\n"
    finally:
        made.cleanup()
