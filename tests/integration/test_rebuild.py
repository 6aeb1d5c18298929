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
from tests.integration.test_build import console_shows

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(1800)]

IMAGES = "/var/lib/libvirt/images"


class Guests:
    """Guests this module builds, removed at the end whatever happened."""

    def __init__(self, sandbox: sb.Sandbox, key: Path, cache: Path, templates: Path) -> None:
        self.sandbox = sandbox
        self.key = key
        self.env = {"MCLU_CACHE": str(cache)}
        self.templates = templates
        self.made: list[tuple[str, str]] = []  # (host, name)

    def build(self, host: str, template: str = "tiny") -> str:
        name = f"rb{uuid.uuid4().hex[:8]}"
        self.made.append((host, name))
        done = sb.mclu(
            "build",
            template,
            name,
            "--on",
            host,
            "--ssh-key",
            str(self.key),
            "--templates",
            str(self.templates),
            inventory=self.sandbox.inventory,
            env=self.env,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr
        console_shows(self.sandbox, host, name, f"{name} login:")
        return name

    def rebuild(
        self, *args: str, inventory: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return sb.mclu(
            "rebuild",
            *args,
            "--ssh-key",
            str(self.key),
            "--templates",
            str(self.templates),
            inventory=inventory or self.sandbox.inventory,
            env=self.env,
            timeout=900,
        )

    def rebuild_argv(self, *args: str) -> list[str]:
        return [
            str(sb.BIN / "mclu"),
            "-c",
            str(self.sandbox.inventory),
            "rebuild",
            *args,
            "--ssh-key",
            str(self.key),
            "--templates",
            str(self.templates),
        ]

    def virsh(self, host: str, *args: str) -> str:
        return self.sandbox.exec(host, ["virsh", *args], check=False).stdout.strip()

    def identity(self, host: str, name: str) -> dict[str, Any]:
        """What must survive a rebuild, and what must change."""
        xml = self.virsh(host, "dumpxml", name)
        meta = re.search(r"<mclu:guest [^>]*>", xml)
        stat = self.sandbox.exec(
            host, ["stat", "-c", "%i", f"{IMAGES}/{name}.qcow2"], check=False
        ).stdout.strip()
        return {
            "uuid": self.virsh(host, "domuuid", name),
            "mac": re.findall(r"<mac address='([^']+)'", xml),
            "state": self.virsh(host, "domstate", name),
            "meta": dict(re.findall(r'(\w+)="([^"]*)"', meta.group(0))) if meta else None,
            "inode": stat,
        }

    def leftovers(self, host: str) -> list[str]:
        """`.mclu-*` files of a rebuild in the image directory (the lock directory aside)."""
        files = self.sandbox.exec(host, ["ls", "-a", IMAGES]).stdout.split()
        return [f for f in files if ".mclu-" in f and f != ".mclu-locks"]

    def cleanup(self) -> None:
        for host, name in self.made:
            self.sandbox.remove_guest(host, name)


@pytest.fixture(scope="module")
def guests(
    sandbox: sb.Sandbox, tmp_path_factory: pytest.TempPathFactory, ssh_key: Path, cache_dir: Path
) -> Iterator[Guests]:
    sandbox_images.build_repository(sandbox.state, names=["tiny"])
    templates = tmp_path_factory.mktemp("templates")
    (templates / "tiny.toml").write_text('base = "tiny"\nmemory = "128 MiB"\n')
    made = Guests(sandbox, ssh_key, cache_dir, templates)
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
    sandbox: sb.Sandbox, guests: Guests, tmp_path: Path
) -> None:
    host = sandbox.up_hosts[0]
    name = guests.build(host)
    before = guests.identity(host, name)
    old = published_revision(sandbox)
    assert before["meta"]["revision"] == str(old) and before["state"] == "running"
    time.sleep(1.1)  # the build time has a resolution of seconds
    done = guests.rebuild(name, inventory=newer_revision(sandbox, tmp_path))
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        rf"{name} on {host}: rebuilt from tiny r{old + 1} \(was r{old}\), ready in [\d.]+ s "
        r"by console:login:\n",
        done.stdout,
    )
    after = guests.identity(host, name)
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
    assert guests.leftovers(host) == []
    console_shows(sandbox, host, name, f"{name} login:")  # the new disk boots, named as before
    backing = json.loads(
        sandbox.exec(
            host, ["qemu-img", "info", "--output=json", "-U", f"{IMAGES}/{name}.qcow2"]
        ).stdout
    )
    assert backing["backing-filename"] == f"{IMAGES}/mclu-templates/tiny.x86_64.r{old + 1}.raw"
    cached = sandbox.exec(host, ["ls", f"{IMAGES}/mclu-templates"]).stdout.split()
    assert f"tiny.x86_64.r{old}.raw" in cached  # the old base stays cached (prune decides)
    code, doc = sb.mclu_json("info", name, inventory=sandbox.inventory)
    assert code == 0 and doc["guest"]["host"] == host


