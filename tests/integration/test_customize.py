"""Personalising disks for real: qcow2 overlays over the sandbox templates, served by a local
qemu-nbd on unix sockets (as the build serves them over ssh), several in one appliance.

Needs root, Debian's python3-guestfs, qemu-img, qemu-nbd and the sandbox template repository
(`python -m mclu.sandbox.images`). Each libguestfs launch costs 15-45 s under TCG.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mclu import errors, model
from mclu.images import customize, guest_text
from mclu.sandbox.images import repository

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(900)]

PASSWORD = "Xyzzy-sandbox-S3cret-93417"  # must never appear in logs or errors
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGuestAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA a@ctl"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGuestBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB b@ctl"
MiB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def _libguestfs_env() -> Iterator[None]:
    """TCG for the appliance: this machine's KVM hangs Linux guests (platform-facts.md)."""
    if os.geteuid() != 0:
        pytest.skip("personalising disks needs root (qemu-nbd sockets, libguestfs appliance)")
    if importlib.util.find_spec("guestfs") is None:
        pytest.skip("python3-guestfs is not importable in this environment")
    missing = [
        tool
        for tool in ("qemu-img", "qemu-nbd", "ssh-keygen", "openssl", "xz")
        if shutil.which(tool) is None
    ]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIBGUESTFS_BACKEND", "direct")
        patch.setenv("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        yield


def _base(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """The sandbox repository's template `name`, built if needed (cached), unpacked raw."""
    repo = repository.build_repository(repository.default_state_dir(), names=[name])
    packed = repo / f"{name}.xz"
    raw = tmp_path_factory.mktemp(name) / f"{name}.raw"
    with raw.open("wb") as out:
        subprocess.run(["xz", "-dc", str(packed)], stdout=out, check=True)
    return raw


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _base(tmp_path_factory, "tiny")


@pytest.fixture(scope="module")
def debian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _base(tmp_path_factory, "debian-12")


def overlay(base: Path, path: Path, size: int | None = None) -> Path:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(path)]
    subprocess.run(argv + ([str(size)] if size else []), check=True)
    return path


@contextlib.contextmanager
def nbd_exports(overlays: list[Path]) -> Iterator[list[str]]:
    """A local qemu-nbd per overlay; yields the unix sockets; stops each by its PID."""
    servers: list[subprocess.Popen[bytes]] = []
    sockets = [str(o.with_suffix(".sock")) for o in overlays]
    try:
        for image, sock in zip(overlays, sockets, strict=True):
            servers.append(
                subprocess.Popen(
                    ["qemu-nbd", "--persistent", f"--socket={sock}", "-f", "qcow2", str(image)]
                )
            )
        deadline = time.monotonic() + 20
        while not all(Path(s).exists() for s in sockets):
            assert time.monotonic() < deadline, "qemu-nbd did not create its socket"
            time.sleep(0.05)
        yield sockets
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)


def child_pids() -> set[int]:
    """PIDs whose parent is this test process (the direct backend's qemu is one)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid():
                children.add(int(stat.parent.name))
    return children


@dataclass
class Disk:
    """What a personalised disk holds, read back read-only."""

    files: dict[str, str]
    modes: dict[str, int]
    links: dict[str, str]
    root_size: int  # bytes of the / filesystem


def read_back(
    images: list[Path], files: list[str], modes: list[str], links: list[str]
) -> list[Disk]:
    """Read files, modes and symlinks of each image's OS, in one read-only launch."""
    import guestfs

    g: Any = guestfs.GuestFS(python_return_dict=True)
    try:
        for image in images:
            fmt = "qcow2" if image.suffix == ".qcow2" else "raw"
            g.add_drive_opts(str(image), format=fmt, readonly=True)
        g.launch()
        roots = sorted(g.inspect_os())
        assert len(roots) == len(images)
        return [_read_disk(g, root, files, modes, links) for root in roots]
    finally:
        g.shutdown()
        g.close()


def _read_disk(g: Any, root: str, files: list[str], modes: list[str], links: list[str]) -> Disk:
    g.mount_ro(root, "/")
    try:
        statvfs = g.statvfs("/")
        return Disk(
            files={f: g.read_file(f).decode() for f in files if g.is_file(f)},
            modes={m: int(g.statns(m)["st_mode"]) & 0o7777 for m in modes if g.exists(m)},
            links={k: str(g.readlink(k)) for k in links if g.is_symlink(k)},
            root_size=int(statvfs["blocks"]) * int(statvfs["bsize"]),
        )
    finally:
        g.umount_all()


