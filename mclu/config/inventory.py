"""Read and validate hosts.toml into an `Inventory` of `HostSpec`s.

Pure apart from reading the file: `parse(text, path)` does all the checking and is what
the tests drive. Every error names the file, the key and what is wrong with it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mclu import errors, model, sizes

ENV_VAR = "MCLU_CONFIG"
DEFAULT_PATH = "~/.config/mclu/hosts.toml"

HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# What ssh connects to: a DNS name or an alias of ~/.ssh/config (an IP address is checked
# apart). Never starting with "-", never holding "@", ":", "/", blanks: it is put into
# qemu+ssh:// URIs and reaches ssh(1) through libvirt and virt-viewer.
ADDRESS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,252}$")
USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$")
MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
DOMAIN_TYPES = ("kvm", "qemu")

Checker = Callable[[Any], Any]


def locate(explicit: str | None, environ: Mapping[str, str]) -> Path:
    """The inventory to use: `-c FILE`, then $MCLU_CONFIG, then ~/.config/mclu/hosts.toml."""
    if explicit:
        return Path(explicit).expanduser()
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR]).expanduser()
    return Path(DEFAULT_PATH).expanduser()


def load(path: Path) -> model.Inventory:
    """Read and check an inventory file; raises `errors.ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise errors.ConfigError(
            path=str(path), key=None, problem=f"no inventory here (use -c FILE or set {ENV_VAR})"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise errors.ConfigError(path=str(path), key=None, problem=f"cannot read: {e}") from None
    return parse(text, str(path))


def parse(text: str, path: str) -> model.Inventory:
    """Check an inventory's text; `path` is only used in messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise errors.ConfigError(path=path, key=None, problem=f"not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise errors.ConfigError(
            path=path, key=None, problem="not valid TOML: nested too deeply"
        ) from None
    _reject_unknown(doc, {"parallel", "template_repos", "defaults", "hosts"}, path, "")
    defaults = _table(doc.get("defaults", {}), path, "defaults")
    _reject_unknown(defaults, set(_HOST_KEYS) - _PER_HOST_ONLY, path, "defaults.")
    hosts = _table(doc.get("hosts"), path, "hosts")
    if not hosts:
        raise errors.ConfigError(
            path=path, key="hosts", problem="no hosts: add a [hosts.NAME] table"
        )
    specs = tuple(
        _host(name, _table(h, path, f"hosts.{quoted_key(name)}"), defaults, path)
        for name, h in hosts.items()
    )
    _one_entry_per_machine(specs, hosts, path)
    parallel = _check(doc, "parallel", _positive_int, path, "", default=model.DEFAULT_PARALLEL)
    repos = _check(doc, "template_repos", _paths, path, "")
    return model.Inventory(path=path, hosts=specs, parallel=parallel, template_repos=repos)


def quoted_key(name: str) -> str:
    """A key of the file for a message: as it is when printable, else quoted and escaped as
    in TOML (`hosts."a\\nb"`), so that an error naming it stays on one line."""
    return name if name.isprintable() else json.dumps(name)


def select(
    inventory: model.Inventory, names: list[str] | None = None, tags: list[str] | None = None
) -> list[model.HostSpec]:
    """The hosts named (in inventory order) and carrying all `tags`; unknown names and tags
    no host has are errors (a typo in a cron line must not quietly select nothing)."""
    for name in names or ():
        if inventory.get(name) is None:
            raise errors.UnknownHost(name=name, path=inventory.path, known=inventory.names())
    known_tags = sorted({t for h in inventory.hosts for t in h.tags})
    for tag in tags or ():
        if tag not in known_tags:
            raise errors.UnknownTag(tag=tag, path=inventory.path, known=known_tags)
    chosen = [h for h in inventory.hosts if not names or h.name in names]
    return [h for h in chosen if all(t in h.tags for t in tags or ())]


def _one_entry_per_machine(
    specs: tuple[model.HostSpec, ...], tables: Mapping[str, Any], path: str
) -> None:
    """Two entries that ssh to the same address and port are one machine, which placement
    would count twice: an error naming both. (Entries reached by a libvirt `uri` have no
    address of their own; the same libvirt host under two names is caught after connecting,
    by its host UUID: `mclu.read.snapshot`.)"""
    seen: dict[tuple[str, int], str] = {}
    for spec in specs:
        if spec.uri is not None:
            continue
        where = (spec.address.lower(), spec.ssh_port)
        first = seen.setdefault(where, spec.name)
        if first != spec.name:
            key = "address" if "address" in tables[spec.name] else None
            raise errors.ConfigError(
                path=path,
                key=f"hosts.{quoted_key(spec.name)}" + (f".{key}" if key else ""),
                problem=f"the same machine as hosts.{quoted_key(first)} (address {spec.address}, "
                f"port {spec.ssh_port}): one entry per host",
            )


# --- checking one host -------------------------------------------------------------------


def _host(name: str, table: dict[str, Any], defaults: dict[str, Any], path: str) -> model.HostSpec:
    if not HOST_NAME.fullmatch(name):
        raise errors.ConfigError(
            path=path,
            key=f"hosts.{quoted_key(name)}",
            problem="a host name is letters, digits, '.', '_' and '-' (max 63)",
        )
    _reject_unknown(table, set(_HOST_KEYS), path, f"hosts.{quoted_key(name)}.")
    merged = {**defaults, **table}
    values: dict[str, Any] = {}
    for name_in_file, (field, checker) in _HOST_KEYS.items():
        if name_in_file in merged:
            where = f"hosts.{quoted_key(name)}" if name_in_file in table else "defaults"
            values[field] = _check(merged, name_in_file, checker, path, f"{where}.")
    values.setdefault("address", name)
    return model.HostSpec(name=name, **values)


def _check(
    table: Mapping[str, Any],
    key: str,
    checker: Checker,
    path: str,
    prefix: str,
    default: Any = None,
) -> Any:
    if key not in table:
        return default
    try:
        return checker(table[key])
    except ValueError as e:
        raise errors.ConfigError(path=path, key=f"{prefix}{key}", problem=str(e)) from None


def _table(value: Any, path: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.ConfigError(path=path, key=key, problem="must be a table")
    return value


def _reject_unknown(table: Mapping[str, Any], known: set[str], path: str, prefix: str) -> None:
    for name in table:
        if name not in known:
            raise errors.ConfigError(
                path=path,
                key=f"{prefix}{quoted_key(name)}",
                problem=f"unknown key (known: {', '.join(sorted(known))})",
            )


# --- value checkers: each returns the checked value or raises ValueError -----------------


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def _address(value: Any) -> str:
    text = _text(value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not ADDRESS.fullmatch(text):
        raise ValueError(
            "must be a host name, an alias of ~/.ssh/config or an IP address "
            f"(letters, digits, '.', '_', '-'), got {text!r}"
        )
    return text


def _user(value: Any) -> str:
    text = _text(value)
    if not USER.fullmatch(text):
        raise ValueError(f"must be a user name (letters, digits, '.', '_', '-'), got {text!r}")
    return text


def _path(value: Any) -> str:
    return os.path.expanduser(_text(value))


def _absolute_path(value: Any) -> str:
    text = _text(value)
    if not text.startswith("/"):
        raise ValueError(f"must be an absolute path on the host, got {text!r}")
    return text


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"must be a port number 1-65535, got {value!r}")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a whole number >= 0, got {value!r}")
    return value


def _positive_int(value: Any) -> int:
    if _count(value) == 0:
        raise ValueError("must be at least 1")
    return int(value)


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise ValueError(f"must be a number of seconds > 0 and <= 3600, got {value!r}")
    return float(value)


def _ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 64:
        raise ValueError(f"must be a number of vCPUs per CPU, > 0 and <= 64, got {value!r}")
    return float(value)


def _size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f'must be a size like "2 GiB" or a number of bytes, got {value!r}')
    return sizes.parse(value)


def _mac(value: Any) -> str:
    if not isinstance(value, str) or not MAC.fullmatch(value):
        raise ValueError(f"must be a MAC address like 52:54:00:12:34:56, got {value!r}")
    return value.lower()


def _ipv4(value: Any) -> str:
    try:
        return str(ipaddress.IPv4Address(value if isinstance(value, str) else ""))
    except ValueError:
        raise ValueError(f"must be an IPv4 address like 192.168.1.255, got {value!r}") from None


def _domain_type(value: Any) -> str:
    if value not in DOMAIN_TYPES:
        raise ValueError(f"must be one of {', '.join(DOMAIN_TYPES)}, got {value!r}")
    return str(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"must be a list of strings, got {value!r}")
    return tuple(value)


def _argv(value: Any) -> tuple[str, ...]:
    argv = _strings(value)
    if not argv:
        raise ValueError('must name a command as a list, like ["poweroff"]')
    return argv


def _tags(value: Any) -> tuple[str, ...]:
    tags = _strings(value)
    for tag in tags:
        if not HOST_NAME.fullmatch(tag):
            raise ValueError(f"tag {tag!r}: letters, digits, '.', '_' and '-' only")
    return tags


def _paths(value: Any) -> tuple[str, ...]:
    return tuple(os.path.expanduser(p) for p in _strings(value))


def _ssh_config(value: Any) -> str:
    text = _text(value)
    return text if text == "none" else os.path.expanduser(text)


NETWORK = re.compile(r"^(user|none|(network|bridge):[A-Za-z0-9_.-]+)$")


def check_network(value: Any) -> str:
    """A guest network setting, checked: "network:NAME", "bridge:NAME", "user" or "none"."""
    if not isinstance(value, str) or not NETWORK.fullmatch(value):
        raise ValueError(f'must be "network:NAME", "bridge:NAME", "user" or "none", got {value!r}')
    return value


def _uri(value: Any) -> str:
    text = _text(value)
    if ":" not in text:
        raise ValueError(f"must be a libvirt URI like test:///path/node.xml, got {text!r}")
    return text


# key in hosts.toml -> (HostSpec field, checker)
_HOST_KEYS: dict[str, tuple[str, Checker]] = {
    "address": ("address", _address),
    "user": ("user", _user),
    "port": ("port", _port),
    "mac": ("mac", _mac),
    "tags": ("tags", _tags),
    "domain_type": ("domain_type", _domain_type),
    "image_dir": ("image_dir", _absolute_path),
    "storage_pool": ("storage_pool", _text),
    "shared_storage": ("shared_storage", _bool),
    "reserve_memory": ("reserve_memory", _size),
    "reserve_cpus": ("reserve_cpus", _count),
    "cpu_ratio": ("cpu_ratio", _ratio),
    "cpus": ("cpus", _positive_int),
    "memory": ("memory", _size),
    "uri": ("uri", _uri),
    "libvirt_socket": ("libvirt_socket", _absolute_path),
    "tcp_timeout": ("tcp_timeout", _seconds),
    "connect_timeout": ("connect_timeout", _seconds),
    "command_timeout": ("command_timeout", _seconds),
    "identity_file": ("identity_files", _paths),
    "identities_only": ("identities_only", _bool),
    "known_hosts": ("known_hosts", _path),
    "ssh_config": ("ssh_config", _ssh_config),
    "power_off_command": ("power_off_command", _argv),
    "wol_address": ("wol_address", _ipv4),
    "wol_port": ("wol_port", _port),
    "network": ("network", check_network),
}
# Keys that make no sense shared by every host.
_PER_HOST_ONLY = {"address", "mac", "uri"}
