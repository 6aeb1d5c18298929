"""When a guest counts as ready, and waiting until it is.

"Started" only says that libvirt started QEMU; a guest whose kernel panics is started too.
A guest is ready when it shows that it booted, by one of these rules (a template's `ready`):

- `console:REGEX`: a line of its serial console (logged on its host by virtlogd, emptied at
  each boot) matches the Python regular expression, e.g. `console:login:` for a getty;
- `agent`: the QEMU guest agent in it answers a ping (mclu's guests have the agent channel);
- `ssh`: its ssh server, asked from its host at the guest's address, presents one of the host
  keys mclu generated for it (recorded in its metadata): sshd is up, and it is this guest;
- `started`: QEMU runs, for guests that show nothing.

Without a rule, the strongest check the guest supports, as personalisation found it in its
disk (`model.GuestTraits`): `ssh` for a guest with an ssh server, host keys mclu gave it and a
NIC where its host can find its address (a bridge or a libvirt network, not QEMU's user
networking), else the agent, else a serial login prompt, else `started`. A rule the template
declares is used as it is: nothing weaker replaces it.

Pure: rules and the reading of a console log. `mclu.act.waiting` looks at the hosts.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mclu import model

# TCG guests here boot in 6 s (busybox) to 30 s (Debian with systemd), several times that
# while other guests boot on the same 2 cores; KVM guests on real hosts in 5-30 s. Five
# minutes leaves room for both, and for a first boot that grows its filesystem.
DEFAULT_TIMEOUT = 300.0

# A getty's prompt, "web1 login: " (busybox, agetty): detected serial consoles wait for it.
LOGIN_PROMPT = "login:"
# The kernel's last words: no need to wait out the timeout once they are on the console.
_PANIC = re.compile(r"Kernel panic - not syncing.*")
# Terminal control sequences and the carriage returns of a serial line.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|[\x00-\x08\x0b-\x1f\x7f]")


class Kind(enum.StrEnum):
    STARTED = "started"
    CONSOLE = "console"
    AGENT = "agent"
    SSH = "ssh"


_STRENGTH = {Kind.STARTED: 0, Kind.CONSOLE: 1, Kind.AGENT: 2, Kind.SSH: 3}


@dataclass(frozen=True)
class Rule:
    """How a guest shows it booted."""

    kind: Kind
    pattern: str = ""  # console: a Python regular expression, searched line by line

    def __str__(self) -> str:
        return f"{self.kind}:{self.pattern}" if self.kind is Kind.CONSOLE else str(self.kind)

    @property
    def strength(self) -> int:
        return _STRENGTH[self.kind]

    def describe(self) -> str:
        """The rule in words, for messages: what the guest has to do."""
        if self.kind is Kind.CONSOLE:
            return f"a console line matching {self.pattern!r}"
        if self.kind is Kind.AGENT:
            return "an answer from its guest agent"
        if self.kind is Kind.SSH:
            return "its ssh server presenting a host key mclu gave it"
        return "QEMU started"


STARTED = Rule(Kind.STARTED)
AGENT = Rule(Kind.AGENT)
SSH = Rule(Kind.SSH)
LOGIN = Rule(Kind.CONSOLE, LOGIN_PROMPT)


def parse(text: str) -> Rule:
    """`started`, `agent`, `ssh` or `console:REGEX`; raises ValueError saying what is wrong."""
    kind, colon, pattern = text.partition(":")
    if kind == Kind.CONSOLE and colon:
        if not pattern:
            raise ValueError(
                "console: needs a regular expression after the colon, e.g. console:login:"
            )
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"console: {pattern!r} is not a regular expression: {e}") from None
        return Rule(Kind.CONSOLE, pattern)
    if not colon and kind in (Kind.STARTED, Kind.AGENT, Kind.SSH):
        return Rule(Kind(kind))
    raise ValueError(f"unknown readiness rule {text!r}: use console:REGEX, agent, ssh or started")


def recorded(text: str) -> Rule:
    """The rule a guest's metadata says it passed; `started` when it says none (guests built
    before readiness, or with --no-wait) or one mclu cannot read (edited by hand)."""
    try:
        return parse(text) if text else STARTED
    except ValueError:
        return STARTED


def addressable(networks: Sequence[str]) -> bool:
    """Whether a guest on these NICs (`GuestSpec.network` words) has an address its host can
    find and reach: on a bridge or a libvirt network; QEMU's user networking hides it."""
    return any(n.startswith(("bridge:", "network:")) for n in networks)


def detected(traits: model.GuestTraits | None, networks: Sequence[str] = ()) -> Rule:
    """The strongest rule a guest with these traits, on these NICs, supports: ssh needs a
    server, the host keys mclu gave it (what the rule checks) and an address."""
    if traits is not None and traits.ssh_server and traits.host_keys and addressable(networks):
        return SSH
    if traits is not None and traits.agent:
        return AGENT
    if traits is not None and traits.serial_login:
        return LOGIN
    return STARTED


@dataclass(frozen=True)
class Choice:
    rule: Rule
    declared: bool  # the template's own rule, not one detected in the disk


def choose(
    declared: str | None, traits: model.GuestTraits | None, networks: Sequence[str] = ()
) -> Choice:
    """The template's rule when it has one, else the strongest the guest (with its NICs on
    `networks`) supports."""
    if declared:
        return Choice(parse(declared), declared=True)
    return Choice(detected(traits, networks), declared=False)


# --- the console, read (pure) -----------------------------------------------------------------


def timeout_for(template: model.ResolvedTemplate, given: float | None) -> float:
    """The command line's timeout, else the template's, else mclu's default."""
    if given is not None:
        return given
    return template.ready_timeout or DEFAULT_TIMEOUT


def console_lines(text: str) -> list[str]:
    """The log's lines as a person reads them: control sequences gone, blank lines dropped."""
    clean = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return [line.rstrip() for line in clean.split("\n") if line.strip()]


def console_matches(rule: Rule, text: str) -> bool:
    """Whether a line of the console log matches the console rule."""
    pattern = re.compile(rule.pattern)
    return any(pattern.search(line) for line in console_lines(text))


def panicked(text: str) -> str | None:
    """The kernel's panic line, when the console shows one."""
    found = _PANIC.search(_CONTROL.sub("", text))
    return found.group(0).strip() if found else None


# --- ssh: the key the guest's server presents (pure) -------------------------------------------


def presented_keys(keyscan_output: str) -> tuple[str, ...]:
    """The host keys `ssh-keyscan` printed (its `HOST TYPE BASE64` lines; `#` comments left
    out), as "TYPE BASE64", the form of `GuestMeta.host_keys`."""
    keys = []
    for line in keyscan_output.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            keys.append(f"{fields[1]} {fields[2]}")
    return tuple(keys)


_KEYSCAN_TYPES = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa"}


def keyscan_types(recorded: Sequence[str]) -> tuple[str, ...]:
    """The key types to ask a guest's server for: ed25519 alone when mclu recorded one (one
    cheap key exchange: a TCG guest takes seconds per exchange), else every recorded type."""
    types = {_KEYSCAN_TYPES.get(k.split()[0], "ecdsa") for k in recorded if k.split()}
    return ("ed25519",) if "ed25519" in types else tuple(sorted(types))


def ssh_verdict(presented: Sequence[str], recorded: Sequence[str]) -> str | None:
    """None when the server presents a key mclu gave the guest; else why it does not count."""
    if not recorded:
        return "mclu recorded no ssh host keys for it"
    if not presented:
        return "no ssh server answered"
    if set(presented) & set(recorded):
        return None
    return "its ssh server presents another host key than mclu gave it"
