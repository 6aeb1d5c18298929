"""How to reach guests with the user's own OpenSSH: config blocks, known-hosts lines and
Ansible's inventory, from what mclu knows of each guest. Pure: data in, text out.

A guest is checked against exactly the host keys mclu generated for it and recorded in its
metadata (`GuestMeta.host_keys`): ssh looks its key up under `HostKeyAlias mclu-UUID`, never
under its address (addresses are reused), in a file or through a command that holds only those
keys, with `StrictHostKeyChecking yes`: no trust on first use, and a guest presenting another
key is refused by ssh itself ("REMOTE HOST IDENTIFICATION HAS CHANGED").

A guest on a libvirt network (NAT or host-only: "network:NAME") is reachable only from its
host, so it goes through it with `ProxyJump`. Options given with `-o` do not apply to a jump
host (ssh(1)), so the host gets its own `Host` block, with the inventory's user, port, keys and
known_hosts: ssh's ProxyJump reads it from the same config.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mclu.model import HostSpec

ALIAS_PREFIX = "mclu-"  # HostKeyAlias of a guest: mclu-UUID
HOST_PREFIX = "mclu-host-"  # the Host block of an mclu host used as a jump host
DEFAULT_USER = "root"


@dataclass(frozen=True)
class Target:
    """One guest as ssh needs it."""

    name: str
    host: HostSpec  # the mclu host it runs on
    uuid: str
    networks: tuple[str, ...] = ()  # Guest.networks
    address: str | None = None  # the address to connect to; None when none is known
    why_no_address: str = ""  # why none is known, for the comment and the error
    host_keys: tuple[str, ...] = ()  # "TYPE BASE64", as recorded in its metadata
    template: str = ""
    tags: tuple[str, ...] = ()  # its host's tags

    @property
    def alias(self) -> str:
        return host_key_alias(self.uuid)

    @property
    def through_host(self) -> bool:
        """Whether it is reachable only through its host: on a libvirt (NAT or host-only)
        network, not bridged onto the LAN."""
        return any(n.startswith("network:") for n in self.networks) and not any(
            n.startswith("bridge:") for n in self.networks
        )


@dataclass(frozen=True)
class KnownHosts:
    """How ssh learns the guests' keys: a file of `known_hosts_lines`, or a command that
    prints them for the alias it is given (`mclu known-hosts %H`); exactly one is set."""

    file: str | None = None
    command: Sequence[str] | None = None  # argv; `%H` is added by render

    def __post_init__(self) -> None:
        if (self.file is None) == (self.command is None):
            raise ValueError("KnownHosts needs exactly one of file and command")


def host_key_alias(uuid: str) -> str:
    return f"{ALIAS_PREFIX}{uuid}"


def uuid_of_alias(alias: str) -> str | None:
    """The guest UUID an alias names; None for anything else."""
    return alias[len(ALIAS_PREFIX) :] if alias.startswith(ALIAS_PREFIX) else None


def known_hosts_lines(targets: Iterable[Target]) -> list[str]:
    """known_hosts lines, `mclu-UUID TYPE BASE64`, of every recorded key of each guest."""
    return [f"{t.alias} {key}" for t in targets for key in t.host_keys]


def jump_alias(host: HostSpec) -> str:
    return f"{HOST_PREFIX}{host.name}"


def render_config(targets: Sequence[Target], known: KnownHosts, *, user: str = DEFAULT_USER) -> str:
    """An OpenSSH config: one `Host NAME` block per guest, then one block per mclu host that
    a guest jumps through. A guest without a known address gets no HostName, with a comment
    saying why; one without recorded keys a comment that ssh will refuse it."""
    blocks = [_guest_block(t, known, user) for t in targets]
    jumps = {t.host.name: t.host for t in targets if t.through_host}
    blocks += [_jump_block(h) for h in jumps.values()]
    return "\n".join(blocks)


def _guest_block(target: Target, known: KnownHosts, user: str) -> str:
    lines = [f"# {target.name} on {target.host.name} (mclu)", f"Host {_word(target.name)}"]
    if target.address is not None:
        lines.append(f"  HostName {target.address}")
    else:
        why = f": {target.why_no_address}" if target.why_no_address else ""
        lines.append(f"  # no address is known{why}")
    if not target.host_keys:
        lines.append("  # mclu recorded no host keys for it: ssh refuses it (nothing to check)")
    lines += [f"  User {_word(user)}"]
    if target.through_host:
        lines.append(f"  ProxyJump {jump_alias(target.host)}")
    lines += [
        f"  HostKeyAlias {target.alias}",
        "  StrictHostKeyChecking yes",
        "  CheckHostIP no",
        "  UpdateHostKeys no",
        "  GlobalKnownHostsFile none",
    ]
    if known.file is not None:
        lines.append(f"  UserKnownHostsFile {_word(known.file)}")
    else:
        assert known.command is not None
        lines += [
            "  UserKnownHostsFile none",
            f"  KnownHostsCommand {' '.join(_word(a) for a in known.command)} %H",
        ]
    return "\n".join(lines) + "\n"


def _jump_block(host: HostSpec) -> str:
    lines = [f"# mclu host {host.name}", f"Host {jump_alias(host)}", f"  HostName {host.address}"]
    if host.user:
        lines.append(f"  User {_word(host.user)}")
    if host.port is not None:
        lines.append(f"  Port {host.port}")
    lines += [f"  IdentityFile {_word(f)}" for f in host.identity_files]
    if host.identities_only:
        lines.append("  IdentitiesOnly yes")
    if host.known_hosts:
        lines.append(f"  UserKnownHostsFile {_word(host.known_hosts)}")
    return "\n".join(lines) + "\n"


_PLAIN = re.compile(r"^[A-Za-z0-9_./:@%+=~-]+$")


def _word(text: str) -> str:
    """One config argument: as is when plain, else double-quoted (ssh_config's quoting)."""
    if _PLAIN.match(text):
        return text
    if '"' in text or "\n" in text:
        raise ValueError(f"cannot write {text!r} into an ssh config")
    return f'"{text}"'


# --- Ansible ---------------------------------------------------------------------------------


def ansible_inventory(
    targets: Sequence[Target], known_hosts_command: Sequence[str], *, user: str = DEFAULT_USER
) -> dict[str, Any]:
    """Ansible's dynamic-inventory JSON (`--list`): groups by mclu host (`mclu_host_NAME`),
    template (`mclu_template_NAME`) and host tag (`mclu_tag_NAME`), and per guest its
    `ansible_host` (when known), user and the ssh options that check its recorded keys (and
    jump through its host). Group names keep letters, digits and underscores only."""
    groups: dict[str, list[str]] = {}
    hostvars: dict[str, dict[str, Any]] = {}
    for t in targets:
        names = [f"mclu_host_{t.host.name}"]
        names += [f"mclu_template_{t.template}"] if t.template else []
        names += [f"mclu_tag_{tag}" for tag in t.tags]
        for group in names:
            groups.setdefault(_group(group), []).append(t.name)
        variables: dict[str, Any] = {
            "ansible_user": user,
            "ansible_ssh_common_args": _ssh_args(t, known_hosts_command),
            "mclu_host": t.host.name,
            "mclu_uuid": t.uuid,
        }
        if t.address is not None:
            variables["ansible_host"] = t.address
        hostvars[t.name] = dict(sorted(variables.items()))
    inventory: dict[str, Any] = {name: {"hosts": hosts} for name, hosts in sorted(groups.items())}
    inventory["all"] = {"children": sorted(groups)}
    inventory["_meta"] = {"hostvars": hostvars}
    return inventory


def _group(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _ssh_args(target: Target, known_hosts_command: Sequence[str]) -> str:
    """ssh options for one guest, as one shell-quoted string (Ansible splits it with shlex).
    A jump host given with -o ProxyJump uses the user's own ssh config for its keys."""
    command = " ".join(_word(a) for a in known_hosts_command) + " %H"
    options = [
        f"HostKeyAlias={target.alias}",
        "StrictHostKeyChecking=yes",
        "CheckHostIP=no",
        "UpdateHostKeys=no",
        "GlobalKnownHostsFile=none",
        "UserKnownHostsFile=none",
        f"KnownHostsCommand={command}",
    ]
    if target.through_host:
        h = target.host
        where = f"{h.user}@{h.address}" if h.user else h.address
        options.append(f"ProxyJump={where}:{h.ssh_port}")
    return " ".join(f"-o {shlex.quote(o)}" for o in options)
