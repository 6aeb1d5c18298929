"""mclu's own templates: one TOML file each in a templates directory.

A template names the virt-builder template it starts from and the defaults of a guest
built from it. `parse` is pure and checks everything; `load` reads a directory.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mclu import errors, model, sizes
from mclu.config import fields, inventory
from mclu.decide import cloudinit, readiness

ENV_VAR = "MCLU_TEMPLATES"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
DISK_BUSES = ("virtio", "scsi", "sata", "ide")
_KEYS = {
    "description",
    "base",
    "size",
    "memory",
    "vcpus",
    "disk_bus",
    "network",
    "full_copy",
    "customize",
    "ready",
    "ready_timeout",
    "autostart",
    "personalise",
}
MAX_READY_TIMEOUT = 24 * 3600.0


@dataclass(frozen=True)
class Template:
    """An mclu template: a virt-builder base plus a guest's defaults."""

    name: str
    path: str
    base: str
    description: str = ""
    size: int | None = None  # None: the base image's own size
    memory: int = 512 << 20
    vcpus: int = 1
    disk_bus: str = "virtio"
    network: str | None = None  # None: the host's network
    full_copy: bool = False
    customization: model.Customization = field(default_factory=model.Customization)
    ready: str | None = None  # a readiness rule (`mclu.decide.readiness`); None: detected
    ready_timeout: float | None = None  # seconds; None: mclu's default
    autostart: bool = True
    personalise: str = cloudinit.LIBGUESTFS  # or cloudinit.CLOUD_INIT: a NoCloud seed


def locate(explicit: str | None, environ: Mapping[str, str]) -> Path:
    """The templates directory: --templates, then $MCLU_TEMPLATES, then the project's own."""
    if explicit:
        return Path(explicit).expanduser()
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR]).expanduser()
    user_dir = Path("~/.config/mclu/templates").expanduser()
    if user_dir.is_dir():
        return user_dir
    return Path(__file__).resolve().parents[2] / "templates"


def load(directory: Path) -> dict[str, Template]:
    """Every `*.toml` in `directory`, by name; a missing directory is an empty catalogue."""
    if not directory.is_dir():
        return {}
    catalogue = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise errors.ConfigError(
                path=str(path), key=None, problem=f"cannot read: {e}"
            ) from None
        template = parse(path.stem, text, str(path))
        catalogue[template.name] = template
    return catalogue


def parse(name: str, text: str, path: str) -> Template:
    """Check one template file's text; raises ConfigError naming the file and key."""
    if not NAME.fullmatch(name):
        raise errors.ConfigError(
            path=path, key=None, problem="a template's file name is letters, digits, . _ -"
        )
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise errors.ConfigError(path=path, key=None, problem=f"not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise errors.ConfigError(
            path=path, key=None, problem="not valid TOML: nested too deeply"
        ) from None
    for key in doc:
        if key not in _KEYS:
            raise errors.ConfigError(
                path=path,
                key=inventory.quoted_key(key),
                problem=f"unknown key (known: {', '.join(sorted(_KEYS))})",
            )
    if "base" not in doc:
        raise errors.ConfigError(
            path=path, key="base", problem="missing: name the virt-builder template to start from"
        )
    try:
        fields = {_FIELD.get(k, k): _check(k, v) for k, v in doc.items()}
        return Template(name=name, path=path, **fields)
    except _Bad as e:
        raise errors.ConfigError(path=path, key=e.key, problem=e.problem) from None


class _Bad(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


def _check(key: str, value: Any) -> Any:
    try:
        return _CHECKS[key](value)
    except ValueError as e:
        raise _Bad(key, str(e)) from None


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def _base(value: Any) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValueError(
            f"must name a virt-builder template (letters, digits, '.', '_', '-'), got {value!r}"
        )
    return value


def _memory(value: Any) -> int:
    memory = sizes.parse(value)
    if not fields.MIN_MEMORY <= memory <= fields.MAX_MEMORY:
        raise ValueError(
            f"must be from {sizes.human(fields.MIN_MEMORY)} to "
            f"{sizes.human(fields.MAX_MEMORY)}, got {value!r}"
        )
    return memory


def _disk_size(value: Any) -> int:
    size = sizes.parse(value)
    if not 0 < size <= fields.MAX_DISK:
        raise ValueError(
            f"must be more than 0 and at most {sizes.human(fields.MAX_DISK)}, got {value!r}"
        )
    return size


def _vcpus(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= fields.MAX_VCPUS:
        raise ValueError(f"must be a whole number from 1 to {fields.MAX_VCPUS}, got {value!r}")
    return value


def _disk_bus(value: Any) -> str:
    if value not in DISK_BUSES:
        raise ValueError(f"must be one of {', '.join(DISK_BUSES)}, got {value!r}")
    return str(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _ready(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (console:REGEX, agent, ssh or started), got {value!r}")
    readiness.parse(value)
    return value


def _ready_timeout(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= MAX_READY_TIMEOUT
    ):
        raise ValueError(
            f"must be seconds, more than 0 and at most {MAX_READY_TIMEOUT:g}, got {value!r}"
        )
    return float(value)


def _personalise(value: Any) -> str:
    if value not in cloudinit.PERSONALISERS:
        raise ValueError(
            f"must be {' or '.join(repr(p) for p in cloudinit.PERSONALISERS)}, got {value!r}"
        )
    return str(value)


def _customize(value: Any) -> model.Customization:
    if not isinstance(value, dict):
        raise ValueError("must be a table of packages, files, run, firstboot")
    unknown = set(value) - {"packages", "files", "run", "firstboot"}
    if unknown:
        raise ValueError(
            f"unknown step {sorted(unknown)[0]!r} (known: files, firstboot, packages, run)"
        )
    files = value.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and k.startswith("/") and isinstance(v, str) for k, v in files.items()
    ):
        raise ValueError("files must be a table of absolute guest paths to contents")
    return model.Customization(
        packages=_strings("packages", value.get("packages", [])),
        files=tuple(sorted(files.items())),
        run=_strings("run", value.get("run", [])),
        firstboot=_strings("firstboot", value.get("firstboot", [])),
    )


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a list of non-empty strings")
    return tuple(value)


# TOML key → Template field, where they differ.
_FIELD = {"customize": "customization"}

_CHECKS = {
    "description": _string,
    "base": _base,
    "size": _disk_size,
    "memory": _memory,
    "vcpus": _vcpus,
    "disk_bus": _disk_bus,
    "network": inventory.check_network,
    "full_copy": _bool,
    "customize": _customize,
    "ready": _ready,
    "ready_timeout": _ready_timeout,
    "autostart": _bool,
    "personalise": _personalise,
}
