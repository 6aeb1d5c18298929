"""Personalise new guests' disks with libguestfs on the controller, several in one appliance.

Each disk reaches the controller as an NBD unix socket (qemu-nbd on the host, forwarded over
ssh) or, in tests, as a local image file. One libguestfs appliance opens every disk of a
build: its launch costs 10-20 s under TCG and dominates the build, the edits themselves touch
few blocks. Per disk: inspect the OS (`guestfs_inspect`), grow the expandable partition,
mount, then hostname, machine-id, root's authorized_keys, ssh host keys, root password, the
template's packages, files and commands, and a systemd unit for first-boot commands
(`guestfs_edit`; the pure text edits are in `guest_text`).

libguestfs picks its backend from the environment: on machines whose KVM cannot boot a Linux
appliance run with ``LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg``.
Blocking: call from a thread. Nothing secret is logged: libguestfs's call trace is switched
off because it would print the private host keys and the password hash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from mclu import errors, model, runtmp
from mclu.images import guest_text, guestfs_edit, password
from mclu.images.guestfs_inspect import GuestFS, Inspector, OSRoot

__all__ = [
    "DEFAULT_MEMSIZE",
    "DEFAULT_SMP",
    "DEFAULT_TIMEOUT",
    "Drive",
    "Personalization",
    "Watchdog",
    "personalize",
]

log = logging.getLogger(__name__)

# Measured under TCG on a busy 2-core machine: launch 18-28 s with 2 vCPUs, 23-27 s with 1
# (within the noise); 1024 MiB instead of 512 bought nothing for these edits.
DEFAULT_SMP = 2
DEFAULT_MEMSIZE = 512
# Once the appliance is up, personalising takes seconds (minutes when a template installs
# packages). An appliance that stops answering (seen once: its TCG kernel spun for 74 minutes
# with the build waiting) becomes an ordinary failed build, undone like any other, after this.
DEFAULT_TIMEOUT = 30 * 60.0

HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
FIRSTBOOT_DIR = guest_text.FIRSTBOOT_DIR
FIRSTBOOT_UNIT = guest_text.FIRSTBOOT_UNIT

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Drive:
    """A disk to personalise: an NBD server's unix socket, or a local image file."""

    nbd_socket: str | None = None
    path: str | None = None
    format: str = "raw"  # of `path`; an NBD export is always raw

    def __post_init__(self) -> None:
        if (self.nbd_socket is None) == (self.path is None):
            raise ValueError("a Drive needs exactly one of nbd_socket and path")

    @property
    def label(self) -> str:
        return f"nbd:{self.nbd_socket}" if self.nbd_socket else str(self.path)


@dataclass(frozen=True)
class Personalization:
    """What makes one guest's disk its own."""

    hostname: str
    ssh_authorized_keys: tuple[str, ...] = ()  # public key lines for root
    root_password_file: str | None = None  # on the controller; its first line is the password
    grow_partition: str | None = None  # the index's `expand=`, e.g. "/dev/sda1"
    customization: model.Customization = field(default_factory=model.Customization)


class Watchdog:
    """Kills the appliance (its hypervisor process) when its time is up, or when told to.

    libguestfs serialises the calls on a handle, so a call stuck in the appliance cannot be
    ended through the handle from another thread; killing the appliance's qemu makes it fail
    at once. Safe to call from any thread; `kill` before the appliance is up kills it as soon
    as it is.
    """

    def __init__(self, seconds: float | None = DEFAULT_TIMEOUT) -> None:
        self.seconds = seconds
        self.reason: str | None = None  # why the appliance was killed, once it was
        self._pid: int | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def watch(self, pid: int, started: float) -> None:
        """Watch the appliance `pid`, whose work began at monotonic time `started`."""
        with self._lock:
            self._pid = pid
            if self.reason is not None:
                self._kill_locked()
                return
            if self.seconds is not None:
                left = max(0.0, self.seconds - (time.monotonic() - started))
                self._timer = threading.Timer(
                    left,
                    self.kill,
                    (
                        f"the libguestfs appliance did not finish within {self.seconds:g} s "
                        "and was killed",
                    ),
                )
                self._timer.daemon = True
                self._timer.start()

    def kill(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
                log.info("killing the libguestfs appliance: %s", reason)  # the error says it too
            self._kill_locked()

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._pid = None

    def _kill_locked(self) -> None:
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)