def test_a_failed_new_build_leaves_the_old_guest_unchanged_and_running(
    sandbox: sb.Sandbox, guests: Guests, tmp_path: Path
) -> None:
    host = sandbox.up_hosts[1]
    (guests.templates / "flaky.toml").write_text('base = "tiny"\nmemory = "128 MiB"\n')
    name = guests.build(host, "flaky")
    before = guests.identity(host, name)
    # The template changed since: its customisation now fails, so the new disk cannot be made.
    (guests.templates / "flaky.toml").write_text(
        'base = "tiny"\nmemory = "128 MiB"\n[customize]\nrun = ["exit 3"]\n'
    )
    done = guests.rebuild(name, "--quiet")
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"mclu: error: rebuild of {name} on {host} failed at 'personalise': ")
    assert line.endswith(f"; {name} is unchanged and running")
    assert guests.identity(host, name) == before
    assert guests.leftovers(host) == []
    nbd = sandbox.exec(
        host, ["sh", "-c", "ps -eo args | grep qemu-nbd | grep -v grep"], check=False
    ).stdout
    assert nbd == ""


def test_a_second_run_fails_fast_naming_the_first(sandbox: sb.Sandbox, guests: Guests) -> None:
    host = sandbox.up_hosts[0]
    name = guests.build(host)
    argv = guests.rebuild_argv(name, "--json")
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
        started = time.monotonic()
        second = guests.rebuild(name, "--quiet")
        seconds = time.monotonic() - started
        out, err = first.communicate(timeout=900)
    assert second.returncode == 75, second.stderr
    assert second.stdout == ""
    (message,) = second.stderr.splitlines()
    assert message.startswith(f"mclu: error: {host}: guest '{name}' is locked by ")
    assert f"pid {first.pid} (mclu rebuild, since " in message
    assert seconds < 30  # fails fast: it did not wait for the first run
    assert first.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["rebuilt"][0]["name"] == name
    assert guests.virsh(host, "domstate", name) == "running"
    assert guests.leftovers(host) == []


def test_all_skips_a_pet_and_says_so(sandbox: sb.Sandbox, guests: Guests) -> None:
    host = sandbox.up_hosts[2]
    pet = f"pet{uuid.uuid4().hex[:6]}"
    guests.made.append((host, pet))
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


def test_if_older_than_skips_guests_built_since(sandbox: sb.Sandbox, guests: Guests) -> None:
    host = sandbox.up_hosts[0]
    young = [name for h, name in guests.made if h == host]
    if not young:
        young = [guests.build(host)]
    done = guests.rebuild("--all", "--host", host, "--if-older-than", "1d", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout.splitlines()[-1])
    assert doc["rebuilt"] == [] and doc["failed"] == []
    skipped = {s["name"]: s["reason"] for s in doc["skipped"]}
    assert all("not older than 1 d" in skipped[name] for name in young)
    quiet = guests.rebuild("--all", "--host", host, "--if-older-than", "1d", "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
