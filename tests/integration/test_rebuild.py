"""`mclu rebuild` on the sandbox: real guests rebuilt in place, a rebuild that fails, two runs
that overlap, and a pet that `--all` leaves alone.

What is checked is what a user (and cron) would: the exit status and its lines, the guest's
identity afterwards (name, host, UUID, MAC), its metadata, that the new guest boots (its
console log, which libvirt starts afresh at each start, shows its login prompt), its disk
file (a new inode: a fresh disk), and that no `.mclu-*` file is left in the image directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mclu.sandbox import images as sandbox_images
from mclu.sandbox.images import index as sandbox_index
from tests.integration import sandbox as sb

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(1800)]

IMAGES = "/var/lib/libvirt/images"


def identity(guests: sb.Guests, host: str, name: str) -> dict[str, Any]:
    """What must survive a rebuild, and what must change."""
    xml = guests.virsh(host, "dumpxml", name)
    meta = re.search(r"<mclu:guest [^>]*>", xml)
    stat = guests.sandbox.exec(
        host, ["stat", "-c", "%i", f"{IMAGES}/{name}.qcow2"], check=False
    ).stdout.strip()
    return {
        "uuid": guests.virsh(host, "domuuid", name),
        "mac": re.findall(r"<mac address='([^']+)'", xml),
        "state": guests.virsh(host, "domstate", name),
        "meta": dict(re.findall(r'(\w+)="([^"]*)"', meta.group(0))) if meta else None,
        "inode": stat,
    }


def rebuild_files(guests: sb.Guests, host: str) -> list[str]:
    """`.mclu-*` files of a rebuild in the image directory (the lock directory aside)."""
    return [f for f in guests.files(host) if ".mclu-" in f and f != ".mclu-locks"]


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's templates directory: tiny in 128 MiB (a test adds its own)."""
    directory = tmp_path_factory.mktemp("templates")
    (directory / "tiny.toml").write_text('base = "tiny"\nmemory = "128 MiB"\n')
    return directory


@pytest.fixture(scope="module")
def guests(
    sandbox: sb.Sandbox, templates: Path, ssh_key: Path, cache_dir: Path
) -> Iterator[sb.Guests]:
    sandbox_images.build_repository(sandbox.state, names=["tiny"])
    made = sb.Guests(sandbox, ssh_key, cache_dir, prefix="rb", templates=templates)
    try:
        yield made
    finally:
        made.cleanup()


def published_revision(sandbox: sb.Sandbox, name: str = "tiny") -> int:
    """The revision of `name` in the sandbox's repository: a fresh sandbox has 1, one whose
    template was rebuilt since (its inputs changed) has more."""
    parsed = sandbox_index.parse_index((sandbox.state / "repo" / "index").read_text())
    return sandbox_index.entry_from_fields(name, parsed[name]).revision


def newer_revision(sandbox: sb.Sandbox, tmp_path: Path) -> Path:
    """An inventory whose template sources add the next revision of tiny (the same image) to
    the sandbox's repository: a new revision was published since the guests were built."""
    return sandbox.with_tiny_at(published_revision(sandbox) + 1, tmp_path)


def test_rebuild_keeps_the_guest_and_gives_it_a_fresh_disk_of_the_newest_revision(
    sandbox: sb.Sandbox, guests: sb.Guests, tmp_path: Path
) -> None:
    host = sandbox.up_hosts[0]
    name = guests.built(host)
    before = identity(guests, host, name)
    old = published_revision(sandbox)
    assert before["meta"]["revision"] == str(old) and before["state"] == "running"
    time.sleep(1.1)  # the build time has a resolution of seconds
    done = guests.rebuild(name, inventory=newer_revision(sandbox, tmp_path))
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        rf"{name} on {host}: rebuilt from tiny r{old + 1} \(was r{old}\), ready in [\d.]+ s "
        r"by ssh\n",
        done.stdout,
    )
    after = identity(guests, host, name)
    assert (after["uuid"], after["mac"], after["state"]) == (
        before["uuid"],
        before["mac"],
        "running",
    )
    assert after["mac"]  # the guest has a NIC, and kept its address
    assert after["inode"] != before["inode"]  # a new disk file
    assert after["meta"]["revision"] == str(old + 1) and after["meta"]["state"] == "ready"
    assert after["meta"]["template"] == "tiny"
    assert after["meta"]["built"] > before["meta"]["built"]
    assert rebuild_files(guests, host) == []
    sb.console_shows(sandbox, host, name, f"{name} login:")  # the new disk boots, named as before
    backing = json.loads(
        sandbox.exec(
            host, ["qemu-img", "info", "--output=json", "-U", f"{IMAGES}/{name}.qcow2"]
        ).stdout
    )
    # Cached bases are named by revision and the first 16 hex digits of their sha512.
    base = re.escape(f"{IMAGES}/mclu-templates/tiny.x86_64.r{old + 1}.") + r"[0-9a-f]{16}\.raw"
    assert re.fullmatch(base, backing["backing-filename"]), backing["backing-filename"]
    cached = sandbox.exec(host, ["ls", f"{IMAGES}/mclu-templates"]).stdout.split()
    old_base = re.compile(rf"tiny\.x86_64\.r{old}\.[0-9a-f]{{16}}\.raw")
    assert any(old_base.fullmatch(f) for f in cached), cached  # stays cached (prune decides)
    code, doc = sb.mclu_json("info", name, inventory=sandbox.inventory)
    assert code == 0 and doc["guest"]["host"] == host


