"""What docs/security.md promises, checked: no secret in an argv or a log line, private files
and directories whatever the umask, host keys always checked, guest disks private on hosts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import stat
import subprocess
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import asyncssh
import pytest

from mclu import errors, hostpaths, model
from mclu.act import build
from mclu.cli import commands, main, output
from mclu.decide import build as plan
from mclu.hosts import fake, ssh
from mclu.hosts.session import CommandResult, Session
from mclu.images import cache, customize, guestfs_inspect

PASSWORD = "correct horse battery staple 7%$'\""
SHADOW = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- (a) the root password: a file's first line, never an argv, a log line or a message -------


class FakeGuestFS:
    """Enough of a libguestfs handle for personalisation: files in memory, every call kept."""

    def __init__(self, **_: Any) -> None:
        self.files: dict[str, bytes] = {
            "/etc/shadow": SHADOW.encode(),
            "/etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
            "/etc/hosts": b"127.0.0.1 localhost\n",
        }
        self.dirs = {"/etc", "/etc/ssh", "/root"}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        HANDLES.append(self)

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args + tuple(kwargs.values())))
            return _ANSWERS.get(name)

        return call

    def exists(self, path: str) -> bool:
        return path in self.files or path in self.dirs

    def is_file(self, path: str, **_: Any) -> bool:
        return path in self.files

    def is_dir(self, path: str, **_: Any) -> bool:
        return path in self.dirs

    def pread(self, path: str, count: int, offset: int) -> bytes:
        return self.files[path][offset : offset + count]

    def write(self, path: str, content: bytes) -> None:
        self.calls.append(("write", (path, content)))
        self.files[path] = content

    def glob_expand(self, pattern: str) -> list[str]:
        return []


_ANSWERS: dict[str, Any] = {"is_symlink": False, "mountpoints": {}}
HANDLES: list[FakeGuestFS] = []


class StubInspector:
    def __init__(self, g: Any, devices: Sequence[str]) -> None:
        pass

    def inspect(
        self, index: int, hostname: str, *, keep_root_mounted: bool
    ) -> guestfs_inspect.OSRoot:
        return guestfs_inspect.OSRoot(
            "/dev/sda1", {"/": "/dev/sda1"}, "apt", light=True, mounted=True
        )


@pytest.fixture
def recorded_argv(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every argv mclu's personalisation starts on this machine (the programs still run)."""
    argvs: list[list[str]] = []
    real_run, real_popen = subprocess.run, subprocess.Popen

    def run(argv: Any, *args: Any, **kwargs: Any) -> Any:
        argvs.append([str(a) for a in argv])
        return real_run(argv, *args, **kwargs)

    def popen(argv: Any, *args: Any, **kwargs: Any) -> Any:
        argvs.append([str(a) for a in argv])
        return real_popen(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(subprocess, "Popen", popen)
    return argvs


def test_the_password_reaches_only_the_shadow_hash(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    recorded_argv: list[list[str]],
) -> None:
    HANDLES.clear()
    monkeypatch.setitem(sys.modules, "guestfs", types.SimpleNamespace(GuestFS=FakeGuestFS))
    monkeypatch.setattr(customize, "Inspector", StubInspector)
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\nsecond line is not used\n")
    said: list[str] = []
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"")
    caplog.set_level(logging.DEBUG)  # as -v
    personalization = customize.Personalization(
        hostname="web1",
        ssh_authorized_keys=("ssh-ed25519 AAAA user@x",),
        root_password_file=str(password_file),
    )
    customize.personalize(
        [(customize.Drive(path=str(disk)), personalization)], progress=said.append
    )
    (g,) = HANDLES
    shadow = g.files["/etc/shadow"].decode()
    root_hash = shadow.split("\n")[0].split(":")[1]
    assert root_hash.startswith("$6$")  # openssl made it; the password went on its stdin
    assert ("set_trace", (False,)) in g.calls  # libguestfs's trace would print the hash
    assert caplog.records  # the -v path logged something
    everything = "\n".join(
        [
            *said,
            *(r.getMessage() for r in caplog.records),
            *(" ".join(a) for a in recorded_argv),
            *(repr(c) for c in g.calls if c[0] != "write"),
        ]
    )
    for secret in (PASSWORD, PASSWORD.split()[0] + " horse", root_hash):
        assert secret not in everything
    assert [c for c in g.calls if root_hash in repr(c)] == [
        ("write", ("/etc/shadow", shadow.encode()))
    ]
    assert not any(PASSWORD in repr(c) for c in g.calls)
    assert ["openssl", "passwd", "-6", "-stdin"] in recorded_argv