def personalize(
    drives: Sequence[tuple[str | Drive, Personalization]],
    *,
    progress: Progress | None = None,
    memsize: int = DEFAULT_MEMSIZE,
    smp: int = DEFAULT_SMP,
    watchdog: Watchdog | None = None,
) -> list[model.GuestTraits]:
    """Personalise every disk in one libguestfs launch; returns what each disk's guest
    supports for showing that it booted (`mclu.decide.readiness`), in the order of `drives`.

    A plain string is an NBD unix socket path. Stops at the first failure: then no disk of
    the call should be taken as personalised. The appliance is killed after `watchdog`'s
    time (default: `DEFAULT_TIMEOUT`) or when the caller kills it through `watchdog`.

    :raises errors.PersonalizationFailed: naming the guest and the step that failed.
    """
    watchdog = watchdog or Watchdog()
    try:
        return _personalize(drives, progress, memsize, smp, watchdog)
    except errors.PersonalizationFailed as error:
        if watchdog.reason is None:
            raise
        raise errors.PersonalizationFailed(
            guest=error.guest, step=error.step, reason=watchdog.reason, drive=error.drive
        ) from error
    finally:
        watchdog.stop()


def _personalize(
    drives: Sequence[tuple[str | Drive, Personalization]],
    progress: Progress | None,
    memsize: int,
    smp: int,
    watchdog: Watchdog,
) -> list[model.GuestTraits]:
    say = progress or (lambda message: None)
    jobs = [_Job(Drive(nbd_socket=d) if isinstance(d, str) else d, p) for d, p in drives]
    if not jobs:
        return []
    traits = []
    for job in jobs:
        _check(job)
    hashes = [_root_password_hash(job) for job in jobs]
    network = any(job.personalization.customization.packages for job in jobs)
    names = ", ".join(job.hostname for job in jobs)
    say(f"starting the libguestfs appliance for {len(jobs)} disk(s)")
    started = time.monotonic()
    # The private host keys live in this run's private directory (mclu.runtmp), which goes
    # with the run even when it is killed (the next run removes it).
    with (
        runtmp.tempdir(runtmp.HOSTKEYS_PREFIX) as keydir,
        _HostKeys(jobs, Path(keydir)) as host_keys,
        _appliance(
            [job.drive for job in jobs],
            guests=names,
            network=network,
            memsize=memsize,
            smp=smp,
            watchdog=watchdog,
            started=started,
        ) as g,
    ):
        log.info("libguestfs appliance up in %.1f s", time.monotonic() - started)
        # libguestfs names the drives in the order added; list_devices would cost ~1 s.
        devices = [guest_text.drive_device(index) for index in range(len(jobs))]
        inspector = Inspector(g, devices)
        for index, job in enumerate(jobs):
            say(f"{job.hostname}: personalising {job.drive.label}")
            with _step(job.hostname, "inspect", job.drive.label):
                found = inspector.inspect(
                    index, job.hostname, keep_root_mounted=not job.personalization.grow_partition
                )
            traits.append(
                _personalize_drive(
                    g, job, found, devices[index], hashes[index], host_keys.get(index)
                )
            )
            say(f"{job.hostname}: personalised")
    return traits


# --- the appliance ----------------------------------------------------------------------


