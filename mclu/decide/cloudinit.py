"""Personalisation by cloud-init: what a guest's NoCloud seed says, and how such a guest
shows it is ready.

A template with `personalise = "cloud-init"` is not opened in the libguestfs appliance: mclu
writes a NoCloud seed instead (an ISO 9660 volume labelled `cidata` holding `meta-data` and
`user-data`, made by `mclu.images.seed`), attaches it to the guest as a read-only CD-ROM and
boots; cloud-init in the guest finds the volume by its label and applies it
(https://cloudinit.readthedocs.io/en/latest/reference/datasources/nocloud.html). The seed
carries the ssh host keys mclu generated (`ssh_keys`, the guest's own deleted first), so the
keys recorded in its metadata, the `ssh` readiness rule and `mclu ssh` work as for a guest
personalised by libguestfs.

Pure: the seed's two documents rendered from data, the user's own `--user-data` checked and
merged, and the readiness rules.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from mclu import errors, model
from mclu.decide import readiness

LIBGUESTFS = "libguestfs"
CLOUD_INIT = "cloud-init"
PERSONALISERS = (LIBGUESTFS, CLOUD_INIT)  # a template's `personalise`, the first the default

VOLUME_ID = "cidata"  # the label NoCloud looks for
META_DATA = "meta-data"
USER_DATA = "user-data"
CLOUD_CONFIG = "#cloud-config"  # the first line cloud-init reads user-data as cloud-config by

# cloud-init's last word on the console, from its final stage (cc_final_message), e.g.
# "Cloud-init v. 22.4.2 finished at Sun, 29 Nov 2026 12:00:00 +0000. Datasource
# DataSourceNoCloud [seed=/dev/sr0][dsmode=net].  Up 45.10 seconds" (journald may prefix
# "[   45.1] cloud-init[512]: "): searched, not anchored.
FINISHED_PATTERN = r"Cloud-init v\. \S+ finished at"
FINISHED = readiness.Rule(readiness.Kind.CONSOLE, FINISHED_PATTERN)

# The keys mclu sets for the guest's identity: a user-data file that sets them would break
# what mclu records of the guest (its name, its host keys), so it is refused.
OWNED_KEYS = (
    "hostname",
    "fqdn",
    "preserve_hostname",
    "prefer_fqdn_over_hostname",
    "ssh_keys",
    "ssh_deletekeys",
    "ssh_genkeytypes",
    # mclu's guests are reached as root (`mclu ssh`); cloud-init's default would refuse it.
    "disable_root",
)

# Keys whose value mclu may give as a list (its items first, then the user's): the user's
# value must be a list too, or it would silently drop the template's packages, commands or
# files, or root's keys.
LIST_KEYS = ("packages", "runcmd", "write_files", "ssh_authorized_keys")

# ssh host key types as cloud-init's `ssh_keys` names them (`rsa_private`, `rsa_public`...).
HOST_KEY_TYPES = ("rsa", "ecdsa", "ed25519")


@dataclass(frozen=True)
class HostKey:
    """One ssh host key pair as ssh-keygen wrote it (OpenSSH formats)."""

    kind: str  # "rsa", "ecdsa" or "ed25519"
    private: str
    public: str  # "ssh-ed25519 AAAA... root@web1"


@dataclass(frozen=True)
class Seed:
    """What one guest's NoCloud seed gives it."""

    hostname: str
    instance_id: str  # new for every disk: cloud-init runs its per-instance modules once per id
    authorized_keys: tuple[str, ...] = ()  # root's
    password_hash: str | None = None  # root's, crypt(3) ("$6$...")
    host_keys: tuple[HostKey, ...] = ()
    customization: model.Customization = field(default_factory=model.Customization)
    user_data: Mapping[str, Any] = field(default_factory=dict)  # the user's own, checked


def uses_cloud_init(template: model.ResolvedTemplate) -> bool:
    return template.personalise == CLOUD_INIT


def meta_data(seed: Seed) -> str:
    """The seed's `meta-data` document."""
    return _dump({"instance-id": seed.instance_id, "local-hostname": seed.hostname})


def user_data(seed: Seed) -> str:
    """The seed's `user-data` document: `#cloud-config`, mclu's settings with the user's
    own merged in (`merge`)."""
    return f"{CLOUD_CONFIG}\n{_dump(merge(cloud_config(seed), seed.user_data))}"


