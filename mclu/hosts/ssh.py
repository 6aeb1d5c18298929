"""One asyncssh connection per host: commands, and the libvirt socket forwarded over it.

Built from a HostSpec the way `ssh HOST` would be: the user's ssh config, agent, keys and
known_hosts. Host keys are always verified. asyncssh's exceptions are translated here into
mclu's HostError family; nothing above mclu.hosts sees them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh

from mclu import errors
from mclu.hosts.session import CommandResult, command_line
from mclu.model import HostSpec

log = logging.getLogger(__name__)

# asyncssh's chacha20-poly1305 is pure Python and slow here (244 MiB/s against 408 for
# aes128-gcm, docs/platform-facts): prefer AES-GCM, keep the rest of the defaults after it.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
KEEPALIVE_INTERVAL = 15.0  # seconds; a host gone for 3 intervals closes the connection
KEEPALIVE_COUNT_MAX = 3


class SshConnection:
    """An open ssh connection to one host; made by `connect()`."""

    def __init__(self, spec: HostSpec, connection: asyncssh.SSHClientConnection) -> None:
        self.spec = spec
        self.host = spec.name
        self._connection = connection

    async def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
                  timeout: float | None = None) -> CommandResult:
        """Run argv on the host through its login shell, bounded by timeout.

        timeout defaults to spec.command_timeout. Raises HostCommandFailed (non-zero exit with
        check), HostTimeout, or HostError when the connection breaks.
        """
        command = command_line(argv)
        seconds = self.spec.command_timeout if timeout is None else timeout
        try:
            completed = await self._connection.run(command, input=input, check=False,
                                                   timeout=seconds, encoding=None)
        except asyncssh.TimeoutError:
            raise errors.HostTimeout(self.host, f"`{command}`", seconds) from None
        except (asyncssh.Error, OSError) as e:
            raise errors.HostError(self.host, f"`{command}`: {_reason(e)}") from e
        result = CommandResult(
            argv=tuple(argv),
            exit_status=_exit_status(completed),
            stdout=_as_bytes(completed.stdout),
            stderr=_as_bytes(completed.stderr),
        )
        if check and result.exit_status != 0:
            raise errors.HostCommandFailed(self.host, command, result.exit_status,
                                           result.stderr.decode(errors="replace"))
        return result

    @asynccontextmanager
    async def forward_unix_socket(self, remote_path: str) -> AsyncIterator[str]:
        """Forward a new local unix socket to remote_path on the host; yields the local path.

        The socket lives in a private (0700) temporary directory, removed on exit.
        """
        directory = tempfile.mkdtemp(prefix=f"mclu-{self.host}-")
        try:
            local_path = os.path.join(directory, "sock")
            try:
                listener = await self._connection.forward_local_path(local_path, remote_path)
            except (asyncssh.Error, OSError) as e:
                raise errors.HostError(self.host, f"forwarding {remote_path}: {_reason(e)}") from e
            try:
                yield local_path
            finally:
                listener.close()
                await listener.wait_closed()
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    async def close(self) -> None:
        self._connection.close()
        await self._connection.wait_closed()


@asynccontextmanager
async def connect(spec: HostSpec) -> AsyncIterator[SshConnection]:
    """Open the ssh connection to spec's host, closed on exit.

    Raises HostUnreachable, HostAuthFailed, HostKeyUnknown, HostKeyChanged, or HostError.
    """
    options = await _options(spec)
    try:
        connection = await asyncssh.connect(spec.address, options=options)
    except BaseException as e:
        translated = _connect_error(spec, options, e)
        if translated is None:
            raise
        raise translated from e
    session = SshConnection(spec, connection)
    try:
        yield session
    finally:
        await session.close()


async def _options(spec: HostSpec) -> asyncssh.SSHClientConnectionOptions:
    """asyncssh's options for spec: reads the ssh config and key files (off the event loop)."""
    loop = asyncio.get_running_loop()
    try:
        # Key files and the config are read here; a thread keeps 50 hosts from blocking the loop.
        return await loop.run_in_executor(None, lambda: asyncssh.SSHClientConnectionOptions(
            **_option_arguments(spec)))
    except (OSError, ValueError) as e:  # missing or bad key file, bad config, bad algorithm
        raise errors.HostError(spec.name, f"ssh settings: {e}") from e


