"""Ready means ready, on the sandbox: builds and rebuilds wait until the guest has booted.

Real tiny guests under TCG: a build ends once the guest's ssh server presents the key mclu
gave it (tiny has dropbear and sits on br0), or its serial console shows its login prompt
where nothing can reach its ssh server (user networking); one whose ssh server never starts
is not ready, login prompt or not; a build whose guest never shows what its template waits
for is undone; a rebuild to a revision that does not boot (its /sbin/init removed: the kernel
panics) or that never shows what its template waits for is rolled back, the old guest
running on its old disk and record, and `--all` does not try that revision on the next
guest; a shut-off guest is booted once to check its new disk and left off; guests come back
after their host restarts.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
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
ROOT_OFFSET = 1048576  # the sandbox images' root filesystem starts at 1 MiB (disk.sh)
NEVER = "console:this line never comes"


def record(guests: sb.Guests, host: str, name: str) -> dict[str, Any]:
    """What a rolled-back rebuild must leave as it was: the disk file, the record."""
    code, doc = sb.mclu_json("info", f"{host}:{name}", inventory=guests.sandbox.inventory)
    assert code == 0, doc
    inode = guests.sandbox.exec(host, ["stat", "-c", "%i", f"{IMAGES}/{name}.qcow2"]).stdout
    guest = doc["guest"]
    return {
        "uuid": guest["uuid"],
        "state": guest["state"],
        "mclu": guest["mclu"],
        "inode": inode.strip(),
    }


def left_of(guests: sb.Guests, host: str, name: str) -> list[str]:
    """The guest's domain and files on its host, `.mclu-*` files of a rebuild included."""
    found = [f"domain {name}"] if guests.virsh(host, "domuuid", name) else []
    return found + [f for f in guests.files(host) if f.startswith(name)]


@pytest.fixture(scope="module")
def guests(
    sandbox: sb.Sandbox, tmp_path_factory: pytest.TempPathFactory, ssh_key: Path, cache_dir: Path
) -> Iterator[sb.Guests]:
    sandbox_images.build_repository(sandbox.state, names=["tiny"])
    templates = tmp_path_factory.mktemp("templates")
    (templates / "tiny.toml").write_text('base = "tiny"\nmemory = "128 MiB"\n')
    (templates / "flaky.toml").write_text('base = "tiny"\nmemory = "128 MiB"\n')
    # QEMU's user networking: no address its host can find, so no ssh rule by default.
    (templates / "tiny-user.toml").write_text(
        'base = "tiny"\nmemory = "128 MiB"\nnetwork = "user"\n'
    )
    # dropbear installed but never starting: its guests show a login prompt, no ssh server.
    (templates / "nossh.toml").write_text(
        'base = "tiny"\nmemory = "128 MiB"\nready_timeout = 30\n'
        '[customize]\nrun = ["chmod a-x /usr/sbin/dropbear"]\n'
    )
    (templates / "never.toml").write_text(
        f'base = "tiny"\nmemory = "128 MiB"\nready = "{NEVER}"\nready_timeout = 20\n'
    )
    # "aa": sorted before other guests a host may hold, so `--all` takes these first.
    made = sb.Guests(sandbox, ssh_key, cache_dir, prefix="aa", templates=templates)
    try:
        yield made
    finally:
        made.cleanup()


def published_revision(sandbox: sb.Sandbox) -> int:
    parsed = sandbox_index.parse_index((sandbox.state / "repo" / "index").read_text())
    return sandbox_index.entry_from_fields("tiny", parsed["tiny"]).revision


def broken_revision(sandbox: sb.Sandbox, revision: int, directory: Path) -> Path:
    """An inventory whose sources add `revision` of tiny to the sandbox's repository, an
    image whose /sbin/init is gone: its initramfs cannot switch to it, the kernel panics.

    Caches know a base by its template and revision only (issue 13), so the revision must be
    one no good image is ever published as: the hosts' and the controller's caches keep it.
    """
    repo = directory / "repo"
    (repo / "repos.d").mkdir(parents=True)
    source = sandbox.state / "repo"
    image, raw = repo / "tiny.xz", repo / "tiny.raw"
    subprocess.run(f"xz -dc {source / 'tiny.xz'} > {raw}", shell=True, check=True)
    subprocess.run(
        ["debugfs", "-w", "-R", "rm /sbin/init", f"{raw}?offset={ROOT_OFFSET}"],
        check=True,
        capture_output=True,
    )
    subprocess.run(f"xz -0 -T0 --block-size=16777216 -c {raw} > {image}", shell=True, check=True)
    raw.unlink()
    fields = {
        "revision": str(revision),
        "checksum[sha512]": hashlib.sha512(image.read_bytes()).hexdigest(),
        "compressed_size": str(image.stat().st_size),
    }
    section = re.search(r"\[tiny\]\n(?:[^\[].*\n)*", (source / "index").read_text())
    assert section is not None
    text = section.group(0)
    for key, value in fields.items():
        text, count = re.subn(rf"^{re.escape(key)}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
        assert count == 1, key
    (repo / "index").write_text(text)
    (repo / "repos.d" / "next.conf").write_text(f"[next]\nuri=file://{repo}/index\n")
    repos = [*sandbox.doc.get("template_repos", []), str(repo / "repos.d")]
    return sandbox.variant(directory / "hosts.toml", top={"template_repos": repos})


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("mclu: error:")]


