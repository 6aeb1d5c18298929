"""mclu's errors: one class per failure a user can meet, each with fields and a message.

Foreign errors (libvirt, asyncssh, OSError) are translated into these at the boundary
(`mclu.hosts`); nothing above it sees them. Only the CLI turns an error into text and an
exit code: `str(error)` is the one line it prints.
"""

from __future__ import annotations

from collections.abc import Sequence

# Exit codes, documented in docs/cli.md.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 75  # sysexits' EX_TEMPFAIL: another mclu run works on it; try again later
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # 128 + SIGTERM


def last_lines(text: str, empty: str, count: int = 3) -> str:
    """A program's last non-blank output lines joined into one: enough to say why it failed."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-count:]) if lines else empty


class MCLUError(Exception):
    """Root of every error mclu reports to its user."""

    msg = "{self.detail}"
    exit_code = EXIT_FAILED

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return self.msg.format(self=self)


class UsageError(MCLUError):
    """The command line asks for something impossible."""

    exit_code = EXIT_USAGE


class Interrupted(MCLUError):
    """Ctrl-C: the command stopped, and undid what it was making."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self) -> None:
        super().__init__("interrupted")


class Terminated(MCLUError):
    """SIGTERM: as Ctrl-C."""

    exit_code = EXIT_TERMINATED

    def __init__(self) -> None:
        super().__init__("terminated")


