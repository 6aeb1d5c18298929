"""One asyncssh connection per host: commands, and the libvirt socket forwarded over it.

Built from a HostSpec the way `ssh HOST` would be: the user's ssh config, agent, keys and
known_hosts. Host keys are always verified. asyncssh's exceptions are translated here into
mclu's HostError family; nothing above mclu.hosts sees them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh

from mclu import errors, runtmp
from mclu.cancellation import uninterrupted
from mclu.hosts import commands
from mclu.hosts.session import CommandResult, Input, command_failed, command_line
from mclu.model import HostSpec

log = logging.getLogger(__name__)

# asyncssh's chacha20-poly1305 is pure Python and slow here (244 MiB/s against 408 for
# aes128-gcm, docs/platform-facts): prefer AES-GCM, keep the rest of the defaults after it.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# TCP connection attempts per address within tcp_timeout (see _first_to_connect).
TCP_ATTEMPTS = 3
KEEPALIVE_INTERVAL = 15.0  # seconds; a host gone for 3 intervals closes the connection
KEEPALIVE_COUNT_MAX = 3
STOP_TIMEOUT = 10.0  # seconds a stopped or aborted command gets to end before its channel is closed
OUTPUT_KEPT = 64 * 1024  # bytes of a background command's stdout and stderr kept


class SshConnection:
    """An open ssh connection to one host; made by `connect()`."""

    def __init__(self, spec: HostSpec, connection: asyncssh.SSHClientConnection) -> None:
        self.spec = spec
        self.host = spec.name
        self._connection = connection

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: Input = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run argv on the host through its login shell, bounded by timeout.

        input: bytes, or an async iterable of chunks streamed with back-pressure (see
        Session.run). timeout defaults to spec.command_timeout. Raises HostCommandFailed
        (non-zero exit with check; ToolMissing for exit status 127 "not found"), HostTimeout,
        or HostError when the connection breaks.
        """
        command = command_line(argv)
        seconds = self.spec.command_timeout if timeout is None else timeout
        input_error: BaseException | None = None
        started = asyncio.get_running_loop().time()
        log.debug("%s: $ %s", self.host, command)
        try:
            if input is None or isinstance(input, bytes):
                completed = await self._connection.run(
                    command, input=input, check=False, timeout=seconds, encoding=None
                )
            else:
                async with asyncio.timeout(seconds):
                    completed, input_error = await self._run_streaming(command, input)
        except (asyncssh.TimeoutError, TimeoutError):
            raise errors.HostTimeout(host=self.host, what=f"`{command}`", seconds=seconds) from None
        except (asyncssh.Error, OSError) as e:
            raise errors.HostError(host=self.host, detail=f"`{command}`: {_reason(e)}") from e
        if input_error is not None:
            raise input_error  # the input's own failure says more than the command's
        result = CommandResult(
            argv=tuple(argv),
            exit_status=_exit_status(completed),
            stdout=_as_bytes(completed.stdout),
            stderr=_as_bytes(completed.stderr),
        )
        log.debug(
            "%s: exit status %d (%.2f s)",
            self.host,
            result.exit_status,
            asyncio.get_running_loop().time() - started,
        )
        if check and result.exit_status != 0:
            raise command_failed(self.host, result)
        return result

    async def _run_streaming(
        self, command: str, chunks: AsyncIterable[bytes]
    ) -> tuple[asyncssh.SSHCompletedProcess, BaseException | None]:
        """Run command with chunks as its stdin; returns its end and the input's exception.

        On any exception here (cancellation included) the command sees the end of its input
        and is waited for (at most STOP_TIMEOUT) before the exception propagates.
        """
        process = await self._connection.create_process(command, encoding=None)
        feeder = asyncio.create_task(_feed(process, chunks))
        try:
            completed = await process.wait()
        except BaseException:
            feeder.cancel()
            await uninterrupted(_end(process, feeder))
            raise
        await asyncio.wait([feeder])
        return completed, None if feeder.cancelled() else feeder.exception()

    @asynccontextmanager
    async def background(self, argv: Sequence[str]) -> AsyncIterator[RunningCommand]:
        """Run argv on the host while the block runs; see Session.background."""
        command = command_line(commands.background(argv))
        log.debug("%s: $ %s &", self.host, command_line(argv))
        try:
            process = await self._connection.create_process(command, encoding=None)
        except (asyncssh.Error, OSError) as e:
            raise errors.HostError(
                host=self.host, detail=f"`{command_line(argv)}`: {_reason(e)}"
            ) from e
        running = RunningCommand(self.host, tuple(argv), process)
        try:
            yield running
        finally:
            await uninterrupted(running.stop())

    @asynccontextmanager
    async def forward_unix_socket(self, remote_path: str) -> AsyncIterator[str]:
        """Forward a new local unix socket to remote_path on the host; yields the local path.

        The socket lives in the run's private (0700) directory (mclu.runtmp); it is removed on
        exit, and with the run directory should this process be killed.
        """
        with runtmp.socket_path(f"{self.host}-") as local_path:
            try:
                listener = await self._connection.forward_local_path(local_path, remote_path)
            except (asyncssh.Error, OSError) as e:
                raise errors.HostError(
                    host=self.host, detail=f"forwarding {remote_path}: {_reason(e)}"
                ) from e
            try:
                yield local_path
            finally:
                listener.close()
                await listener.wait_closed()

    @asynccontextmanager
    async def open_terminal(
        self, argv: Sequence[str], *, term: str, size: tuple[int, int]
    ) -> AsyncIterator[PtyCommand]:
        """Run argv on a pseudo-terminal while the block runs; see Session.open_terminal."""
        command = command_line(argv)
        log.debug("%s: $ %s (on a terminal)", self.host, command)
        try:
            process = await self._connection.create_process(
                command, term_type=term, term_size=size, encoding=None
            )
        except (asyncssh.Error, OSError) as e:
            raise errors.HostError(host=self.host, detail=f"`{command}`: {_reason(e)}") from e
        try:
            yield PtyCommand(self.host, command, process)
        finally:
            process.close()  # sshd hangs up the pty: the command gets SIGHUP
            try:
                await asyncio.wait_for(process.wait_closed(), STOP_TIMEOUT)
            except (TimeoutError, OSError, asyncssh.Error) as e:
                log.debug("%s: closing `%s`: %s", self.host, command, _reason(e))

    @asynccontextmanager
    async def lock(self, path: str, holder: str) -> AsyncIterator[None]:
        """Hold a flock on the host's file `path` while the block runs; see Session.lock."""
        argv = commands.lock(path, holder)
        log.debug("%s: locking %s", self.host, path)
        try:
            process = await self._connection.create_process(command_line(argv), encoding=None)
        except (asyncssh.Error, OSError) as e:
            raise errors.HostError(host=self.host, detail=f"locking {path}: {_reason(e)}") from e
        try:
            await self._until_locked(process, path, argv)
            yield
        finally:
            await uninterrupted(_release(process))

    async def _until_locked(
        self, process: asyncssh.SSHClientProcess[bytes], path: str, argv: Sequence[str]
    ) -> None:
        try:
            line = await asyncio.wait_for(process.stdout.readline(), self.spec.command_timeout)
        except TimeoutError:
            raise errors.HostTimeout(
                host=self.host, what=f"a lock on {path}", seconds=self.spec.command_timeout
            ) from None
        except (asyncssh.Error, OSError) as e:
            raise errors.HostError(host=self.host, detail=f"locking {path}: {_reason(e)}") from e
        if line == b"locked\n":
            return
        await process.wait_closed()
        stderr = await process.stderr.read()
        status = process.returncode
        if status == commands.LOCK_HELD:
            raise errors.LockHeld(
                host=self.host, path=path, holder=stderr.decode(errors="replace").strip()
            )
        raise command_failed(
            self.host, CommandResult(tuple(argv), -1 if status is None else status, line, stderr)
        )

    async def close(self) -> None:
        self._connection.close()
        await self._connection.wait_closed()