@contextlib.contextmanager
def _appliance(
    drives: Sequence[Drive],
    *,
    guests: str,
    network: bool,
    memsize: int,
    smp: int,
    watchdog: Watchdog,
    started: float,
) -> Iterator[GuestFS]:
    """A launched appliance with `drives` as /dev/sda, /dev/sdb, ... in order, watched by
    `watchdog` from its launch on (libguestfs bounds the launch itself).

    Always ends with shutdown (which syncs the disks) and close; a shutdown error is raised
    only when the body succeeded. `guests` names the guests in errors of launch and shutdown.
    """
    import guestfs  # Debian's python3-guestfs: not on PyPI, so imported only when used

    g = cast(GuestFS, guestfs.GuestFS(python_return_dict=True))
    try:
        g.set_trace(False)  # the trace would print private host keys and the password hash
        g.set_tmpdir(str(runtmp.current().path))  # its libguestfsXXXXXX goes with the run
        g.set_memsize(memsize)
        g.set_smp(smp)
        g.set_network(network)
        with _step(guests, "launch the libguestfs appliance", ""):
            for drive in drives:
                if drive.nbd_socket:
                    g.add_drive_opts(
                        "", format="raw", protocol="nbd", server=[f"unix:{drive.nbd_socket}"]
                    )
                else:
                    g.add_drive_opts(str(drive.path), format=drive.format)
            g.launch()
            _record_sockdir(g)
            _watch(g, watchdog, started)
        try:
            yield g
        except BaseException:
            with contextlib.suppress(RuntimeError):
                g.shutdown()
            raise
        with _step(guests, "shut the libguestfs appliance down (syncing the disks)", ""):
            g.shutdown()
    finally:
        g.close()


def _record_sockdir(g: GuestFS) -> None:
    """Have the run directory take libguestfs's socket directory with it: run as root,
    libguestfs makes it in /tmp whatever its tmpdir (`/tmp/libguestfsXXXXXX`), and removes it
    only on close. Its name is on the appliance's command line."""
    try:
        cmdline = Path(f"/proc/{g.get_pid()}/cmdline").read_bytes()
    except (RuntimeError, OSError):
        return  # no local appliance process (libvirt's backend): nothing of it here
    run = runtmp.current()
    for arg in cmdline.decode(errors="replace").split("\0"):
        for part in arg.split(","):
            if part.startswith("path=/") and part.endswith("/guestfsd.sock"):
                sockdir = os.path.dirname(part[len("path=") :])
                if not sockdir.startswith(f"{run.path}/"):
                    run.record_outside(sockdir)
                return


def _watch(g: GuestFS, watchdog: Watchdog, started: float) -> None:
    try:
        pid = g.get_pid()
    except RuntimeError as error:  # a backend without a local process (libvirt's)
        log.info("personalisation runs without a time bound: %s", error)
        return
    watchdog.watch(pid, started)


# --- one build's work -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    drive: Drive
    personalization: Personalization

    @property
    def hostname(self) -> str:
        return self.personalization.hostname


@contextlib.contextmanager
def _step(guest: str, step: str, drive: str) -> Iterator[None]:
    """Turn a failure inside the block into PersonalizationFailed naming `step`."""
    started = time.monotonic()
    try:
        yield
    except errors.PersonalizationFailed:
        raise
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as error:
        raise errors.PersonalizationFailed(
            guest=guest, step=step, reason=str(error), drive=drive
        ) from error
    log.debug("%s: %s (%.1f s)", guest, step, time.monotonic() - started)


def _check(job: _Job) -> None:
    """Refuse a bad hostname, key or path before the appliance costs its launch."""
    p = job.personalization
    with _step(p.hostname, "check the request", job.drive.label):
        guest_text.check_hostname(p.hostname)
        if any("\n" in key or not key.strip() for key in p.ssh_authorized_keys):
            raise ValueError("an ssh authorized key must be one non-empty line")
        if p.grow_partition:
            guest_text.partition_number(p.grow_partition)
        for path, _ in p.customization.files:
            if not path.startswith("/"):
                raise ValueError(f"file path {path!r} is not absolute")


def _root_password_hash(job: _Job) -> str | None:
    """The hash the guest's /etc/shadow gets, if the request gives a password file."""
    path = job.personalization.root_password_file
    if path is None:
        return None
    with _step(job.hostname, "root password", job.drive.label):
        return password.sha512_crypt(path)


