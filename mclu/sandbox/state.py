"""The sandbox's state directory: where each file lives, the lock, and the record of `up`."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mclu.sandbox import config
from mclu.sandbox.config import HostSpec
from mclu.sandbox.errors import SandboxError


@dataclass(frozen=True)
class Paths:
    state: Path

    @property
    def client(self) -> Path:
        return self.state / "client"

    @property
    def seed(self) -> Path:
        """Warm copy of /var/cache/libvirt/qemu (libvirt's capability cache)."""
        return self.state / "seed" / "qemu-cache"

    @property
    def bin(self) -> Path:
        return self.state / "bin"

    @property
    def standin(self) -> Path:
        return self.bin / "mclu-power-standin"

    @property
    def hostinit(self) -> Path:
        return self.bin / "hostinit.sh"

    @property
    def inventory(self) -> Path:
        return self.state / "hosts.toml"

    @property
    def record(self) -> Path:
        """Written when `up` succeeded: how many hosts are meant to run."""
        return self.state / "sandbox.json"

    @property
    def netns_marker(self) -> Path:
        """Exists if we mounted /run/netns (so `down` unmounts it again)."""
        return self.state / "netns-mounted-by-sandbox"

    @property
    def wol_pidfile(self) -> Path:
        """Written by the wake-on-LAN listener once it listens."""
        return self.state / "wol-listener.pid"

    @property
    def wol_log(self) -> Path:
        return self.state / "wol-listener.log"

    @property
    def dhcp_leases(self) -> Path:
        """The LAN's DHCP server's leases (dnsmasq's lease file: expiry, MAC, address, name)."""
        return self.state / "dnsmasq.leases"

    @property
    def dhcp_pidfile(self) -> Path:
        return self.state / "dnsmasq.pid"

    @property
    def dhcp_log(self) -> Path:
        return self.state / "dnsmasq.log"

    def host(self, host: HostSpec) -> Path:
        return self.state / "hosts" / host.name

    def anchor_file(self, host: HostSpec) -> Path:
        return self.host(host) / "anchor.pid"


def state_dir_from_env() -> Path:
    return Path(os.environ.get(config.STATE_DIR_ENV) or config.DEFAULT_STATE_DIR)


@contextlib.contextmanager
def locked(paths: Paths, wait: float = 0.0) -> Iterator[None]:
    """Serialise commands that change the sandbox; if another holds the lock, wait up to
    `wait` seconds for it, then fail."""
    paths.state.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    with open(paths.state / ".lock", "w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SandboxError(
                        f"another mclu-sandbox command holds {paths.state / '.lock'}"
                    ) from None
                time.sleep(0.2)
        yield


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` atomically: readers see the old text or the new, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def read_record(paths: Paths) -> int | None:
    try:
        count = json.loads(paths.record.read_text())["count"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return count if isinstance(count, int) else None


def write_record(paths: Paths, count: int) -> None:
    write_file(paths.record, json.dumps({"count": count}) + "\n")


def known_hosts_of_record(paths: Paths) -> list[HostSpec]:
    """Hosts of the last successful `up`: ham0..ham{N}, the last one powered off."""
    count = read_record(paths)
    return [] if count is None else config.host_specs(count + 1)