async def _release(process: asyncssh.SSHClientProcess[bytes]) -> None:
    """End the lock holder's input (it exits, releasing the lock) and wait for it."""
    try:
        if not process.stdin.is_closing():
            process.stdin.write_eof()
        await asyncio.wait_for(process.wait_closed(), STOP_TIMEOUT)
    except (TimeoutError, OSError, asyncssh.Error) as e:
        log.debug("releasing a lock: %s", _reason(e))
        process.close()


@asynccontextmanager
async def connect(spec: HostSpec) -> AsyncIterator[SshConnection]:
    """Open the ssh connection to spec's host, closed on exit.

    Two phases: the TCP connection within spec.tcp_timeout (a host that does not answer
    there is off, and is reported so at once), then the ssh handshake and login within
    spec.connect_timeout (a live but slow host gets its whole time).
    Raises HostUnreachable, HostAuthFailed, HostKeyUnknown, HostKeyChanged, or HostError.
    """
    options = await _options(spec)
    sock = await _tcp_connect(spec, options)
    try:
        connection = await asyncssh.connect(spec.address, options=options, sock=sock)
    except BaseException as e:
        if sock is not None:
            sock.close()  # asyncssh closes it once it owns it; closing twice is harmless
        translated = _connect_error(spec, options, e)
        if translated is None:
            raise
        raise translated from e
    session = SshConnection(spec, connection)
    try:
        yield session
    finally:
        await session.close()