class _HostKeys:
    """ssh host keys for every job, generated by ssh-keygen while the appliance boots."""

    def __init__(self, jobs: Sequence[_Job], directory: Path) -> None:
        self._jobs = jobs
        self._dir = directory
        self._procs: list[list[subprocess.Popen[bytes]]] = []

    def __enter__(self) -> _HostKeys:
        try:
            for index, job in enumerate(self._jobs):
                (self._dir / str(index)).mkdir(mode=0o700)
                self._procs.append([])
                for kind in HOST_KEY_TYPES:
                    self._procs[-1].append(
                        subprocess.Popen(
                            [
                                "ssh-keygen",
                                "-q",
                                "-t",
                                kind,
                                "-N",
                                "",
                                "-C",
                                f"root@{job.hostname}",
                                "-f",
                                str(self._key(index, kind)),
                            ],
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                        )
                    )
        except OSError as error:
            self.__exit__()
            names = ", ".join(job.hostname for job in self._jobs)
            raise errors.PersonalizationFailed(
                guest=names, step="generate ssh host keys", reason=str(error)
            ) from error
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in (p for procs in self._procs for p in procs):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()

    def _key(self, index: int, kind: str) -> Path:
        return self._dir / str(index) / f"ssh_host_{kind}_key"

    def get(self, index: int) -> dict[str, bytes]:
        """{file name in /etc/ssh: content} of job `index`'s keys, private and public."""
        for proc in self._procs[index]:
            _, stderr = proc.communicate()
            if proc.returncode != 0:
                raise errors.PersonalizationFailed(
                    guest=self._jobs[index].hostname,
                    step="generate ssh host keys",
                    reason=f"ssh-keygen failed: {stderr.decode(errors='replace')}",
                )
        keys: dict[str, bytes] = {}
        for kind in HOST_KEY_TYPES:
            private = self._key(index, kind)
            keys[private.name] = private.read_bytes()
            keys[private.name + ".pub"] = private.with_name(private.name + ".pub").read_bytes()
        return keys


def _personalize_drive(
    g: GuestFS,
    job: _Job,
    found: OSRoot,
    device: str,
    password_hash: str | None,
    host_keys: dict[str, bytes],
) -> model.GuestTraits:
    """Every step for one inspected disk, each failure named by its step; returns how the
    guest can show it booted."""
    p, c = job.personalization, job.personalization.customization
    step = functools.partial(_step, p.hostname, drive=job.drive.label)
    grow_mounted: Callable[[], None] | None = None
    if p.grow_partition:
        with step(f"grow {p.grow_partition}"):
            grow_mounted = guestfs_edit.grow(
                g, device, guest_text.partition_number(p.grow_partition)
            )
    with step("mount filesystems"):
        guestfs_edit.mount(g, found.mountpoints, root_mounted=found.mounted)
    if grow_mounted:
        with step(f"grow the filesystem on {p.grow_partition}"):
            grow_mounted()
    with step("hostname"):
        guestfs_edit.set_hostname(g, p.hostname)
    with step("machine-id"):
        guestfs_edit.set_machine_id(g)
    if p.ssh_authorized_keys:
        with step("root's authorized_keys"):
            guestfs_edit.add_authorized_keys(g, p.ssh_authorized_keys)
    with step("ssh host keys"):
        given = guestfs_edit.replace_host_keys(g, host_keys)
    if password_hash:
        with step("root password"):
            guestfs_edit.set_root_password(g, password_hash)
    if c.packages:
        with step(f"install packages ({' '.join(c.packages)})"):
            guestfs_edit.install_packages(g, found.package_management, c.packages)
    for path, content in c.files:
        with step(f"write file {path}"):
            guestfs_edit.write_file(g, path, content)
    for number, command in enumerate(c.run, 1):
        with step(f"run command {number} ({_short(command)})"):
            g.sh(command)
    if c.firstboot:
        with step("firstboot"):
            guestfs_edit.install_firstboot(g, c.firstboot)
    with step("selinux relabel"):
        if g.is_file("/etc/selinux/config"):
            g.touch("/.autorelabel")
    with step("look for a guest agent and a serial console"):
        traits = guestfs_edit.read_traits(g)
    with step("unmount"):
        g.umount_all()
    # Recorded only when written: ssh readiness and `mclu ssh` check the guest against them.
    recorded = guest_text.public_host_keys(host_keys) if given else ()
    return dataclasses.replace(traits, host_keys=recorded)


def _short(command: str, width: int = 60) -> str:
    line = " ".join(command.split())
    return line if len(line) <= width else line[: width - 3] + "..."