def cloud_config(seed: Seed) -> dict[str, Any]:
    """mclu's own cloud-config for the guest, before the user's is merged in."""
    c = seed.customization
    config: dict[str, Any] = {
        "hostname": seed.hostname,
        "preserve_hostname": False,
        "manage_etc_hosts": True,
        # Root's keys as given, without the "log in as the default user" prefix cloud-init
        # puts before them otherwise: mclu's guests are reached as root (`mclu ssh`).
        "disable_root": False,
    }
    if seed.authorized_keys:
        config["ssh_authorized_keys"] = list(seed.authorized_keys)
    if seed.password_hash:
        config["chpasswd"] = {
            "expire": False,
            "users": [{"name": "root", "password": seed.password_hash, "type": "hash"}],
        }
    if seed.host_keys:
        # The keys mclu recorded replace whatever the image carries; given ssh_keys, cc_ssh
        # generates none (and `ssh_genkeytypes: []` fails cloud-init 22.4's schema: too short).
        config["ssh_deletekeys"] = True
        config["ssh_keys"] = {
            f"{key.kind}_{half}": text
            for key in seed.host_keys
            for half, text in (("private", key.private), ("public", key.public))
        }
        # mclu records these keys (the guest's metadata, `mclu ssh`'s known hosts): printing
        # their fingerprints on the console as well (cc_keys_to_console) adds nothing, and
        # its ssh-keygen calls cost the first boot 0.9-1.5 s on the sandbox's emulated CPU,
        # in the final stage, which readiness waits for. A user's `ssh` table can turn it on.
        config["ssh"] = {"emit_keys_to_console": False}
    if c.packages:
        config["packages"] = list(c.packages)
    if c.files:
        config["write_files"] = [{"path": path, "content": text} for path, text in c.files]
    # Build-time commands and first-boot commands alike run at the first boot here.
    if c.run or c.firstboot:
        config["runcmd"] = [*c.run, *c.firstboot]
    return config


def merge(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any]:
    """The user's cloud-config over mclu's: a list the two share is mclu's items then the
    user's (packages, runcmd, write_files, ssh_authorized_keys...), a table they share is
    merged the same way at every depth (chpasswd's users: root's hash, then the user's), any
    other key is the user's. The user's data is checked first (`parse_user_data`)."""
    merged = copy.deepcopy(dict(ours))
    for key, value in theirs.items():
        mine = merged.get(key)
        if isinstance(mine, list) and isinstance(value, list):
            merged[key] = [*mine, *copy.deepcopy(value)]
        elif isinstance(mine, dict) and isinstance(value, dict):
            merged[key] = merge(mine, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_user_data(text: str, path: str) -> dict[str, Any]:
    """The user's `--user-data FILE`: a `#cloud-config` YAML table, none of mclu's own keys
    (OWNED_KEYS). Raises UsageError naming the file and what is wrong with it."""
    first = text.lstrip("\ufeff").split("\n", 1)[0].rstrip()
    if first != CLOUD_CONFIG:
        raise errors.UsageError(
            f"--user-data {path}: not cloud-config (its first line must be {CLOUD_CONFIG}; "
            "scripts and MIME multi-part are not merged)"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise errors.UsageError(f"--user-data {path}: not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise errors.UsageError(f"--user-data {path}: not a table of cloud-config keys")
    owned = [k for k in data if k in OWNED_KEYS]
    if owned:
        raise errors.UsageError(
            f"--user-data {path}: sets {owned[0]}, which mclu sets itself (the guest's name "
            "and the ssh host keys it records)"
        )
    for key in LIST_KEYS:
        if key in data and not isinstance(data[key], list):
            raise errors.UsageError(
                f"--user-data {path}: {key} is not a list (mclu adds its items to the "
                "template's: write it as a YAML list)"
            )
    if "chpasswd" in data and not isinstance(data["chpasswd"], dict):
        raise errors.UsageError(f"--user-data {path}: chpasswd is not a table")
    users = data.get("chpasswd", {}).get("users")
    if users is not None and not isinstance(users, list):
        raise errors.UsageError(f"--user-data {path}: chpasswd's users is not a list")
    return data


def rules(declared: str | None) -> tuple[readiness.Rule, ...]:
    """What a guest personalised by cloud-init must show, in order: cloud-init finished on
    its console, then the template's own rule when it has one (e.g. `ssh`)."""
    if not declared:
        return (FINISHED,)
    own = readiness.parse(declared)
    return (FINISHED,) if own == FINISHED else (FINISHED, own)


def again(rule: readiness.Rule) -> readiness.Rule:
    """The rule a guest that passed `rule` once is checked by when it boots again (a rebuild
    rolled back starts the old disk again): cloud-init's final line is printed by the boot
    that applies a seed, and the seed is gone by then, so such a guest is waited for as
    started; any other rule as it is."""
    return readiness.STARTED if rule == FINISHED else rule


def public_host_keys(keys: Sequence[HostKey]) -> tuple[str, ...]:
    """The keys as `GuestMeta.host_keys` records them: "TYPE BASE64", no comment, in the
    order of their file names in /etc/ssh (ecdsa, ed25519, rsa), as libguestfs's path has it."""
    found = []
    for key in sorted(keys, key=lambda k: k.kind):
        fields = key.public.split()
        if len(fields) >= 2:
            found.append(f"{fields[0]} {fields[1]}")
    return tuple(found)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (private keys, file contents) as literal blocks."""


def _literal(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _literal)


def _dump(data: Mapping[str, Any]) -> str:
    return yaml.dump(
        dict(data), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
