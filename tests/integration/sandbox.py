"""Helpers for tests that run against the mclu sandbox (real sshd and libvirtd per fake host)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect

from mclu.sandbox import anchors as sandbox_anchors
from mclu.sandbox import commands as sandbox_commands
from mclu.sandbox import config as sandbox_config
from mclu.sandbox import state as sandbox_state

BIN = Path(sys.executable).parent
STATE = Path(os.environ.get("MCLU_SANDBOX_DIR", str(sandbox_config.DEFAULT_STATE_DIR)))
HOSTS = 3  # up hosts; the sandbox adds one more that is powered off
IMAGES = "/var/lib/libvirt/images"
BOOT_SECONDS = 240  # TCG on a loaded 2-core machine


def unavailable_reason() -> str | None:
    """Why the sandbox cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the sandbox needs root"
    for tool in ("libvirtd", "virtlogd", "ip", "unshare", "nsenter"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"the sandbox needs {tool} (make setup installs it)"
    return None


def sandbox(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mclu-sandbox"), *args], check=check, capture_output=True, text=True, timeout=300
    )


@dataclass(frozen=True)
class Sandbox:
    """The running sandbox as the tests see it."""

    state: Path
    inventory: Path

    @property
    def doc(self) -> dict[str, Any]:
        return tomllib.loads(self.inventory.read_text())

    @property
    def up_hosts(self) -> list[str]:
        return list(self.doc["hosts"])[:HOSTS]

    @property
    def off_host(self) -> str:
        return str(list(self.doc["hosts"])[HOSTS])

    def address(self, host: str) -> str:
        return str(self.doc["hosts"][host]["address"])

    def exec(
        self, host: str, argv: Sequence[str], check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside a fake host (its mount, UTS and network namespaces).

        What `mclu-sandbox exec HOST -- ARGV` does (nsenter into the host's anchor), without
        starting a Python for each of the suite's thousands of commands on its hosts.
        """
        spec = sandbox_config.parse_host_name(host)
        pid = sandbox_anchors.anchor_pid(sandbox_state.Paths(self.state), spec)
        if pid is None:
            error = f"mclu-sandbox exec: {host} is not running (mclu-sandbox start {host})\n"
            done = subprocess.CompletedProcess(list(argv), 1, "", error)
            if check:
                done.check_returncode()
            return done
        return subprocess.run(
            sandbox_commands.nsenter_argv(pid, argv),
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
            input=input,
            env={**os.environ, **sandbox_commands.clean_env()},
        )

    def variant(self, path: Path, top: dict[str, Any] | None = None, **defaults: Any) -> Path:
        """A copy of the sandbox inventory with some [defaults] (and top-level keys) changed."""
        doc = self.doc
        doc["defaults"].update(defaults)
        doc.update(top or {})
        path.write_text(to_toml(doc))
        return path

    def remove_guest(self, host: str, name: str) -> None:
        """The guest gone from `host`, whatever state it is in: domain, disk, rebuild files."""
        self.remove_guests(host, [name])

    def remove_guests(self, host: str, names: Sequence[str]) -> None:
        """The guests gone from `host`, whatever state they are in (or none there): domains,
        disks (qcow2 with a rebuild's files, raw), in one visit to the host."""
        if names:
            script = (
                'for n; do virsh -q destroy "$n"; virsh -q undefine "$n"; d="$0/$n"; '
                'rm -f -- "$d.qcow2" "$d.qcow2".* "$d.img"; done >/dev/null 2>&1; true'
            )
            self.exec(host, ["sh", "-c", script, IMAGES, *names], check=False)

    def with_tiny_at(self, revision: int, directory: Path) -> Path:
        """A copy of the inventory (in `directory`) whose template sources also list the
        repository's tiny image as revision `revision`: a base of its own in the hosts'
        caches, which no guest made by other means (`make demo`, other tests) uses."""
        repo = directory / "repo"
        (repo / "repos.d").mkdir(parents=True)
        source = self.state / "repo"
        index, count = re.subn(
            r"(\[tiny\]\n(?:[^\[].*\n)*?)revision=\d+\n",
            rf"\g<1>revision={revision}\n",
            (source / "index").read_text(),
        )
        assert count == 1
        (repo / "index").write_text(index)
        (repo / "tiny.xz").symlink_to(source / "tiny.xz")
        (repo / "repos.d" / "own.conf").write_text(f"[own]\nuri=file://{repo}/index\n")
        repos = [*self.doc.get("template_repos", []), str(repo / "repos.d")]
        return self.variant(directory / "hosts.toml", top={"template_repos": repos})

    def with_stranger_key(self, directory: Path) -> Path:
        """A copy of the inventory (in `directory`) whose client key no host accepts."""
        key = new_ssh_key(directory / "stranger")
        return self.variant(directory / "hosts.toml", identity_file=str(key))

    def with_changed_host_key(self, host: str, directory: Path) -> tuple[Path, Path]:
        """A copy of the inventory (in `directory`) whose known_hosts holds another key for
        `host`: to mclu, the host's key has changed. Returns (inventory, known_hosts)."""
        other = new_ssh_key(directory / "other")
        known = directory / "known_hosts"
        known.write_text(f"{self.address(host)} {other.with_suffix('.pub').read_text()}")
        return self.variant(directory / "hosts.toml", known_hosts=str(known)), known


class Guests:
    """Guests that tests build with the real `mclu`, every one removed from every up host
    afterwards whatever happened (`cleanup`), so that each test makes what it needs.

    `prefix` starts each name (one that sorts first puts them first for `--all`);
    `templates`, when given, is the `--templates` of every build and rebuild.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        ssh_key: Path,
        cache_dir: Path,
        *,
        prefix: str = "t",
        templates: Path | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.ssh_key = ssh_key
        self.env = {"MCLU_CACHE": str(cache_dir)}
        self.prefix = prefix
        self.templates = templates
        self.names: list[str] = []
        self.hosts: dict[str, str] = {}  # name → host, of the guests `built` made

    def name(self) -> str:
        """A fresh guest name, removed at the end."""
        return self.adopt(f"{self.prefix}{uuid.uuid4().hex[:8]}")

    def adopt(self, name: str) -> str:
        """`name` (a guest the test makes otherwise) is removed at the end too."""
        self.names.append(name)
        return name

    def mclu(
        self,
        *args: str,
        inventory: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 900,
    ) -> subprocess.CompletedProcess[str]:
        return mclu(
            *args,
            inventory=inventory or self.sandbox.inventory,
            env={**self.env, **(env or {})},
            timeout=timeout,
        )

    def options(self, templates: Path | None = None) -> list[str]:
        """A build's and a rebuild's way into the guests, and the templates directory."""
        templates = templates or self.templates
        chosen = ["--templates", str(templates)] if templates else []
        return ["--ssh-key", str(self.ssh_key), *chosen]

    def build(
        self,
        *args: str,
        inventory: Path | None = None,
        env: dict[str, str] | None = None,
        templates: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return self.mclu("build", *args, *self.options(templates), inventory=inventory, env=env)

    def rebuild(
        self, *args: str, inventory: Path | None = None, templates: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.mclu("rebuild", *args, *self.options(templates), inventory=inventory)

    def argv(self, *args: str) -> list[str]:
        """The command line of `mclu ARGS`, with the options, for a test that runs it itself."""
        return [str(BIN / "mclu"), "-c", str(self.sandbox.inventory), *args, *self.options()]

    def built(self, host: str, template: str = "tiny", *extra: str, login: bool = True) -> str:
        """A new guest of `template` on `host`; with `login`, once its console shows its login
        prompt (a build ends when the guest is ready by its template's rule)."""
        name = self.name()
        done = self.build(template, name, "--on", host, *extra)
        assert done.returncode == 0, done.stderr
        self.hosts[name] = host
        if login:
            console_shows(self.sandbox, host, name, f"{name} login:")
        return name

    def virsh(self, host: str, *args: str) -> str:
        return self.sandbox.exec(host, ["virsh", *args], check=False).stdout.strip()

    def state(self, host: str, name: str) -> str:
        """`virsh domstate`, or "undefined"."""
        done = self.sandbox.exec(host, ["virsh", "domstate", name], check=False)
        return done.stdout.strip() if done.returncode == 0 else "undefined"

    def files(self, host: str, directory: str = IMAGES) -> list[str]:
        return self.sandbox.exec(host, ["ls", "-a", directory]).stdout.split()

    def cleanup(self) -> None:
        for host in self.sandbox.up_hosts:
            self.sandbox.remove_guests(host, self.names)


def console_log(sandbox: Sandbox, host: str, name: str) -> str:
    """The guest's serial console log on its host (libvirt starts it afresh at each start)."""
    return sandbox.exec(
        host, ["cat", f"/var/log/libvirt/qemu/{name}-console.log"], check=False
    ).stdout


def console_shows(
    sandbox: Sandbox, host: str, name: str, text: str, seconds: float = BOOT_SECONDS
) -> str:
    """Wait until the guest's serial console log (on its host) holds `text`; return the log."""
    deadline = time.monotonic() + seconds
    log = ""
    while time.monotonic() < deadline:
        log = console_log(sandbox, host, name)
        if text in log:
            return log
        time.sleep(2)
    raise AssertionError(f"{name} on {host}: no {text!r} on its console; it shows:\n{log[-2000:]}")


def console_command(
    sandbox: Sandbox, host: str, name: str, command: str, *, password: str | None = None
) -> str:
    """Log in as root on the guest's serial console (virsh console over ssh), run a command.

    With `password`, root must be asked for it; without, an empty one is given if asked.
    """
    ssh = [
        "-F",
        str(sandbox.state / "client" / "ssh_config"),
        "-tt",
        sandbox.address(host),
        "virsh",
        "console",
        "--force",
        name,
    ]
    child = pexpect.spawn("ssh", ssh, encoding="utf-8", timeout=120)
    try:
        child.expect("Escape character")
        child.sendline("")
        child.expect("login:")
        child.sendline("root")
        if password is not None:
            child.expect("assword:")
            child.sendline(password)
            child.expect("# ")
        elif child.expect(["assword:", "# "]) == 0:
            child.sendline("")
            child.expect("# ")
        marker = uuid.uuid4().hex[:6]
        # Typed as END""-marker, printed as END-marker: the echo of the typed line can't match.
        child.sendline(f'{command}; echo END""-{marker}')
        child.expect(f"END-{marker}")
        output: str = child.before
        return output
    finally:
        child.sendcontrol("]")
        child.close(force=True)


def leftovers(sandbox: Sandbox, name: str) -> list[str]:
    """Anything of guest `name` on any host: a domain, a disk, a partial file, a qemu-nbd."""
    found = []
    for host in sandbox.up_hosts:
        if sandbox.exec(host, ["virsh", "-q", "dominfo", name], check=False).returncode == 0:
            found.append(f"{host}: domain {name}")
        files = sandbox.exec(
            host,
            [
                "sh",
                "-c",
                "ls -a /var/lib/libvirt/images /var/lib/libvirt/images/mclu-templates 2>/dev/null",
            ],
            check=False,
        ).stdout.split()
        found += [f"{host}: file {f}" for f in files if name in f or ".partial" in f]
        nbd = sandbox.exec(
            host,
            ["sh", "-c", f"ps -eo args | grep -F {name} | grep qemu-nbd | grep -v grep"],
            check=False,
        ).stdout
        found += [f"{host}: {line}" for line in nbd.splitlines()]
    return found


def new_ssh_key(path: Path, comment: str | None = None) -> Path:
    """A fresh ed25519 key pair without passphrase at `path` (and `path`.pub); returns path."""
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            *(["-C", comment] if comment else []),
            "-f",
            str(path),
        ],
        check=True,
    )
    return path


# libguestfs's appliance hangs under this machine's paravirtual KVM: TCG, as for the guests.
GUESTFS_ENV = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}


@contextlib.contextmanager
def libvirtd_stopped(host: str, *, kill: bool = False) -> Iterator[None]:
    """The host's libvirtd stopped (SIGTERM, or SIGKILL with kill) for the block, then started."""
    sandbox("daemon", host, "libvirtd", "stop", *(["--kill"] if kill else []))
    try:
        yield
    finally:
        sandbox("daemon", host, "libvirtd", "start")


def mclu(
    *args: str, inventory: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real `mclu` command line, as a user would."""
    return subprocess.run(
        [str(BIN / "mclu"), "-c", str(inventory), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **GUESTFS_ENV, **(env or {})},
    )


def mclu_json(*args: str, inventory: Path) -> tuple[int, dict[str, Any]]:
    done = mclu(*args, "--json", inventory=inventory)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def to_toml(doc: dict[str, Any]) -> str:
    """Just enough TOML for an inventory: top-level values, [defaults] and [hosts.NAME]."""
    lines = [f"{k} = {_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for table in ("defaults",):
        lines += [f"[{table}]"] + [f"{k} = {_value(v)}" for k, v in doc.get(table, {}).items()]
    for name, host in doc.get("hosts", {}).items():
        lines += [f"[hosts.{name}]"] + [f"{k} = {_value(v)}" for k, v in host.items()]
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(str(v))