async def _tcp_connect(
    spec: HostSpec, options: asyncssh.SSHClientConnectionOptions
) -> socket.socket | None:
    """A TCP connection to the host's ssh port, made within spec.tcp_timeout.

    None where the ssh config makes the connection some other way (ProxyJump, ProxyCommand,
    BindAddress, hostname canonicalisation, `Match final`): asyncssh then makes it itself,
    all of it within connect_timeout. Raises HostUnreachable.
    """
    if (
        options.tunnel
        or options.proxy_command
        or options.local_addr
        or options.canonicalize_hostname
        or options.config.has_match_final()
    ):
        return None
    loop = asyncio.get_running_loop()
    address = options.host
    try:
        # Resolving a name is not the host's answer: it gets the longer bound.
        async with asyncio.timeout(spec.connect_timeout):
            candidates = await loop.getaddrinfo(
                address, options.port, family=options.family, type=socket.SOCK_STREAM
            )
    except TimeoutError:
        raise errors.HostUnreachable(
            host=spec.name,
            address=address,
            reason=f"cannot resolve the name: no answer within {spec.connect_timeout:g} s",
        ) from None
    except OSError as e:
        raise errors.HostUnreachable(host=spec.name, address=address, reason=_reason(e)) from e
    seconds = min(spec.tcp_timeout, spec.connect_timeout)
    try:
        async with asyncio.timeout(seconds):
            return await _first_to_connect(loop, candidates, seconds)
    except TimeoutError:
        raise errors.HostUnreachable(
            host=spec.name, address=address, reason=f"no answer within {seconds:g} s"
        ) from None
    except OSError as e:  # refused, no route to host, network unreachable
        raise errors.HostUnreachable(host=spec.name, address=address, reason=_reason(e)) from e