def inspections(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """{guest: "light" | "fallback"} from the inspector's log records."""
    found = {}
    for record in caplog.records:
        if record.name == "mclu.images.guestfs_inspect":
            guest, _, message = record.getMessage().partition(": ")
            if message.startswith("light inspection of "):
                found[guest] = "light"
            elif message.startswith("light inspection cannot decide"):
                found[guest] = "fallback"
    return found


def shadow_root(shadow: str) -> str:
    return next(line for line in shadow.splitlines() if line.startswith("root:")).split(":")[1]


@pytest.fixture
def password_file(tmp_path: Path) -> str:
    path = tmp_path / "root-password"
    path.write_text(PASSWORD + "\nsecond line is ignored\n")
    return str(path)


def test_two_tiny_guests_in_one_launch(
    tiny: Path,
    tmp_path: Path,
    password_file: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    images = [overlay(tiny, tmp_path / "a.qcow2", 512 * MiB), overlay(tiny, tmp_path / "b.qcow2")]
    extra = model.Customization(
        files=(("/etc/mclu/motd", "built by mclu\n"),), run=("echo ran > /etc/mclu/ran",)
    )
    people = [
        customize.Personalization(
            "alpha.example.org", (KEY_A, KEY_B), password_file, "/dev/sda1", extra
        ),
        customize.Personalization("beta", (KEY_B,), None, "/dev/sda1"),
    ]
    said: list[str] = []
    with nbd_exports(images) as sockets:
        customize.personalize(list(zip(sockets, people, strict=True)), progress=said.append)
    assert any("2 disk(s)" in line for line in said)
    assert inspections(caplog) == {"alpha.example.org": "light", "beta": "light"}

    wanted = [
        "/etc/hostname",
        "/etc/hosts",
        "/root/.ssh/authorized_keys",
        "/etc/machine-id",
        "/etc/shadow",
        "/etc/mclu/motd",
        "/etc/mclu/ran",
    ]
    a, b = read_back(
        images, wanted, ["/root/.ssh", "/root/.ssh/authorized_keys", "/etc/mclu/motd"], []
    )
    assert a.files["/etc/hostname"] == "alpha.example.org\n"
    assert "127.0.1.1\talpha.example.org alpha\n" in a.files["/etc/hosts"]
    assert b.files["/etc/hostname"] == "beta\n"
    assert a.files["/root/.ssh/authorized_keys"] == f"{KEY_A}\n{KEY_B}\n"
    assert b.files["/root/.ssh/authorized_keys"] == f"{KEY_B}\n"
    assert a.modes["/root/.ssh"] == 0o700 and a.modes["/root/.ssh/authorized_keys"] == 0o600
    ids = {d.files["/etc/machine-id"].strip() for d in (a, b)}
    assert len(ids) == 2 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert shadow_root(a.files["/etc/shadow"]).startswith("$6$")
    assert not shadow_root(b.files["/etc/shadow"]).startswith("$6$")
    assert a.files["/etc/mclu/motd"] == "built by mclu\n" and a.modes["/etc/mclu/motd"] == 0o644
    assert a.files["/etc/mclu/ran"] == "ran\n"
    assert a.root_size > 400 * MiB  # grown from 128 MiB to the 512 MiB disk
    assert b.root_size < 128 * MiB  # same size as the base: nothing to grow

    out, err = capfd.readouterr()
    assert PASSWORD not in caplog.text + out + err + "\n".join(said)


def test_failing_step_names_it_and_closes_the_appliance(
    tiny: Path,
    tmp_path: Path,
    password_file: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    image = overlay(tiny, tmp_path / "bad.qcow2")
    failing = model.Customization(run=("true", "echo going wrong >&2; exit 1"))
    before = child_pids()
    with nbd_exports([image]) as sockets, pytest.raises(errors.PersonalizationFailed) as caught:
        customize.personalize(
            [
                (
                    sockets[0],
                    customize.Personalization(
                        "gamma", root_password_file=password_file, customization=failing
                    ),
                )
            ]
        )
    assert caught.value.guest == "gamma"
    assert caught.value.step.startswith("run command 2")
    assert "exit 1" in caught.value.step and "going wrong" in str(caught.value)
    assert child_pids() <= before  # no qemu appliance (or its recovery process) left
    out, err = capfd.readouterr()
    assert PASSWORD not in caplog.text + out + err + str(caught.value) + repr(caught.value)


class _KillAfterStep(logging.Handler):
    """Kills the appliance through `watchdog` a moment after the step `step` ended (the
    step log's DEBUG line), so the next step is the one under way when it dies."""

    def __init__(self, watchdog: customize.Watchdog, step: str) -> None:
        super().__init__(logging.DEBUG)
        self.watchdog, self.step = watchdog, step

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(f"stuck: {self.step} ("):
            threading.Timer(2, self.watchdog.kill, ("killed by the test",)).start()


def test_appliance_stuck_in_a_step_is_killed_and_the_step_named(
    tiny: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=customize.__name__)
    image = overlay(tiny, tmp_path / "stuck.qcow2")
    watchdog = customize.Watchdog(None)
    killer = _KillAfterStep(watchdog, "run command 1 (true)")
    logging.getLogger(customize.__name__).addHandler(killer)
    before = child_pids()
    try:
        with nbd_exports([image]) as sockets, pytest.raises(errors.PersonalizationFailed) as caught:
            customize.personalize(
                [
                    (
                        sockets[0],
                        customize.Personalization(
                            "stuck", customization=model.Customization(run=("true", "sleep 600"))
                        ),
                    )
                ],
                watchdog=watchdog,
            )
    finally:
        logging.getLogger(customize.__name__).removeHandler(killer)
    assert caught.value.step == "run command 2 (sleep 600)"
    assert str(caught.value) == (
        "stuck: personalising the disk failed at run command 2 (sleep 600): killed by the test"
    )
    assert child_pids() <= before  # the appliance is gone


def test_appliance_that_outlives_its_time_is_killed(tiny: Path, tmp_path: Path) -> None:
    image = overlay(tiny, tmp_path / "slow.qcow2")
    before = child_pids()
    with nbd_exports([image]) as sockets, pytest.raises(errors.PersonalizationFailed) as caught:
        # The time counts from the call, launch included: the launch alone outlives it.
        customize.personalize(
            [(sockets[0], customize.Personalization("slow"))], watchdog=customize.Watchdog(1)
        )
    assert caught.value.reason == (
        "the libguestfs appliance did not finish within 1 s and was killed"
    )
    assert child_pids() <= before


def test_firstboot_on_a_guest_without_systemd_is_refused(tiny: Path, tmp_path: Path) -> None:
    image = overlay(tiny, tmp_path / "fb.qcow2")
    with pytest.raises(errors.PersonalizationFailed, match="need systemd") as caught:
        customize.personalize(
            [
                (
                    customize.Drive(path=str(image), format="qcow2"),
                    customize.Personalization(
                        "delta", customization=(model.Customization(firstboot=("echo hi",)))
                    ),
                )
            ]
        )
    assert caught.value.step == "firstboot"


def test_two_debian_guests(
    debian: Path, tmp_path: Path, password_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    images = [overlay(debian, tmp_path / f"{n}.qcow2", 2 << 30) for n in "ab"]
    firstboot = model.Customization(firstboot=("touch /root/first-boot-ran",))
    people = [
        customize.Personalization(name, (KEY_A,), password_file, "/dev/sda1", firstboot)
        for name in ("deb-a", "deb-b")
    ]
    keys = [f"/etc/ssh/ssh_host_{kind}_key" for kind in customize.HOST_KEY_TYPES]
    keys += [f"{key}.pub" for key in keys]
    (base,) = read_back([debian], keys, [], [])
    with nbd_exports(images) as sockets:
        customize.personalize(list(zip(sockets, people, strict=True)))
    assert inspections(caplog) == {"deb-a": "light", "deb-b": "light"}

    unit = f"/etc/systemd/system/{customize.FIRSTBOOT_UNIT}"
    wants = f"/etc/systemd/system/multi-user.target.wants/{customize.FIRSTBOOT_UNIT}"
    a, b = read_back(
        images,
        [*keys, "/etc/hostname", "/etc/shadow", unit, f"{customize.FIRSTBOOT_DIR}/scripts/0001.sh"],
        keys,
        [wants],
    )
    for disk, name in ((a, "deb-a"), (b, "deb-b")):
        assert disk.files["/etc/hostname"] == f"{name}\n"
        assert shadow_root(disk.files["/etc/shadow"]).startswith("$6$")
        assert all(disk.files[k] != base.files.get(k) for k in keys)
        assert all(disk.modes[k] == (0o644 if k.endswith(".pub") else 0o600) for k in keys)
        assert disk.files[unit] == guest_text.firstboot_unit()
        assert disk.links[wants] == unit
        assert (
            "touch /root/first-boot-ran" in disk.files[f"{customize.FIRSTBOOT_DIR}/scripts/0001.sh"]
        )
        assert disk.root_size > (3 << 30) // 2  # grown from 1 GiB to 2 GiB
    assert all(a.files[k] != b.files[k] for k in keys)


def test_a_disk_without_an_os_falls_back_to_inspect_os_and_fails(
    tiny: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    blank = tmp_path / "blank.raw"  # a whole-disk ext4 with no /etc: no OS root to find
    with blank.open("wb") as file:
        file.truncate(32 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(blank)], check=True)
    drives = [
        customize.Drive(path=str(overlay(tiny, tmp_path / "ok.qcow2")), format="qcow2"),
        customize.Drive(path=str(blank), format="raw"),
    ]
    with pytest.raises(errors.PersonalizationFailed, match="no operating system") as caught:
        customize.personalize(
            [
                (drives[0], customize.Personalization("epsilon")),
                (drives[1], customize.Personalization("zeta")),
            ]
        )
    assert (caught.value.guest, caught.value.step, caught.value.drive) == (
        "zeta",
        "inspect",
        str(blank),
    )
    assert inspections(caplog) == {"epsilon": "light", "zeta": "fallback"}