def test_a_failed_new_build_leaves_the_old_guest_unchanged_and_running(
    sandbox: sb.Sandbox, guests: sb.Guests, templates: Path
) -> None:
    host = sandbox.up_hosts[1]
    (templates / "flaky.toml").write_text('base = "tiny"\nmemory = "128 MiB"\n')
    name = guests.built(host, "flaky")
    before = identity(guests, host, name)
    # The template changed since: its customisation now fails, so the new disk cannot be made.
    (templates / "flaky.toml").write_text(
        'base = "tiny"\nmemory = "128 MiB"\n[customize]\nrun = ["exit 3"]\n'
    )
    done = guests.rebuild(name, "--quiet")
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"mclu: error: rebuild of {name} on {host} failed at 'personalise': ")
    assert line.endswith(f"; {name} is unchanged and running")
    assert identity(guests, host, name) == before
    assert rebuild_files(guests, host) == []
    nbd = sandbox.exec(
        host, ["sh", "-c", "ps -eo args | grep qemu-nbd | grep -v grep"], check=False
    ).stdout
    assert nbd == ""


def test_a_second_run_fails_fast_naming_the_first(sandbox: sb.Sandbox, guests: sb.Guests) -> None:
    host = sandbox.up_hosts[0]
    name = guests.built(host)
    argv = guests.argv("rebuild", name, "--json")
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **sb.GUESTFS_ENV, **guests.env},
    ) as first:
        assert first.stdout is not None
        for line in first.stdout:  # the first run holds the lock once it works on the disk
            if json.loads(line).get("event") == "step":
                break
        second = guests.rebuild(name, "--quiet")
        first_still_running = first.poll() is None
        out, err = first.communicate(timeout=900)
    assert second.returncode == 75, second.stderr
    assert second.stdout == ""
    (message,) = second.stderr.splitlines()
    assert message.startswith(f"mclu: error: {host}: guest '{name}' is locked by ")
    assert f"pid {first.pid} (mclu rebuild, since " in message
    assert first_still_running  # fails fast: it did not wait for the first run to end
    assert first.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["rebuilt"][0]["name"] == name
    assert guests.virsh(host, "domstate", name) == "running"
    assert rebuild_files(guests, host) == []


def test_all_skips_a_pet_and_says_so(sandbox: sb.Sandbox, guests: sb.Guests) -> None:
    host = sandbox.up_hosts[2]
    pet = f"pet{uuid.uuid4().hex[:6]}"
    guests.adopt(pet)
    sandbox.exec(
        host,
        [
            "sh",
            "-c",
            'f=$(mktemp) && cat > "$f" && virsh -q define "$f"; r=$?; rm -f "$f"; exit $r',
        ],
        input=f"<domain type='qemu'><name>{pet}</name><memory unit='MiB'>32"
        "</memory><os><type arch='x86_64'>hvm</type></os></domain>",
    )
    done = guests.rebuild("--all", "--host", host)
    assert done.returncode == 0, done.stderr
    assert (
        f"{pet} on {host}: skipped: not built by mclu (no mclu metadata): a pet, never rebuilt\n"
    ) in done.stdout
    quiet = guests.rebuild("--all", "--host", host, "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    named = guests.rebuild(pet, "--quiet")
    assert named.returncode == 1
    assert named.stderr == (
        f"mclu: error: {host}: {pet} cannot be rebuilt: not built by mclu "
        "(no mclu metadata): a pet, never rebuilt\n"
    )
    assert guests.virsh(host, "dominfo", pet) != ""  # still there, untouched


def test_if_older_than_skips_guests_built_since(sandbox: sb.Sandbox, guests: sb.Guests) -> None:
    host = sandbox.up_hosts[0]
    young = [name for name, h in guests.hosts.items() if h == host]
    if not young:
        young = [guests.built(host)]
    done = guests.rebuild("--all", "--host", host, "--if-older-than", "1d", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout.splitlines()[-1])
    assert doc["rebuilt"] == [] and doc["failed"] == []
    skipped = {s["name"]: s["reason"] for s in doc["skipped"]}
    assert all("not older than 1 d" in skipped[name] for name in young)
    quiet = guests.rebuild("--all", "--host", host, "--if-older-than", "1d", "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
