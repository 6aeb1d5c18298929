"""`mclu templates import` with the real libguestfs appliance (one launch per import, 10-45 s
under TCG): an OS root carrying cloud-init is taken and cloud-init reported; an ext4 data disk
(a filesystem, no OS root) is refused after the appliance looked; an import stopped while the
appliance runs leaves no process and no socket directory behind.

Needs root, Debian's python3-guestfs, qemu-img and mkfs.ext4; not the sandbox's hosts (marked
sandbox to run with the slow tests).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mclu import errors
from mclu.images import import_inspect, importing
from tests.unit.test_image_import import NO_OS, PART_AT, PART_SIZE, mbr, mkfs_ext4, raw_disk

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(900)]


@pytest.fixture(autouse=True)
def _libguestfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """TCG for the appliance: this machine's KVM hangs Linux guests (platform-facts.md)."""
    if os.geteuid() != 0:
        pytest.skip("the libguestfs appliance is run as root here")
    if importlib.util.find_spec("guestfs") is None:
        pytest.skip("python3-guestfs is not importable in this environment")
    if shutil.which("qemu-img") is None or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs qemu-img and mkfs.ext4")
    monkeypatch.setenv("LIBGUESTFS_BACKEND", "direct")
    monkeypatch.setenv("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The disks the real appliance was launched for, one entry a launch."""
    real = import_inspect.inspect
    seen: list[Path] = []

    def counted(
        source: str, disk: Path, tmpdir: Path, tick: Callable[[], None]
    ) -> import_inspect.Inspection:
        seen.append(disk)
        return real(source, disk, tmpdir, tick)

    monkeypatch.setattr(import_inspect, "inspect", counted)
    return seen


def do_import(tmp_path: Path, source: Path, progress: importing.Progress) -> importing.Imported:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    request = importing.Request(source=str(source), name="mine")
    return importing.import_image(request, tmp_path / "repo", work, progress)


def test_an_os_root_with_cloud_init_is_taken_and_cloud_init_reported(
    tmp_path: Path, launches: list[Path]
) -> None:
    raw = raw_disk(tmp_path / "disk.raw", cloud_init=True)
    source = tmp_path / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, source],
        check=True,
        capture_output=True,
    )
    done = do_import(tmp_path, source, lambda *a: None)
    assert (done.root, done.os_name) == ("/dev/sda1", "Debian GNU/Linux 12 (bookworm)")
    assert done.cloud_init == ("/usr/bin/cloud-init", "/etc/cloud/cloud.cfg")
    assert launches == [tmp_path / "work" / "base.raw"]  # the converted disk, once


def test_an_ext4_data_disk_is_refused_after_the_appliance_looked(
    tmp_path: Path, launches: list[Path]
) -> None:
    disk = mbr(tmp_path / "data.raw", partitions=((PART_AT, PART_SIZE, 0x83),))
    mkfs_ext4(disk, None)
    with pytest.raises(errors.ImageRefused) as refused:
        do_import(tmp_path, disk, lambda *a: None)
    assert str(refused.value) == (
        f"{disk}: not imported: {NO_OS} (found: one ext4 filesystem, no root)"
    )
    assert launches == [disk]
    assert [p.name for p in (tmp_path / "repo").glob("*")] == []


def processes_naming(text: str) -> dict[str, str]:
    """pid: command line (NULs as spaces) of every process whose command line holds text."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found[pid] = cmdline.replace("\0", " ")
    return found


def appliance_sockdirs(work: str) -> set[Path]:
    """The socket directories of this import's appliance: libguestfs, run as root, makes one
    in /tmp whatever TMPDIR and XDG_RUNTIME_DIR say (guestfs_get_sockdir), and its qemu,
    whose command line names the import's work directory (its overlay is there), names it:
    `-chardev socket,path=/tmp/libguestfsXXXXXX/guestfsd.sock,...`."""
    return {
        Path(m)
        for cmdline in processes_naming(work).values()
        for m in re.findall(r"path=(/tmp/libguestfs[^/,\s]+)/guestfsd\.sock", cmdline)
    }


def test_stopped_while_the_appliance_runs_leaves_nothing(tmp_path: Path) -> None:
    """Stopped once the appliance's qemu runs: neither the child nor the qemu is left, nor
    the socket directory the qemu was given. Only this import's directory is looked at:
    other builds on the machine (the sandbox suite's other stream) make and remove their
    own /tmp/libguestfs* meanwhile."""
    work = str(tmp_path / "work")
    sockdirs: set[Path] = set()
    started: list[float] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "inspecting":
            started.append(time.monotonic())
            sockdirs.update(appliance_sockdirs(work))
            if sockdirs and started[-1] - started[0] > 5:  # the appliance is booting by then
                raise importing.Stopped

    with pytest.raises(importing.Stopped):
        do_import(tmp_path, raw_disk(tmp_path / "disk.raw"), progress)
    assert len(sockdirs) == 1, sockdirs  # one appliance, one socket directory
    # Neither the child nor the appliance's qemu. The import SIGKILLs their process group
    # and waits for the child only: the qemu, killed, may take a moment to exit (its memory
    # released), and libguestfs's recovery process polls every 2 s before it ends. Killed
    # processes cannot stay: a bounded wait for them to go.
    deadline = time.monotonic() + 30
    while processes_naming(work) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_naming(work) == {}
    assert [d for d in sockdirs if d.exists()] == []