# --- build ------------------------------------------------------------------------------------


def test_a_bridged_guest_with_an_ssh_server_is_ready_by_ssh(
    sandbox: sb.Sandbox, guests: sb.Guests
) -> None:
    host = sandbox.up_hosts[0]
    name = guests.name()
    done = guests.build("tiny", name, "--on", host)
    assert done.returncode == 0, done.stderr
    # tiny declares no rule: its disk has dropbear and it sits on br0, so mclu waits until
    # dropbear presents the host key mclu gave it.
    assert re.fullmatch(rf"{name} runs on {host} \(ready in [\d.]+ s, by ssh\)\n", done.stdout)
    kept = record(guests, host, name)
    assert kept["mclu"]["state"] == "ready" and kept["mclu"]["ready"] == "ssh"
    line = guests.virsh(host, "metadata", name, "--uri", "https://mclu.dev/xmlns/guest/1")
    assert 'ssh-server="dropbear"' in line, line


def test_a_guest_whose_ssh_server_never_starts_is_not_ready_despite_its_login_prompt(
    sandbox: sb.Sandbox, guests: sb.Guests
) -> None:
    host = sandbox.up_hosts[1]
    name = guests.name()
    done = guests.build("nossh", name, "--on", host)
    assert done.returncode == 1
    (line,) = error_lines(done.stderr)
    assert line.startswith(
        f"mclu: error: build of {name} failed at step 'ready' on {host}: "
        f"{host}: {name} did not become ready (ssh): not ready within 30 s ("
    ), line
    assert f"{name} login:" in line  # its console's last lines: the prompt was there
    assert left_of(guests, host, name) == []


def test_a_guest_without_an_address_is_ready_by_its_login_prompt(
    sandbox: sb.Sandbox, guests: sb.Guests
) -> None:
    host = sandbox.up_hosts[0]
    name = guests.name()
    done = guests.build("tiny-user", name, "--on", host)
    assert done.returncode == 0, done.stderr
    # On QEMU's user networking nothing can reach its dropbear: mclu waits for its getty.
    assert re.fullmatch(
        rf"{name} runs on {host} \(ready in [\d.]+ s, by console:login:\)\n", done.stdout
    )
    assert f"{name} login:" in sb.console_log(sandbox, host, name)  # there when mclu said ready
    kept = record(guests, host, name)
    assert kept["mclu"]["state"] == "ready" and kept["mclu"]["ready"] == "console:login:"
    code, doc = sb.mclu_json("info", name, inventory=sandbox.inventory)
    assert code == 0 and doc["guest"]["autostart"] is True


def test_a_build_that_never_becomes_ready_is_undone(sandbox: sb.Sandbox, guests: sb.Guests) -> None:
    host = sandbox.up_hosts[1]
    name = guests.name()
    done = guests.build("never", name, "--on", host)
    assert done.returncode == 1
    (line,) = error_lines(done.stderr)
    assert line.startswith(
        f"mclu: error: build of {name} failed at step 'ready' on {host}: "
        f"{host}: {name} did not become ready ({NEVER}): not ready within "
        "20 s; its console ends: "
    ), line
    assert f"{name} login:" in line  # its console's last lines, quoted
    assert left_of(guests, host, name) == []


def test_keep_failed_keeps_the_guest_for_a_look_and_cleanup_removes_it(
    sandbox: sb.Sandbox, guests: sb.Guests
) -> None:
    host = sandbox.up_hosts[1]
    name = guests.name()
    done = guests.build("never", name, "--on", host, "--keep-failed", "--ready-timeout", "5")
    assert done.returncode == 1
    (line,) = error_lines(done.stderr)
    assert line.endswith(f"kept for a look, as asked (mclu delete {name} removes it)"), line
    assert guests.virsh(host, "domstate", name) == "running"
    listed = sb.mclu("list", "--host", host, inventory=sandbox.inventory)
    row = next(r for r in listed.stdout.splitlines() if r.startswith(name))
    assert "interrupted build" in row  # "started", and no run at it: a leftover
    cleaned = sb.mclu("cleanup", "--host", host, inventory=sandbox.inventory)
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"{host}: removed guest {name}" in cleaned.stdout
    assert left_of(guests, host, name) == []