def _option_arguments(spec: HostSpec) -> dict[str, Any]:
    """asyncssh's keyword arguments for spec; unset fields leave it to the ssh config."""
    arguments: dict[str, Any] = {
        "host": spec.address,
        "config": _config_paths(spec),
        "known_hosts": _known_hosts(spec),
        "encryption_algs": _encryption_algs(),
        "connect_timeout": spec.connect_timeout,
        "keepalive_interval": KEEPALIVE_INTERVAL,
        "keepalive_count_max": KEEPALIVE_COUNT_MAX,
    }
    if spec.port is not None:
        arguments["port"] = spec.port
    if spec.user is not None:
        arguments["username"] = spec.user
    if spec.identity_files:
        arguments["client_keys"] = list(spec.identity_files)
    if spec.identities_only:
        arguments["agent_path"] = None
    return arguments


def _config_paths(spec: HostSpec) -> list[str]:
    if spec.ssh_config == "none":
        return []
    if spec.ssh_config is not None:
        return [spec.ssh_config]
    default = Path("~/.ssh/config").expanduser()
    return [str(default)] if default.is_file() else []


def known_hosts_path(spec: HostSpec) -> str:
    """The known_hosts file mclu checks spec's host key against."""
    return spec.known_hosts or str(Path("~/.ssh/known_hosts").expanduser())


def _known_hosts(spec: HostSpec) -> asyncssh.SSHKnownHosts | str:
    """Always a concrete list: asyncssh's default follows the ssh config, and a config saying
    `UserKnownHostsFile none` would turn host key checking off."""
    path = known_hosts_path(spec)
    return path if os.path.exists(path) else asyncssh.SSHKnownHosts()


def _encryption_algs() -> list[str]:
    defaults = [alg.decode() for alg in asyncssh.encryption.get_default_encryption_algs()]
    return [*PREFERRED_CIPHERS, *(a for a in defaults if a not in PREFERRED_CIPHERS)]


def _connect_error(spec: HostSpec, options: asyncssh.SSHClientConnectionOptions,
                   error: BaseException) -> errors.HostError | None:
    """mclu's error for a failed connect, or None for errors that are not the host's."""
    address = options.host
    if isinstance(error, asyncssh.PermissionDenied):
        return errors.HostAuthFailed(spec.name, options.username, address, _reason(error))
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        port = options.port
        known = known_hosts_path(spec)
        if _has_known_key(known, address, port):
            return errors.HostKeyChanged(spec.name, address, port, known)
        return errors.HostKeyUnknown(spec.name, address, port, known)
    if isinstance(error, TimeoutError):
        reason = f"no answer within {spec.connect_timeout:g} s"
        return errors.HostUnreachable(spec.name, address, reason)
    if isinstance(error, OSError):  # refused, no route, DNS failure (socket.gaierror)
        return errors.HostUnreachable(spec.name, address, _reason(error))
    if isinstance(error, asyncssh.Error):
        return errors.HostError(spec.name, f"ssh to {address}: {_reason(error)}")
    return None


def _has_known_key(path: str, address: str, port: int) -> bool:
    """Whether known_hosts holds a key (or a CA) for address:port."""
    try:
        known = asyncssh.read_known_hosts(path)
    except (OSError, ValueError):
        return False
    host_keys, ca_keys, *_ = known.match(address, address, port)
    return bool(host_keys or ca_keys)


def _exit_status(completed: asyncssh.SSHCompletedProcess) -> int:
    if completed.returncode is not None:
        return completed.returncode  # negative for a signal, as in subprocess
    return -1  # the channel closed with neither status nor signal


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    return str(data or "").encode()


def _reason(error: BaseException) -> str:
    if isinstance(error, asyncssh.DisconnectError | asyncssh.ChannelOpenError):
        return error.reason
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the name: {error.strerror}"
    if isinstance(error, OSError) and error.errno:
        # asyncio's text is "Connect call failed (addr, port)"; the errno says why.
        return os.strerror(error.errno).lower()
    return str(error) or type(error).__name__