async def _first_to_connect(
    loop: asyncio.AbstractEventLoop, candidates: Sequence[tuple[Any, ...]], seconds: float
) -> socket.socket:
    """A connected socket to the first of getaddrinfo's addresses to accept.

    Attempts start one after another, evenly over `seconds`, while none has connected: the
    addresses in turn, each TCP_ATTEMPTS times. A lost SYN thus costs a fraction of the
    bound (the kernel sends its own second SYN only after 1 s), and an address that does not
    answer does not hold up the next. An address that answers with an error (refused, no
    route) is not tried again; with none left, that error is raised.
    """
    plan = [c for _ in range(TCP_ATTEMPTS) for c in candidates]
    interval = seconds / max(len(plan), 1)
    running: dict[asyncio.Task[socket.socket], Any] = {}  # attempt -> its address
    failed: set[Any] = set()
    failure = OSError(f"no address for the host in {candidates!r}")
    try:
        while plan or running:
            if plan:
                candidate = plan.pop(0)
                if candidate[4] in failed:
                    continue
                running[asyncio.create_task(_connect_once(loop, candidate))] = candidate[4]
            done, _ = await asyncio.wait(
                set(running),
                timeout=interval if plan else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for attempt in done:
                address = running.pop(attempt)
                error = attempt.exception()
                if error is None:
                    return attempt.result()
                if not isinstance(error, OSError):
                    raise error
                failure = error
                failed.add(address)
        raise failure
    finally:
        for attempt in running:
            attempt.cancel()
        for outcome in await asyncio.gather(*running, return_exceptions=True):
            if isinstance(outcome, socket.socket):  # connected too, but later: not needed
                outcome.close()


async def _connect_once(
    loop: asyncio.AbstractEventLoop, candidate: tuple[Any, ...]
) -> socket.socket:
    family, kind, protocol, _name, address = candidate
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
    except BaseException:  # refused, the time bound, an interrupt
        sock.close()
        raise
    return sock


class PtyCommand:
    """A command started by `SshConnection.open_terminal`: a Terminal (mclu.hosts.session)."""

    READ_SIZE = 64 * 1024

    def __init__(self, host: str, command: str, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self.host = host
        self.command = command
        self._process = process

    async def read(self) -> bytes:
        try:
            return await self._process.stdout.read(self.READ_SIZE)
        except (asyncssh.Error, OSError) as e:
            raise errors.HostError(host=self.host, detail=f"`{self.command}`: {_reason(e)}") from e

    def write(self, data: bytes) -> None:
        if not self._process.stdin.is_closing():
            self._process.stdin.write(data)

    def resize(self, columns: int, rows: int) -> None:
        self._process.change_terminal_size(columns, rows)

    def exit_status(self) -> int | None:
        return self._process.returncode


class RunningCommand:
    """A command started by `SshConnection.background`: a Background (mclu.hosts.session)."""

    def __init__(
        self, host: str, argv: tuple[str, ...], process: asyncssh.SSHClientProcess[bytes]
    ) -> None:
        self.host = host
        self.argv = argv
        self._process = process
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._stopping = False
        self._watch = asyncio.create_task(self._collect())

    def result(self) -> CommandResult | None:
        if not self._watch.done():
            return None
        status = self._process.returncode
        return CommandResult(
            self.argv, -1 if status is None else status, bytes(self._stdout), bytes(self._stderr)
        )

    def check(self) -> None:
        result = self.result()
        if result is not None and not self._stopping and result.exit_status != 0:
            raise command_failed(self.host, result)

    async def stop(self) -> None:
        """End the command's input (the wrapper then kills it) and wait for it to end; after
        STOP_TIMEOUT close the channel instead."""
        self._stopping = True
        if not self._watch.done():
            try:
                self._process.stdin.write_eof()
                await asyncio.wait_for(asyncio.shield(self._watch), STOP_TIMEOUT)
            except (TimeoutError, OSError, asyncssh.Error) as e:
                log.warning(
                    "%s: `%s` did not stop: %s", self.host, command_line(self.argv), _reason(e)
                )
        self._process.close()
        await self._watch

    async def _collect(self) -> None:
        """Keep the last OUTPUT_KEPT bytes of stdout and stderr until the channel closes."""
        await asyncio.gather(
            _keep_tail(self._process.stdout, self._stdout),
            _keep_tail(self._process.stderr, self._stderr),
        )
        await self._process.wait_closed()


async def _keep_tail(stream: asyncssh.SSHReader[bytes], kept: bytearray) -> None:
    try:
        while chunk := await stream.read(OUTPUT_KEPT):
            kept += chunk
            del kept[:-OUTPUT_KEPT]
    except (OSError, asyncssh.Error) as e:  # the connection went away
        log.debug("reading a background command's output: %s", _reason(e))


async def _feed(process: asyncssh.SSHClientProcess[bytes], chunks: AsyncIterable[bytes]) -> None:
    """Write chunks to the command's stdin, then its end; stops quietly when the command
    stops reading (its exit status says why)."""
    try:
        async for chunk in chunks:
            process.stdin.write(chunk)
            await process.stdin.drain()
    except (BrokenPipeError, ConnectionResetError, asyncssh.Error) as e:
        log.debug("the command stopped reading its input: %s", _reason(e))
    finally:
        if not process.stdin.is_closing():
            process.stdin.write_eof()


async def _end(process: asyncssh.SSHClientProcess[bytes], feeder: asyncio.Task[None]) -> None:
    """After an abort: let the command end on the end of its input, or close its channel."""
    try:
        await asyncio.wait_for(process.wait_closed(), STOP_TIMEOUT)
    except TimeoutError:
        log.warning("an aborted command did not end within %g s; closing its channel", STOP_TIMEOUT)
    finally:
        process.close()
        await asyncio.gather(feeder, return_exceptions=True)


async def _options(spec: HostSpec) -> asyncssh.SSHClientConnectionOptions:
    """asyncssh's options for spec: reads the ssh config and key files (off the event loop)."""
    loop = asyncio.get_running_loop()
    try:
        # Key files and the config are read here; a thread keeps 50 hosts from blocking the loop.
        return await loop.run_in_executor(
            None, lambda: asyncssh.SSHClientConnectionOptions(**_option_arguments(spec))
        )
    except (OSError, ValueError) as e:  # missing or bad key file, bad config, bad algorithm
        raise errors.HostError(host=spec.name, detail=f"ssh settings: {e}") from e


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
        arguments["client_keys"] = _keypairs(tuple(spec.identity_files))
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
    return _read_known_hosts(path) if os.path.exists(path) else asyncssh.SSHKnownHosts()


# Read once per command, not once per host: with many hosts sharing one known_hosts file
# and one key, parsing them for every connection was a visible part of `mclu status`.
@functools.lru_cache(maxsize=8)
def _read_known_hosts(path: str) -> asyncssh.SSHKnownHosts:
    return asyncssh.read_known_hosts(path)


@functools.lru_cache(maxsize=8)
def _keypairs(paths: tuple[str, ...]) -> list[asyncssh.SSHKeyPair]:
    return list(asyncssh.load_keypairs(list(paths)))


def _encryption_algs() -> list[str]:
    defaults = [alg.decode() for alg in asyncssh.encryption.get_default_encryption_algs()]
    return [*PREFERRED_CIPHERS, *(a for a in defaults if a not in PREFERRED_CIPHERS)]


def _connect_error(
    spec: HostSpec, options: asyncssh.SSHClientConnectionOptions, error: BaseException
) -> errors.HostError | None:
    """mclu's error for a failed connect, or None for errors that are not the host's."""
    address = options.host
    if isinstance(error, asyncssh.PermissionDenied):
        return errors.HostAuthFailed(
            host=spec.name, user=options.username, address=address, reason=_reason(error)
        )
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        port = options.port
        known = known_hosts_path(spec)
        if _has_known_key(known, address, port):
            return errors.HostKeyChanged(
                host=spec.name, address=address, port=port, known_hosts=known
            )
        return errors.HostKeyUnknown(host=spec.name, address=address, port=port, known_hosts=known)
    if isinstance(error, TimeoutError):
        reason = f"no answer within {spec.connect_timeout:g} s"
        return errors.HostUnreachable(host=spec.name, address=address, reason=reason)
    if isinstance(error, OSError):  # refused, no route, DNS failure (socket.gaierror)
        return errors.HostUnreachable(host=spec.name, address=address, reason=_reason(error))
    if isinstance(error, asyncssh.Error):
        return errors.HostError(host=spec.name, detail=f"ssh to {address}: {_reason(error)}")
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