def test_a_failing_password_step_keeps_the_password_out_of_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "guestfs", types.SimpleNamespace(GuestFS=FakeGuestFS))
    monkeypatch.setattr(customize, "Inspector", StubInspector)

    def no_openssl(argv: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "", "openssl: cannot do that")

    monkeypatch.setattr(subprocess, "run", no_openssl)
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n")
    job = customize.Personalization(hostname="web1", root_password_file=str(password_file))
    with pytest.raises(errors.PersonalizationFailed) as failed:
        customize.personalize([(customize.Drive(path=str(tmp_path / "d")), job)])
    assert "root password" in str(failed.value) and PASSWORD not in str(failed.value)


def test_build_with_a_password_file_logs_no_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`mclu -v build --root-password-file` to the plan: the password file is named, its
    content never shown (the CLI takes the password only as a file: no option takes it)."""
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n")
    inventory = tmp_path / "hosts.toml"
    inventory.write_text("[hosts.a]\n")
    out, err = io.StringIO(), io.StringIO()
    env = commands.Env(
        environ={
            "MCLU_CONFIG": str(inventory),
            "HOME": str(tmp_path),
            "MCLU_TEMPLATES": str(tmp_path),
            "MCLU_CACHE": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path),
            "XDG_CONFIG_DIRS": "/none",
        },
        printer=output.Printer(out=out, err=err),
        open_session=fake.FakeCluster.of("a").open,
    )
    caplog.set_level(logging.DEBUG)
    main.run(["-v", "build", "nosuch", "web1", "--root-password-file", str(password_file)], env)
    shown = out.getvalue() + err.getvalue() + capsys.readouterr().err + caplog.text
    assert PASSWORD not in shown
    options = {o for action in main.build_parser()._actions for o in action.option_strings}
    assert not [o for o in options if "password" in o and not o.endswith("-file")]


# --- (b) private files and directories on the controller, whatever the umask -----------------


def local_template(tmp_path: Path) -> model.ResolvedTemplate:
    source = tmp_path / "tiny.raw"
    source.write_bytes(b"\x01" * 4096 + bytes(8192))
    return model.ResolvedTemplate(
        name="tiny",
        base=model.BaseImage(template="tiny", revision=3, arch="x86_64", size=1 << 20),
        source_uri=str(source),
        sha512=hashlib.sha512(source.read_bytes()).hexdigest(),
    )


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_the_template_cache_is_private(tmp_path: Path, mask: int) -> None:
    directory = tmp_path / "xdg-cache" / "mclu"
    with umask(mask):
        local = cache.ensure(local_template(tmp_path), directory)
    assert mode(directory) == 0o700
    assert mode(local.path) == 0o600
    assert mode(directory / ".lock") == 0o600
    assert sorted(p.name for p in directory.iterdir()) == [".lock", local.path.name]


def test_an_open_cache_directory_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "mclu"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    (directory / ".lock").touch(mode=0o644)
    cache.ensure(local_template(tmp_path), directory)
    assert mode(directory) == 0o700


def test_cache_dir_follows_xdg() -> None:
    assert cache.cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/mclu")
    assert cache.cache_dir({"MCLU_CACHE": "/y", "XDG_CACHE_HOME": "/x"}) == Path("/y")


class _Listener:
    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


class _Connection:
    def __init__(self) -> None:
        self.forwarded: list[tuple[str, str]] = []

    async def forward_local_path(self, local: str, remote: str) -> _Listener:
        self.forwarded.append((local, remote))
        return _Listener()


def test_forwarded_sockets_live_in_a_private_directory() -> None:
    spec = model.HostSpec(name="ham0", address="10.0.0.10")
    connection = _Connection()
    session = ssh.SshConnection(spec, cast(asyncssh.SSHClientConnection, connection))

    async def forward() -> tuple[str, int]:
        async with session.forward_unix_socket("/run/libvirt/libvirt-sock") as local:
            return local, mode(os.path.dirname(local))

    with umask(0):
        local, directory_mode = asyncio.run(forward())
    assert directory_mode == 0o700
    assert connection.forwarded == [(local, "/run/libvirt/libvirt-sock")]
    assert not os.path.exists(os.path.dirname(local))  # removed with the block


def test_generated_host_keys_are_private(tmp_path: Path) -> None:
    job = customize._Job(customize.Drive(path="/d"), customize.Personalization(hostname="web1"))
    keydir = tmp_path / "keys"
    keydir.mkdir(mode=0o700)
    with umask(0), customize._HostKeys([job], keydir) as keys:
        made = keys.get(0)
    assert mode(keydir / "0") == 0o700
    for name in made:
        path = keydir / "0" / name
        assert mode(path) == (0o644 if name.endswith(".pub") else 0o600)


# --- (b) on hosts: a guest disk is private before anything secret is written into it ---------


class RecordingSession:
    host = "ham0"

    def __init__(self) -> None:
        self.ran: list[tuple[str, ...]] = []

    async def run(self, argv: Sequence[str], **_: Any) -> CommandResult:
        self.ran.append(tuple(argv))
        return CommandResult(tuple(argv), 0)


@pytest.mark.parametrize("disk_format", ["qcow2", "raw"])
def test_a_new_guest_disk_is_made_private_before_it_is_linked(disk_format: str) -> None:
    base = model.BaseImage(template="tiny", revision=3, arch="x86_64", size=1 << 20)
    disk = f"/var/lib/libvirt/images/web1.{'qcow2' if disk_format == 'qcow2' else 'img'}"
    spec = model.GuestSpec(
        name="web1",
        domain_type="qemu",
        memory=64 << 20,
        vcpus=1,
        disk_path=disk,
        meta=model.GuestMeta(template="tiny"),
        disk_format=disk_format,
    )
    guest = plan.GuestPlan(
        name="web1",
        host="ham0",
        reason="",
        spec=spec,
        base=base,
        base_cached=True,
        base_path=hostpaths.base_path("/var/lib/libvirt/images", base),
        disk_path=disk,
        disk_size=1 << 20,
        send_bytes=0,
    )
    session = RecordingSession()
    asyncio.run(build._create_disk(cast(Session, session), guest, build.Undo()))
    made = next(i for i, argv in enumerate(session.ran) if argv[0] in ("qemu-img", "sh"))
    private = next(i for i, argv in enumerate(session.ran) if argv[:2] == ("chmod", "0600"))
    linked = next(i for i, argv in enumerate(session.ran) if argv[0] == "ln")
    assert made < private < linked
    assert session.ran[private][-1] == session.ran[linked][-2]  # the file that is linked


# --- (c) host keys are always checked ----------------------------------------------------------


@pytest.mark.parametrize("known_hosts", ["missing", "present", "unset"])
def test_ssh_options_always_carry_a_known_hosts_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, known_hosts: str
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = tmp_path / "ssh_config"
    # A config that would turn checking off, were asyncssh left to follow it.
    config.write_text("Host *\n  UserKnownHostsFile none\n  StrictHostKeyChecking no\n")
    path = tmp_path / "known_hosts"
    if known_hosts == "present":
        path.write_text(
            "10.0.0.10 ssh-ed25519 "
            "AAAAC3NzaC1lZDI1NTE5AAAAIBiQ0e7IXH1n3JbGmOKpY9s6cPWwWcJwSbQ3tYb9YB0X\n"
        )
    spec = model.HostSpec(
        name="ham0",
        address="10.0.0.10",
        ssh_config=str(config),
        known_hosts=None if known_hosts == "unset" else str(path),
    )
    arguments = ssh._option_arguments(spec)
    assert isinstance(arguments["known_hosts"], asyncssh.SSHKnownHosts)
    options = asyncssh.SSHClientConnectionOptions(**arguments)
    assert options.known_hosts is not None


def test_no_code_turns_host_key_checking_off() -> None:
    """No `known_hosts=None`, no `no_verify=1`, no StrictHostKeyChecking=no in mclu."""
    root = Path(ssh.__file__).parent.parent
    offenders = []
    for source in root.rglob("*.py"):
        text = source.read_text(encoding="utf-8").replace(" ", "")
        for bad in (
            "known_hosts=None",
            '"known_hosts":None',
            "no_verify=1",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
        ):
            if bad in text:
                offenders.append(f"{source.relative_to(root)}: {bad}")
    assert offenders == []
