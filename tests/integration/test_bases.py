"""Bases known by their content, on the sandbox (issue 13): a repository that publishes a
revision of tiny again with other bytes gets its new content fetched and sent anew, under a
name of its own, on the controller and on the host; a guest built after boots the new
content, the one built before keeps the old base, and `templates prune` keeps the old base on
the host while that guest's overlay uses it (and drops it from the controller's cache, which
no repository lists it for any more)."""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mclu.sandbox import images as sandbox_images
from tests.integration import sandbox as sb

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(1200)]

MARK_AT = 512 << 10  # in the gap between the MBR and the first partition (at 1 MiB): unused
CACHE = f"{sb.IMAGES}/mclu-templates"


@pytest.fixture
def tiny_builds(sandbox: sb.Sandbox, cache_dir: Path, ssh_key: Path) -> Iterator[sb.Guests]:
    """Guests the test builds, removed after it; the sandbox repository need only hold tiny
    (its debian-12 is not built for this test)."""
    sandbox_images.build_repository(sandbox.state, names=["tiny"])
    made = sb.Guests(sandbox, ssh_key, cache_dir)
    try:
        yield made
    finally:
        made.cleanup()


def publish(sandbox: sb.Sandbox, directory: Path, revision: int, mark: str) -> str:
    """The sandbox's tiny, `mark` written at MARK_AT, as revision `revision` of tiny in a
    repository of its own in `directory` (written again on each call); returns the sha512
    the index gives."""
    raw = bytearray(lzma.decompress((sandbox.state / "repo" / "tiny.xz").read_bytes()))
    raw[MARK_AT : MARK_AT + len(mark)] = mark.encode()
    image = directory / "tiny.raw"
    image.write_bytes(raw)
    subprocess.run(["xz", "-f", "-1", "-T0", "--block-size=16777216", str(image)], check=True)
    xz = directory / "tiny.raw.xz"
    sha512 = hashlib.sha512(xz.read_bytes()).hexdigest()
    index = (sandbox.state / "repo" / "index").read_text()
    [entry] = re.findall(r"\[tiny\]\n(?:[^\[].*\n)*", index)
    changed = re.sub(r"(?m)^revision=\d+$", f"revision={revision}", entry)
    changed = re.sub(r"(?m)^file=.*$", "file=tiny.raw.xz", changed)
    changed = re.sub(r"(?m)^checksum\[sha512\]=.*$", f"checksum[sha512]={sha512}", changed)
    changed = re.sub(r"(?m)^compressed_size=.*$", f"compressed_size={xz.stat().st_size}", changed)
    (directory / "index").write_text(changed)
    return sha512


def mark_seen_by_guest(sandbox: sb.Sandbox, host: str, name: str) -> str:
    """The 16 bytes at MARK_AT of the guest's disk, as the guest itself reads them."""
    return sb.console_command(
        sandbox, host, name, f"dd if=/dev/vda bs=16 skip={MARK_AT // 16} count=1 2>/dev/null"
    )


def test_a_revision_published_again_with_other_content_is_fetched_anew(
    sandbox: sb.Sandbox, tiny_builds: sb.Guests, tmp_path: Path
) -> None:
    builds, host = tiny_builds, sandbox.up_hosts[0]
    repo = tmp_path / "repo"
    (repo / "repos.d").mkdir(parents=True)
    (repo / "repos.d" / "own.conf").write_text(f"[own]\nuri=file://{repo}/index\n")
    repos = [*sandbox.doc.get("template_repos", []), str(repo / "repos.d")]
    inventory = sandbox.variant(tmp_path / "hosts.toml", top={"template_repos": repos})
    revision = 20_000 + uuid.uuid4().int % 10_000  # newer than the sandbox's: tiny builds it
    first_mark, second_mark = (f"mclu-{c}-{uuid.uuid4().hex[:8]}" for c in "AB")
    first = f"tiny.x86_64.r{revision}.{publish(sandbox, repo, revision, first_mark)[:16]}.raw"
    try:
        old = builds.name()
        done = builds.build("tiny", old, "--on", host, inventory=inventory)
        assert done.returncode == 0, done.stderr

        second_sha = publish(sandbox, repo, revision, second_mark)  # same revision, other bytes
        second = f"tiny.x86_64.r{revision}.{second_sha[:16]}.raw"
        plan = builds.build("tiny", "x", "--on", host, "--dry-run", inventory=inventory)
        assert f"download tiny r{revision} into the controller's cache:" in plan.stdout
        assert f"send tiny r{revision} to {host}:" in plan.stdout
        new = builds.name()
        done = builds.build("tiny", new, "--on", host, inventory=inventory)
        assert done.returncode == 0, done.stderr

        cached = sandbox.exec(host, ["ls", CACHE]).stdout.split()
        assert {first, second} <= set(cached)
        assert {first, second} <= {p.name for p in Path(builds.env["MCLU_CACHE"]).iterdir()}
        # Each guest's disk is an overlay on its own base, and the guest reads that content.
        for name, base, mark in ((old, first, first_mark), (new, second, second_mark)):
            info = sandbox.exec(
                host, ["qemu-img", "info", "-U", "--output=json", f"{sb.IMAGES}/{name}.qcow2"]
            )
            assert json.loads(info.stdout)["backing-filename"] == f"{CACHE}/{base}"
            assert mark in mark_seen_by_guest(sandbox, host, name)

        prune = ["templates", "prune", "--host", host, "--min-age", "0", "--dry-run", "--json"]
        done = builds.mclu(*prune, inventory=inventory)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert {first, second} <= set(doc["hosts"][0]["in_use"])  # both overlays use theirs
        assert first in doc["controller"]["removed"]  # no repository lists it now
        assert second in doc["controller"]["listed"]
    finally:
        builds.cleanup()
        for host_name in sandbox.up_hosts:
            sandbox.exec(host_name, ["sh", "-c", f'rm -f -- "$0"/tiny.x86_64.r{revision}.*', CACHE])
