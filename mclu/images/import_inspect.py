"""Whether an imported disk holds an operating system mclu can personalise, and whether it
carries cloud-init: one libguestfs appliance, launched once, in a child process.

The child (`python -m mclu.images.import_inspect DISK TMPDIR SECONDS`) adds the raw disk
read-only, finds its OS root as a build would (`guestfs_inspect.Inspector`: the light
inspection, else libguestfs's inspect_os), mounts it read-only, and prints one JSON object:
libguestfs's filesystems, the root, its os-release name, whether it has /etc, and the
cloud-init files it holds. A child, not a thread, so that the whole of it is bounded:
libguestfs's own launch timeout is 20 minutes, and a call stuck in the appliance cannot be
ended through its handle; the child's process group (the appliance's qemu in it) is killed
at the deadline or when the import is stopped (Ctrl-C), at once.

libguestfs picks its backend from the environment (this machine's KVM hangs the appliance:
``LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from mclu import errors

# Where an image's cloud-init shows: Debian's and Fedora's package, a pip install, its config.
CLOUD_INIT_PATHS = ("/usr/bin/cloud-init", "/usr/local/bin/cloud-init", "/etc/cloud/cloud.cfg")
# Launch 10-45 s under TCG on a busy two-core machine, inspect_os about 7 s more: a disk that
# takes five minutes is not inspected.
TIMEOUT = 300.0
MEMSIZE = 512
PURPOSE = "checking that an imported disk can be personalised"


@dataclass(frozen=True)
class Inspection:
    """What the appliance found on the disk."""

    filesystems: dict[str, str] = field(default_factory=dict)  # device: type (libguestfs's)
    root: str | None = None  # the OS root's device, None: none found
    os_name: str = ""  # its os-release PRETTY_NAME (or ID VERSION_ID)
    has_etc: bool = False  # the root has /etc: an OS mclu's edits apply to
    cloud_init: tuple[str, ...] = ()  # the CLOUD_INIT_PATHS it holds

    @classmethod
    def from_json(cls, data: Any) -> Inspection:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return cls(
            filesystems={str(k): str(v) for k, v in dict(data.get("filesystems") or {}).items()},
            root=str(data["root"]) if data.get("root") else None,
            os_name=str(data.get("os_name") or ""),
            has_etc=bool(data.get("has_etc")),
            cloud_init=tuple(str(p) for p in data.get("cloud_init") or ()),
        )


def inspect(
    source: str,
    disk: Path,
    tmpdir: Path,
    tick: Callable[[], None],
    timeout: float = TIMEOUT,
) -> Inspection:
    """Inspect the raw `disk` (imported from `source`) in one appliance, its temporary files
    in `tmpdir`. `tick` is called five times a second while it runs: whatever it raises
    (the import stopped) kills the appliance at once and is raised.

    :raises errors.ImageRefused: not done within `timeout` (the appliance is killed).
    :raises errors.LocalToolMissing: no python3-guestfs.
    :raises errors.ImageRefused: libguestfs failed on it (`failure`).
    """
    argv = [sys.executable, "-m", __name__, str(disk), str(tmpdir), f"{timeout:.0f}"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the appliance's qemu goes with it
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                tick()
                if time.monotonic() > deadline:
                    raise errors.ImageRefused(
                        source=source,
                        reason=f"libguestfs could not inspect it within {timeout:g} s",
                    ) from None
    finally:
        if proc.returncode is None:
            _kill_group(proc)
    if proc.returncode != 0:
        raise failure(source, proc.returncode, err)
    try:
        return Inspection.from_json(json.loads(out))
    except (ValueError, KeyError) as e:
        raise errors.LocalCommandFailed(
            command="libguestfs inspection", exit_status=0, stderr=f"unreadable answer: {e}"
        ) from e


def failure(source: str, exit_status: int, stderr: str) -> errors.MCLUError:
    """What a failed inspection child means: python3-guestfs missing (its exit status 3), else
    the image refused with libguestfs's own last word (a corrupt disk or one the appliance
    cannot open ends here, and so would a broken appliance: its line says which). Pure."""
    if exit_status == 3:
        return errors.LocalToolMissing(tool="python3-guestfs", purpose=PURPOSE)
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = lines[-1] if lines else f"exit status {exit_status}"
    return errors.ImageRefused(source=source, reason=f"libguestfs could not inspect it: {said}")


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill the child and its appliance, and remove the appliance's socket directory, which
    libguestfs (run as root) makes in /tmp and removes only on a clean close."""
    sockdirs = _sockdirs(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for sockdir in sockdirs:
        shutil.rmtree(sockdir, ignore_errors=True)


def _sockdirs(group: int) -> list[str]:
    """The socket directories named on the command lines of process group `group`'s
    processes (the appliance's qemu: `path=/tmp/libguestfsXXXXXX/guestfsd.sock`)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat.rpartition(")")[2].split()[2]) != group:
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        for arg in cmdline.split("\0"):
            for part in arg.split(","):
                if part.startswith("path=/tmp/libguestfs") and part.endswith("/guestfsd.sock"):
                    found.append(os.path.dirname(part.removeprefix("path=")))
    return found


# --- the child ---------------------------------------------------------------------------------


class _Handle(Protocol):
    """The calls of a guestfs handle the child makes beyond guestfs_inspect.GuestFS's."""

    def list_filesystems(self) -> dict[str, str]: ...
    def add_drive_opts(self, filename: str, *, format: str, readonly: bool) -> None: ...


def examine(g: Any, label: str) -> Inspection:
    """What the launched appliance `g` (one drive, /dev/sda) holds. Leaves nothing mounted."""
    from mclu.images import guest_text, guestfs_inspect

    handle = cast(guestfs_inspect.GuestFS, g)
    filesystems = cast(_Handle, g).list_filesystems()
    try:
        found = guestfs_inspect.Inspector(handle, ["/dev/sda"]).inspect(0, label)
    except ValueError:  # no OS root, even for inspect_os
        return Inspection(filesystems=filesystems)
    for mountpoint, device in guest_text.mount_order(found.mountpoints):
        try:
            handle.mount_ro(device, mountpoint)
        except RuntimeError:
            if mountpoint == "/":
                raise
    try:
        has_etc = bool(handle.is_dir("/etc"))
        release = guest_text.parse_os_release(
            _read(handle, ["/etc/os-release", "/usr/lib/os-release"])
        )
        name = release.get("PRETTY_NAME") or " ".join(
            filter(None, (release.get("ID"), release.get("VERSION_ID")))
        )
        cloud_init = tuple(p for p in CLOUD_INIT_PATHS if handle.is_file(p, followsymlinks=True))
    finally:
        handle.umount_all()
    return Inspection(filesystems, found.root, name, has_etc, cloud_init)


def _read(g: Any, paths: Sequence[str]) -> str:
    from mclu.images import guestfs_inspect

    for path in paths:
        with contextlib.suppress(RuntimeError):
            return guestfs_inspect.read_file(g, path).decode("utf-8", errors="replace")
    return ""


def main(argv: Sequence[str]) -> int:
    disk, tmpdir, seconds = argv
    # Bounded even when the import that started it is killed outright (SIGKILL: nobody left
    # to kill this process group): SIGALRM ends the child, and libguestfs's recovery process
    # then kills the appliance.
    signal.alarm(int(seconds) + 10)
    try:
        import guestfs  # Debian's python3-guestfs: not on PyPI
    except ImportError:
        return 3
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.set_trace(False)
        g.set_tmpdir(tmpdir)
        g.set_memsize(MEMSIZE)
        # Read-only: libguestfs's writes (a journal replayed on mount) go to an overlay.
        cast(_Handle, g).add_drive_opts(disk, format="raw", readonly=True)
        g.launch()
        found = examine(g, disk)
        g.shutdown()
    except RuntimeError as e:
        sys.stderr.write(f"libguestfs: {e}\n")
        return 1
    finally:
        g.close()
    sys.stdout.write(json.dumps(found.__dict__) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