class ConfigError(MCLUError):
    """A configuration file (inventory, template) is missing or wrong."""

    msg = "{self.path}: {self.where}{self.problem}"
    exit_code = EXIT_USAGE

    def __init__(self, *, path: str, key: str | None, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.key = key
        self.problem = problem

    @property
    def where(self) -> str:
        return f"{self.key}: " if self.key else ""


# --- A host that could not be asked -------------------------------------------------------
# Each carries `state`, the word `mclu status` shows for the host.


class HostError(MCLUError):
    """A host failed; `state` is how `mclu status` shows it."""

    msg = "{self.host}: {self.detail}"
    state = "error"

    def __init__(self, *, host: str, detail: str = "") -> None:
        super().__init__(detail)
        self.host = host


class HostUnreachable(HostError):
    """No ssh connection could be made: the host is off, or the network does not reach it."""

    msg = "{self.host}: unreachable at {self.address}: {self.reason}"
    state = "off"

    def __init__(self, *, host: str, address: str, reason: str) -> None:
        super().__init__(host=host, detail=reason)
        self.address = address
        self.reason = reason


class HostAuthFailed(HostError):
    """sshd refused every key or method offered."""

    msg = "{self.host}: ssh refused {self.user}@{self.address}: {self.reason}"
    state = "auth failed"

    def __init__(self, *, host: str, user: str, address: str, reason: str) -> None:
        super().__init__(host=host, detail=reason)
        self.user = user
        self.address = address
        self.reason = reason


class HostKeyUnknown(HostError):
    """The host's ssh key is not in known_hosts: refused until the user accepts it."""

    msg = (
        "{self.host}: host key of {self.address} is not known; check it, then accept it with "
        "`ssh {self.port_flag}{self.address} true` or add it to {self.known_hosts}"
    )
    state = "host key unknown"

    def __init__(self, *, host: str, address: str, port: int, known_hosts: str) -> None:
        super().__init__(host=host)
        self.address = address
        self.port = port
        self.known_hosts = known_hosts

    @property
    def port_flag(self) -> str:
        return "" if self.port == 22 else f"-p {self.port} "


class HostKeyChanged(HostError):
    """The host offered a key other than the one known_hosts holds for it."""

    msg = (
        "{self.host}: HOST KEY CHANGED for {self.address}; someone may be intercepting the "
        "connection. If the host was reinstalled, remove the old key with "
        "`ssh-keygen -f {self.known_hosts} -R {self.known_name}` and accept the new one"
    )
    state = "host key changed"

    def __init__(self, *, host: str, address: str, port: int, known_hosts: str) -> None:
        super().__init__(host=host)
        self.address = address
        self.port = port
        self.known_hosts = known_hosts

    @property
    def known_name(self) -> str:
        return self.address if self.port == 22 else f"'[{self.address}]:{self.port}'"


class LibvirtUnavailable(HostError):
    """ssh works but libvirtd does not answer on the host."""

    msg = "{self.host}: libvirt is not answering: {self.reason}"
    state = "libvirt down"

    def __init__(self, *, host: str, reason: str) -> None:
        super().__init__(host=host, detail=reason)
        self.reason = reason


class HostTimeout(HostError):
    """A host took longer than its bounded time to answer."""

    msg = "{self.host}: no answer to {self.what} within {self.seconds:g} s"
    state = "timeout"

    def __init__(self, *, host: str, what: str, seconds: float) -> None:
        super().__init__(host=host, detail=what)
        self.what = what
        self.seconds = seconds


class SameMachine(HostError):
    """Two inventory entries reach one libvirt host (the same host UUID): the later entry is
    left out, so that placement does not count the machine twice."""

    msg = (
        "{self.host}: the same machine as {self.first} (libvirt host UUID {self.uuid}): "
        "one inventory entry per host"
    )
    state = "duplicate"

    def __init__(self, *, host: str, first: str, uuid: str) -> None:
        super().__init__(host=host, detail=f"same machine as {first}")
        self.first = first
        self.uuid = uuid


class HostCommandFailed(HostError):
    """A command run on the host over ssh exited non-zero."""

    msg = "{self.host}: `{self.command}` failed with exit status {self.exit_status}: {self.stderr}"

    def __init__(self, *, host: str, command: str, exit_status: int | None, stderr: str) -> None:
        super().__init__(host=host, detail=stderr)
        self.command = command
        self.exit_status = exit_status
        self.stderr = last_lines(stderr, "(no error output)")


class LibvirtCallFailed(HostError):
    """A libvirt call on a reachable host failed."""

    msg = "{self.host}: {self.what}: {self.reason}"

    def __init__(self, *, host: str, what: str, reason: str) -> None:
        super().__init__(host=host, detail=reason)
        self.what = what
        self.reason = reason


class GuestInactive(LibvirtCallFailed):
    """A call that needs a running guest (destroy, shutdown, reboot, migrate) found it not
    running: libvirt's VIR_ERR_OPERATION_INVALID "domain is not running". Its own class so
    that a caller for whom "already off" is fine suppresses this and not every refusal."""

    def __init__(self, *, host: str, what: str, reason: str, name: str) -> None:
        super().__init__(host=host, what=what, reason=reason)
        self.name = name


class Unsupported(HostError):
    """The host's session cannot do this (for example a shell command on libvirt's test driver)."""

    msg = "{self.host}: {self.what} is not supported by this host's connection ({self.uri})"

    def __init__(self, *, host: str, what: str, uri: str) -> None:
        super().__init__(host=host, detail=what)
        self.what = what
        self.uri = uri


# --- Guests ----------------------------------------------------------------------------------


class GuestNotFound(MCLUError):
    """No reachable host has a guest of that name."""

    msg = "no guest named {self.name!r}{self.where}"

    def __init__(
        self, *, name: str, host: str | None = None, unreachable: Sequence[str] = ()
    ) -> None:
        super().__init__(name)
        self.name = name
        self.host = host
        self.unreachable = tuple(unreachable)

    @property
    def where(self) -> str:
        text = f" on {self.host}" if self.host else ""
        if self.unreachable:
            # They were asked: the guest may be on one of them.
            text += f" ({', '.join(self.unreachable)} did not answer: it may be there)"
        return text


class GuestAmbiguous(MCLUError):
    """Two or more hosts have a guest of that name: the user must say which."""

    msg = "guest {self.name!r} exists on {self.host_list}; name it as HOST:{self.name}"

    def __init__(self, *, name: str, hosts: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.hosts = tuple(hosts)

    @property
    def host_list(self) -> str:
        return " and ".join(self.hosts)


class GuestExists(MCLUError):
    """A guest of that name is already defined."""

    msg = "{self.host}: a guest named {self.name!r} already exists"

    def __init__(self, *, host: str, name: str) -> None:
        super().__init__(name)
        self.host = host
        self.name = name


class LockHeld(HostError):
    """A lock file on a host is held by another process (`Session.lock`)."""

    msg = "{self.host}: {self.path} is held by {self.holder}"
    exit_code = EXIT_LOCKED

    def __init__(self, *, host: str, path: str, holder: str) -> None:
        super().__init__(host=host, detail=holder)
        self.path = path
        self.holder = holder or "another process"


class GuestLocked(MCLUError):
    """Another mclu run (this controller or another) works on the guest now."""

    msg = (
        "{self.host}: guest {self.name!r} is locked by {self.holder}; "
        "try again when that run has ended"
    )
    exit_code = EXIT_LOCKED

    def __init__(self, *, host: str, name: str, holder: str) -> None:
        super().__init__(name)
        self.host = host
        self.name = name
        self.holder = holder


class UnknownHost(MCLUError):
    """A command names a host the inventory does not have."""

    msg = "unknown host {self.name!r} (the inventory {self.path} has: {self.known})"
    exit_code = EXIT_USAGE

    def __init__(self, *, name: str, path: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.path = path
        self.known = ", ".join(known) or "none"


class UnknownTag(MCLUError):
    """A --tag no host of the inventory has: a typo would otherwise select nothing, silently."""

    msg = "unknown tag {self.tag!r} (the hosts of {self.path} have: {self.known})"
    exit_code = EXIT_USAGE

    def __init__(self, *, tag: str, path: str, known: Sequence[str]) -> None:
        super().__init__(tag)
        self.tag = tag
        self.path = path
        self.known = ", ".join(known) or "no tags"


# --- Templates -------------------------------------------------------------------------------


class UnknownTemplate(MCLUError):
    """No mclu template and no repository template has that name."""

    msg = "unknown template {self.name!r}{self.hint}"
    exit_code = EXIT_USAGE

    def __init__(self, *, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = tuple(known)

    @property
    def hint(self) -> str:
        if not self.known:
            return " (no template sources answered; see `mclu templates`)"
        shown = ", ".join(self.known[:12]) + (", ..." if len(self.known) > 12 else "")
        return f" (known: {shown})"


class UnknownRevision(MCLUError):
    """No repository that answered lists the template at the revision asked for."""

    msg = "template {self.name} has no revision {self.revision} (listed: {self.listed_text})"

    def __init__(self, *, name: str, revision: int, listed: Sequence[int]) -> None:
        super().__init__(name)
        self.name = name
        self.revision = revision
        self.listed = tuple(listed)

    @property
    def listed_text(self) -> str:
        return ", ".join(f"r{r}" for r in self.listed) or "none"


class SourceUnavailable(MCLUError):
    """A template repository's index or image could not be fetched."""

    msg = "cannot fetch {self.uri}: {self.reason}"

    def __init__(self, *, uri: str, reason: str) -> None:
        super().__init__(reason)
        self.uri = uri
        self.reason = reason


class SignatureInvalid(MCLUError):
    """A repository index that must be signed is not signed by the repository's key."""

    msg = "template source {self.source}: {self.uri}: {self.reason} (gpgkey configured)"

    def __init__(self, *, source: str, uri: str, reason: str) -> None:
        super().__init__(reason)
        self.source = source
        self.uri = uri
        self.reason = reason


class ChecksumMismatch(MCLUError):
    """A downloaded template image does not match its index's sha512."""

    msg = "{self.uri}: sha512 mismatch (index says {self.expected:.16}..., got {self.got:.16}...)"

    def __init__(self, *, uri: str, expected: str, got: str) -> None:
        super().__init__(uri)
        self.uri = uri
        self.expected = expected
        self.got = got


# --- Building guests: the request, and room on the hosts -------------------------------------


class InvalidGuestName(MCLUError):
    """A new guest's name that libvirt, a file name or a shell could misread."""

    msg = (
        "invalid guest name {self.name!r}: use 1 to 63 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )
    exit_code = EXIT_USAGE

    def __init__(self, *, name: str) -> None:
        super().__init__(name)
        self.name = name


class DuplicateGuestName(MCLUError):
    """One request names the same new guest twice."""

    msg = "guest name {self.name!r} is given more than once"
    exit_code = EXIT_USAGE

    def __init__(self, *, name: str) -> None:
        super().__init__(name)
        self.name = name


class InvalidBuildOption(MCLUError):
    """A build option (--size, --memory, --vcpus, --transport) out of its range."""

    msg = "--{self.option} {self.value}: {self.problem}"
    exit_code = EXIT_USAGE

    def __init__(self, *, option: str, value: str, problem: str) -> None:
        super().__init__(problem)
        self.option = option
        self.value = value
        self.problem = problem


class HostTooSmall(MCLUError):
    """The host a guest is pinned to lacks room for it; `shortfalls` say what is short."""

    msg = "{self.host}: no room for {self.guest}: needs {self.short}"

    def __init__(self, *, host: str, guest: str, shortfalls: Sequence[str]) -> None:
        super().__init__(host)
        self.host = host
        self.guest = guest
        self.shortfalls = tuple(shortfalls)

    @property
    def short(self) -> str:
        return "; ".join(self.shortfalls)


class NoCapacity(MCLUError):
    """No host that answered can take a guest (room, its network, a file in the way...); `rejected`
    is (host, why) per host."""

    msg = "no host can take {self.guest} ({self.need}): {self.reasons}{self.unasked}"

    def __init__(
        self,
        *,
        guest: str,
        need: str,
        rejected: Sequence[tuple[str, str]],
        unreachable: Sequence[str] = (),
    ) -> None:
        super().__init__(guest)
        self.guest = guest
        self.need = need
        self.rejected = tuple(rejected)
        self.unreachable = tuple(unreachable)

    @property
    def reasons(self) -> str:
        return " / ".join(f"{host}: {why}" for host, why in self.rejected) or "no hosts answered"

    @property
    def unasked(self) -> str:
        if not self.unreachable:
            return ""
        return f" (not asked: {', '.join(self.unreachable)} did not answer)"


class NetworkMissing(MCLUError):
    """The host lacks the network a guest's NIC names: `network` is "network:NAME" (an active
    libvirt network) or "bridge:NAME"; `networks` and `bridges` are what the host has (None:
    it could not say)."""

    msg = "{self.host}: {self.lack}: set network in hosts.toml or the template"

    def __init__(
        self,
        *,
        host: str,
        network: str,
        networks: Sequence[str] | None,
        bridges: Sequence[str] | None,
    ) -> None:
        super().__init__(host)
        self.host = host
        self.network = network
        self.networks = None if networks is None else tuple(networks)
        self.bridges = None if bridges is None else tuple(bridges)

    @property
    def lack(self) -> str:
        """What is missing and what the host has, without the host: placement's reason."""
        kind, _, name = self.network.partition(":")
        networks, bridges = _listed(self.networks), _listed(self.bridges)
        if kind == "bridge":
            return f"no bridge '{name}' (has: {bridges}; libvirt networks: {networks})"
        return f"no libvirt network '{name}' active (has: {networks}; bridges: {bridges})"


def _listed(names: Sequence[str] | None) -> str:
    if names is None:
        return "unknown"
    return ", ".join(names) or "none"


class DiskNameTaken(MCLUError):
    """A file on the host already has the name the new guest's disk would get."""

    msg = "{self.host}: a file already has the new disk's name: {self.path}"

    def __init__(self, *, host: str, path: str) -> None:
        super().__init__(host)
        self.host = host
        self.path = path

    @property
    def lack(self) -> str:
        """The refusal without the host: placement's reason."""
        return f"a file already has the new disk's name: {self.path}"


class NoAddressForSsh(MCLUError):
    """A template's `ready = "ssh"` on a host where the guest's network hides its address
    ("user", "none"): mclu could never find it to ask its ssh server, so it would wait for
    nothing until the timeout."""

    msg = "{self.host}: {self.lack}"
    exit_code = EXIT_USAGE

    def __init__(self, *, host: str, network: str) -> None:
        super().__init__(host)
        self.host = host
        self.network = network

    @property
    def lack(self) -> str:
        """The refusal without the host: placement's reason."""
        return (
            f'ready = "ssh" needs an address mclu can find, and the guest\'s network here is '
            f"{self.network}: set network (a bridge or libvirt network) or ready"
        )


# --- Building guests -------------------------------------------------------------------------


class PersonalizationFailed(MCLUError):
    """Personalising a new guest's disk (libguestfs on the controller) failed at one step.

    `guest` is the guest's hostname (all of them, comma-separated, for a step shared by one
    appliance such as its launch); `drive` says which disk (NBD socket or image path).
    The reason never holds a secret: passwords and private keys stay out of it.
    """

    msg = "{self.guest}: personalising the disk failed at {self.step}: {self.reason}"

    def __init__(self, *, guest: str, step: str, reason: str, drive: str = "") -> None:
        super().__init__(reason)
        self.guest = guest
        self.step = step
        self.drive = drive
        # libguestfs quotes a command's whole output: its last lines say why.
        self.reason = last_lines(reason, "(no reason given)")


# --- Tools and image transfers ---------------------------------------------------------------


class ToolMissing(HostCommandFailed):
    """A command needs a program the host does not have (the shell's exit status 127)."""

    msg = "{self.host}: `{self.tool}` is not installed on the host (needed by `{self.command}`)"

    def __init__(self, *, host: str, command: str, tool: str, stderr: str) -> None:
        super().__init__(host=host, command=command, exit_status=127, stderr=stderr)
        self.tool = tool


class LocalToolMissing(MCLUError):
    """A program mclu runs on this machine is not installed here."""

    msg = "`{self.tool}` is not installed on this machine (needed for {self.purpose})"

    def __init__(self, *, tool: str, purpose: str) -> None:
        super().__init__(tool)
        self.tool = tool
        self.purpose = purpose


class LocalCommandFailed(MCLUError):
    """A program mclu ran on this machine exited non-zero."""

    msg = "`{self.command}` failed with exit status {self.exit_status}: {self.stderr}"

    def __init__(self, *, command: str, exit_status: int, stderr: str) -> None:
        super().__init__(stderr)
        self.command = command
        self.exit_status = exit_status
        self.stderr = last_lines(stderr, "(no error output)")


class UnknownTransport(MCLUError, KeyError):
    """An image transport name mclu does not know."""

    msg = "unknown image transport {self.name!r} (known: {self.known})"
    exit_code = EXIT_USAGE

    def __init__(self, *, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = ", ".join(known)


class BuildFailed(MCLUError):
    """A build stopped at one step on one host; what it had made is removed."""

    msg = "build of {self.guest} failed at step '{self.step}' on {self.host}: {self.reason}"

    def __init__(self, *, guest: str, step: str, host: str, reason: str) -> None:
        super().__init__(reason)
        self.guest = guest
        self.step = step
        self.host = host
        self.reason = reason


# --- Host power (mclu on / mclu off) ---------------------------------------------------------


class NotReady(MCLUError):
    """A started guest did not show it booted (`mclu.decide.readiness`) in time, or gave up."""

    msg = "{self.host}: {self.name} did not become ready ({self.rule}): {self.reason}{self.quoted}"
    QUOTED = 4  # console lines quoted in the message; `console` keeps more

    def __init__(
        self,
        *,
        host: str,
        name: str,
        rule: str,
        reason: str,
        seconds: float,
        console: Sequence[str] = (),
    ) -> None:
        super().__init__(reason)
        self.host = host
        self.name = name
        self.rule = rule
        self.reason = reason
        self.seconds = seconds
        self.console = tuple(console)  # the last lines of its serial console

    @property
    def quoted(self) -> str:
        if not self.console:
            return "; its console showed nothing"
        return "; its console ends: " + " / ".join(self.console[-self.QUOTED :])


class NoMacAddress(MCLUError):
    """`mclu on` for a host whose inventory entry has no `mac`."""

    msg = (
        "{self.host}: no `mac` in {self.path}: wake-on-LAN needs the host's MAC address "
        '(add mac = "52:54:00:12:34:56" to [hosts.{self.host}])'
    )
    exit_code = EXIT_USAGE

    def __init__(self, *, host: str, path: str) -> None:
        super().__init__(host)
        self.host = host
        self.path = path


class WakeFailed(HostError):
    """The wake-on-LAN packet could not be sent (no route, bad address...)."""

    msg = (
        "{self.host}: cannot send the wake-on-LAN packet to {self.address}:{self.port}: "
        "{self.reason}"
    )

    def __init__(self, *, host: str, address: str, port: int, reason: str) -> None:
        super().__init__(host=host, detail=reason)
        self.address = address
        self.port = port
        self.reason = reason


class PowerTimeout(HostError):
    """A host did not come on (or go off) within the time `--wait` allows."""

    msg = "{self.host}: {self.what} after {self.seconds:g} s{self.last_seen}"
    state = "timeout"

    def __init__(self, *, host: str, what: str, seconds: float, last: str = "") -> None:
        super().__init__(host=host, detail=what)
        self.what = what
        self.seconds = seconds
        self.last = last

    @property
    def last_seen(self) -> str:
        return f" (last: {self.last})" if self.last else ""


class GuestsRunning(MCLUError):
    """`mclu off` refused: guests still run on the host."""

    msg = (
        "{self.host}: refusing to power off: {self.count} running {self.noun} "
        "({self.names}); move them with --drain, or power off anyway with --force"
    )

    def __init__(self, *, host: str, names: Sequence[str]) -> None:
        super().__init__(host)
        self.host = host
        self.guests = tuple(names)

    @property
    def count(self) -> int:
        return len(self.guests)

    @property
    def noun(self) -> str:
        return "guest" if len(self.guests) == 1 else "guests"

    @property
    def names(self) -> str:
        shown = ", ".join(self.guests[:8])
        return shown + (", ..." if len(self.guests) > 8 else "")


# --- Guest lifecycle (start, stop, reboot, delete, console) ----------------------------------


class GuestOff(MCLUError):
    """The command (reboot, console, viewer) needs a running guest and this one is off."""

    msg = (
        "{self.host}: {self.name} is not running ({self.state}); "
        "start it with `mclu start {self.name}`"
    )

    def __init__(self, *, host: str, name: str, state: str) -> None:
        super().__init__(name)
        self.host = host
        self.name = name
        self.state = state


class GuestIsRunning(MCLUError):
    """`delete` refuses a running guest unless told to power it off first."""

    msg = (
        "{self.host}: {self.name} is running; stop it first, or use --force to power it "
        "off and delete it"
    )

    def __init__(self, *, host: str, name: str) -> None:
        super().__init__(name)
        self.host = host
        self.name = name


class GuestDidNotStop(MCLUError):
    """The guest's OS did not power off within the time given after the ACPI request."""

    msg = (
        "{self.host}: {self.name} did not shut off within {self.seconds:g} s of the ACPI "
        "request; use --force to power it off"
    )

    def __init__(self, *, host: str, name: str, seconds: float) -> None:
        super().__init__(name)
        self.host = host
        self.name = name
        self.seconds = seconds


class NoConsoleLog(MCLUError):
    """`mclu console --log`: the guest's host has no console log file for it."""

    msg = (
        "{self.host}: {self.name} has no console log ({self.path}): it has not run since "
        "it was defined, or its definition logs no console"
    )

    def __init__(self, *, host: str, name: str, path: str) -> None:
        super().__init__(name)
        self.host = host
        self.name = name
        self.path = path


class NotATerminal(MCLUError):
    """An interactive command was run without a terminal on its standard input."""

    msg = "{self.command} needs a terminal: standard input is not one"
    exit_code = EXIT_USAGE

    def __init__(self, *, command: str) -> None:
        super().__init__(command)
        self.command = command


# --- Moving guests between hosts -------------------------------------------------------------


class GuestNotRunning(MCLUError):
    """Live migration needs a running guest."""

    msg = "{self.host}: {self.name} is {self.state}: only a running guest can be live-migrated"

    def __init__(self, *, host: str, name: str, state: str) -> None:
        super().__init__(name)
        self.host = host
        self.name = name
        self.state = state


class BadDestination(MCLUError):
    """The destination the user named cannot take the guest (itself, for one)."""

    msg = "--to {self.host}: {self.reason}"
    exit_code = EXIT_USAGE

    def __init__(self, *, host: str, reason: str) -> None:
        super().__init__(reason)
        self.host = host
        self.reason = reason


class MigrationFailed(MCLUError):
    """A migration stopped at one step; the guest runs on at its source, nothing is left behind."""

    msg = (
        "migration of {self.guest} from {self.source} to {self.dest} failed at "
        "'{self.step}': {self.reason} ({self.guest} runs on {self.source})"
    )

    def __init__(self, *, guest: str, source: str, dest: str, step: str, reason: str) -> None:
        super().__init__(reason)
        self.guest = guest
        self.source = source
        self.dest = dest
        self.step = step
        self.reason = reason


# --- Rebuilding guests (mclu rebuild) ---------------------------------------------------------


class NotRebuildable(MCLUError):
    """A guest `mclu rebuild` cannot make again (a pet, an unfinished build, ...)."""

    msg = "{self.host}: {self.name} cannot be rebuilt: {self.reason}"

    def __init__(self, *, host: str, name: str, reason: str) -> None:
        super().__init__(reason)
        self.host = host
        self.name = name
        self.reason = reason


class RevisionNotReady(MCLUError):
    """A guest not rebuilt because its template revision did not become ready on another."""

    msg = (
        "{self.host}: {self.name} not rebuilt: {self.template} r{self.revision} did not "
        "become ready on {self.tried_on}"
    )

    def __init__(
        self, *, host: str, name: str, template: str, revision: str, tried_on: str
    ) -> None:
        super().__init__(name)
        self.host = host
        self.name = name
        self.template = template
        self.revision = revision
        self.tried_on = tried_on


class RebuildFailed(MCLUError):
    """A rebuild stopped at one step; `outcome` says what its undo left (the old guest)."""

    msg = (
        "rebuild of {self.guest} on {self.host} failed at '{self.step}': {self.reason}; "
        "{self.outcome}"
    )

    def __init__(self, *, guest: str, host: str, step: str, reason: str, outcome: str) -> None:
        super().__init__(reason)
        self.guest = guest
        self.host = host
        self.step = step
        self.reason = reason
        self.outcome = outcome


# --- mclu ssh (issue 12, part 4) -----------------------------------------------------------


class NoGuestAddress(MCLUError):
    """`mclu ssh`: no source knows an address of the guest, so there is nothing to connect to."""

    msg = "{self.name} on {self.host}: no address known ({self.why}); cannot ssh to it"

    def __init__(self, *, name: str, host: str, why: str) -> None:
        super().__init__(why)
        self.name = name
        self.host = host
        self.why = why


class NoHostKeys(MCLUError):
    """`mclu ssh`: the guest's metadata records no ssh host keys, so its key cannot be checked
    (mclu never trusts a key on first use)."""

    msg = (
        "{self.name} on {self.host}: mclu recorded no ssh host keys for it (built before mclu "
        "recorded them, or not built by mclu): its key cannot be checked; `mclu rebuild "
        "{self.name}` gives it keys mclu knows"
    )

    def __init__(self, *, name: str, host: str) -> None:
        super().__init__(name)
        self.name = name
        self.host = host


class NoSshClient(MCLUError):
    """`mclu ssh`: no OpenSSH client on PATH."""

    msg = "no ssh client on PATH ({self.path}): install OpenSSH's client"

    def __init__(self, *, path: str) -> None:
        super().__init__(path)
        self.path = path


class ImageRefused(MCLUError):
    """`mclu templates import`: a disk image that is not taken (not a disk, a format or a
    feature that is unsafe or unsupported, a checksum that does not match); nothing is kept."""

    msg = "{self.source}: not imported: {self.reason}"

    def __init__(self, *, source: str, reason: str) -> None:
        super().__init__(reason)
        self.source = source
        self.reason = reason