# --- rebuild ----------------------------------------------------------------------------------


def test_rebuild_to_a_revision_that_does_not_boot_is_rolled_back_and_not_tried_again(
    sandbox: sb.Sandbox, guests: sb.Guests, tmp_path: Path
) -> None:
    host = sandbox.up_hosts[2]
    first, second = sorted([guests.built(host, login=False), guests.built(host, login=False)])
    before = {n: record(guests, host, n) for n in (first, second)}
    bad = 900_000 + uuid.uuid4().int % 100_000
    broken = broken_revision(sandbox, bad, tmp_path)
    try:
        done = guests.rebuild("--all", "--host", host, "--quiet", inventory=broken)
    finally:  # the broken base out of the host's cache
        cached = f"{IMAGES}/mclu-templates/tiny.x86_64.r{bad}.*"  # the name ends in its digest
        sandbox.exec(host, ["sh", "-c", f"rm -f {cached}"])
    assert done.returncode == 1
    lines = error_lines(done.stderr)
    assert lines[0].startswith(
        f"mclu: error: rebuild of {first} on {host} failed at 'ready': tiny r{bad} did "
        "not become ready (ssh): its kernel panicked (Kernel panic - not syncing: "
        "Attempted to kill init!"
    ), lines
    assert "its console ends: " in lines[0]
    assert lines[0].endswith(f"; the old disk is back and {first} runs again"), lines[0]
    assert (
        f"mclu: error: {host}: {second} not rebuilt: tiny r{bad} did not become ready on {first}"
    ) in lines
    for name in (first, second):
        assert record(guests, host, name) == before[name]  # old disk, old record, running
        assert left_of(guests, host, name) == [f"domain {name}", f"{name}.qcow2"]
    # The old disk boots again.
    sb.console_shows(sandbox, host, first, f"{first} login:", seconds=180)


def test_rebuild_whose_template_rule_never_matches_is_rolled_back(
    sandbox: sb.Sandbox, guests: sb.Guests, tmp_path: Path
) -> None:
    host = sandbox.up_hosts[0]
    name = guests.built(host, "flaky", login=False)
    before = record(guests, host, name)
    # The template now waits for a line its guests never print.
    changed = tmp_path / "templates"
    changed.mkdir()
    (changed / "flaky.toml").write_text(
        f'base = "tiny"\nmemory = "128 MiB"\nready = "{NEVER}"\nready_timeout = 15\n'
    )
    done = guests.rebuild(name, templates=changed)
    assert done.returncode == 1
    (line,) = error_lines(done.stderr)
    assert (
        f"failed at 'ready': flaky r{published_revision(sandbox)} did not become ready "
        f"({NEVER}): not ready within 15 s; its console ends: " in line
    ), line
    assert line.endswith(f"the old disk is back and {name} runs again"), line
    assert record(guests, host, name) == before


def test_a_shut_off_guest_is_booted_once_to_check_it_and_left_off(
    sandbox: sb.Sandbox, guests: sb.Guests, tmp_path: Path
) -> None:
    host = sandbox.up_hosts[1]
    name = guests.built(host, login=False)
    guests.virsh(host, "destroy", name)
    old = published_revision(sandbox)
    newer = sandbox.with_tiny_at(old + 1, tmp_path)
    done = guests.rebuild(name, inventory=newer)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        rf"{name} on {host}: rebuilt from tiny r{old + 1} \(was r{old}\) in "
        r"[\d.]+ s; booted once, ready by ssh, shut off again\n",
        done.stdout,
    )
    after = record(guests, host, name)
    assert after["state"] == "shut off" and after["mclu"]["revision"] == str(old + 1)
    assert f"{name} login:" in sb.console_log(sandbox, host, name)  # the check's boot


# --- after the host restarts ------------------------------------------------------------------


def test_guests_come_back_when_their_host_restarts_unless_built_with_no_autostart(
    sandbox: sb.Sandbox, guests: sb.Guests
) -> None:
    host = sandbox.up_hosts[2]
    name = guests.built(host, login=False)
    stays_off = guests.built(host, "tiny", "--no-autostart", login=False)
    code, doc = sb.mclu_json("info", stays_off, inventory=sandbox.inventory)
    assert code == 0 and doc["guest"]["autostart"] is False
    stopped = sb.sandbox("stop", host)
    assert stopped.returncode == 0, stopped.stderr
    started = sb.sandbox("start", host)
    assert started.returncode == 0, started.stderr
    # libvirtd started it, and it booted.
    sb.console_shows(sandbox, host, name, f"{name} login:", seconds=180)
    assert guests.virsh(host, "domstate", name) == "running"
    assert guests.virsh(host, "domstate", stays_off) == "shut off"
    code, doc = sb.mclu_json("info", name, inventory=sandbox.inventory)
    assert code == 0 and doc["guest"]["autostart"] is True
