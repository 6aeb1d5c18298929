"""The sandbox's ssh keys: made once with ssh-keygen and kept in the state directory, so that
known_hosts files and authorised keys stay valid across `down` and `up`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mclu.sandbox.commands import run
from mclu.sandbox.config import HostSpec
from mclu.sandbox.state import Paths


@dataclass(frozen=True)
class Keys:
    """Public key lines: mclu's client key, each host's host key, each host's root key."""

    client: str
    hosts: list[tuple[HostSpec, str]]
    roots: list[str]


def keygen(path: Path, comment: str) -> str:
    """An ed25519 key at `path` (generated once, kept); returns the public key line."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    return path.with_name(path.name + ".pub").read_text().strip()


def host_key_path(paths: Paths, host: HostSpec) -> Path:
    return paths.host(host) / "ssh_host_ed25519_key"


def ensure_keys(paths: Paths, hosts: Sequence[HostSpec]) -> Keys:
    """Every key the sandbox needs, made where missing."""
    client = keygen(paths.client / "id_ed25519", "mclu-sandbox-client")
    host_keys = [(h, keygen(host_key_path(paths, h), f"root@{h.name}")) for h in hosts]
    roots = [keygen(paths.host(h) / "root/.ssh/id_ed25519", f"root@{h.name}") for h in hosts]
    return Keys(client, host_keys, roots)
