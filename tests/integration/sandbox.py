"""Helpers for tests that run against the mclu sandbox (real sshd and libvirtd per fake host)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mclu.sandbox import config as sandbox_config

BIN = Path(sys.executable).parent
STATE = Path(os.environ.get("MCLU_SANDBOX_DIR", str(sandbox_config.DEFAULT_STATE_DIR)))
HOSTS = 3  # up hosts; the sandbox adds one more that is powered off


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
        """Run argv inside a fake host (its mount, UTS and network namespaces)."""
        return subprocess.run(
            [str(BIN / "mclu-sandbox"), "exec", host, "--", *argv],
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
            input=input,
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
        self.exec(host, ["virsh", "-q", "destroy", name], check=False)
        self.exec(host, ["virsh", "-q", "undefine", name], check=False)
        self.exec(host, ["sh", "-c", f"rm -f /var/lib/libvirt/images/{name}.qcow2*"], check=False)

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
