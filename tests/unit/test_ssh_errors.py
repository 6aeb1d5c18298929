"""mclu.hosts.ssh against an in-process asyncssh server on 127.0.0.1: errors and forwarding.

The server has its own host key, accepts one client key, answers a few canned commands and
allows unix socket forwarding (asyncssh tests/server.py does the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncssh
import pytest

from mclu import errors
from mclu.hosts import ssh
from mclu.model import HostSpec


class _Server(asyncssh.SSHServer):
    def unix_connection_requested(self, dest_path: str) -> bool:
        return True  # plain forwarding to dest_path, as sshd's AllowStreamLocalForwarding


async def _answer(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """A tiny shell: the commands the tests send, nothing else."""
    command = process.command or ""
    if command == "uname -n":
        process.stdout.write(b"sshtest\n")
    elif command == "whoami":
        process.stdout.write(f"{process.get_extra_info('username')}\n".encode())
    elif command == "cat":
        process.stdout.write(await process.stdin.read())
    elif command == "sh -c 'echo one >&2; echo two >&2; exit 3'":
        process.stderr.write(b"one\ntwo\n")
        process.exit(3)
        return
    elif command == "sleep 10":
        await asyncio.sleep(10)
    else:
        process.stderr.write(f"sh: {command}: not found\n".encode())
        process.exit(127)
        return
    process.exit(0)


@dataclass
class SshServer:
    port: int
    spec: HostSpec  # a spec that connects: right client key, host key known
    tmp_path: Path

    def write_key(self, name: str, key: asyncssh.SSHKey) -> str:
        path = self.tmp_path / name
        key.write_private_key(str(path))
        path.chmod(0o600)
        return str(path)

    def known_hosts(self, name: str, key: asyncssh.SSHKey) -> str:
        path = self.tmp_path / name
        path.write_bytes(f"[127.0.0.1]:{self.port} ".encode() + key.export_public_key())
        return str(path)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[SshServer]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    listener = await asyncssh.listen(
        host="127.0.0.1",
        port=0,
        server_factory=_Server,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(
            client_key.export_public_key().decode()
        ),
        process_factory=_answer,
        encoding=None,
    )
    try:
        port = listener.sockets[0].getsockname()[1]
        server = SshServer(port=port, spec=HostSpec(name="h1", address="x"), tmp_path=tmp_path)
        server.spec = HostSpec(
            name="h1",
            address="127.0.0.1",
            port=port,
            user="mclu",
            identity_files=(server.write_key("client_key", client_key),),
            identities_only=True,
            known_hosts=server.known_hosts("known_hosts", host_key),
            ssh_config="none",
            connect_timeout=5.0,
            command_timeout=5.0,
        )
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


async def run(
    spec: HostSpec, argv: list[str], *, input: bytes | None = None, timeout: float | None = None
) -> bytes:
    """Connect, run argv, return its stdout."""
    async with ssh.connect(spec) as connection:
        result = await connection.run(argv, input=input, timeout=timeout)
        return result.stdout


# --- connecting -------------------------------------------------------------------------------


async def test_connects_and_runs(server: SshServer) -> None:
    assert await run(server.spec, ["uname", "-n"]) == b"sshtest\n"


async def test_ssh_config_decides_what_the_spec_leaves_unset(server: SshServer) -> None:
    config = server.tmp_path / "ssh_config"
    config.write_text(
        f"Host h1-alias\n  HostName 127.0.0.1\n  Port {server.port}\n  User fromconfig\n"
    )
    # The known_hosts entry is for the real address, as OpenSSH writes it for a HostName.
    spec = replace(server.spec, address="h1-alias", port=None, user=None, ssh_config=str(config))
    assert await run(spec, ["whoami"]) == b"fromconfig\n"


async def test_wrong_client_key(server: SshServer) -> None:
    other = server.write_key("other_key", asyncssh.generate_private_key("ssh-ed25519"))
    with pytest.raises(errors.HostAuthFailed) as raised:
        await run(replace(server.spec, identity_files=(other,)), ["true"])
    assert (raised.value.host, raised.value.user, raised.value.address) == (
        "h1",
        "mclu",
        "127.0.0.1",
    )


async def test_unknown_host_key(server: SshServer) -> None:
    empty = server.tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(errors.HostKeyUnknown) as raised:
        await run(replace(server.spec, known_hosts=str(empty)), ["true"])
    assert (raised.value.port, raised.value.known_hosts) == (server.port, str(empty))


async def test_missing_known_hosts_file_still_checks(server: SshServer) -> None:
    missing = str(server.tmp_path / "no-such-file")
    with pytest.raises(errors.HostKeyUnknown):
        await run(replace(server.spec, known_hosts=missing), ["true"])


async def test_changed_host_key(server: SshServer) -> None:
    known = server.known_hosts("stale_known_hosts", asyncssh.generate_private_key("ssh-ed25519"))
    with pytest.raises(errors.HostKeyChanged) as raised:
        await run(replace(server.spec, known_hosts=known), ["true"])
    assert raised.value.known_name == f"'[127.0.0.1]:{server.port}'"


async def test_closed_port(server: SshServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(errors.HostUnreachable) as raised:
        await run(replace(server.spec, port=closed_port), ["true"])
    assert raised.value.state == "off"
    assert "refused" in raised.value.reason.lower()


async def test_silent_port_times_out(server: SshServer) -> None:
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    try:
        port = silent.sockets[0].getsockname()[1]
        with pytest.raises(errors.HostUnreachable, match=r"no answer within 0.3 s"):
            await run(replace(server.spec, port=port, connect_timeout=0.3), ["true"])
    finally:
        silent.close()


@contextlib.asynccontextmanager
async def _delaying_proxy(port: int, delay: float) -> AsyncIterator[int]:
    """A TCP port that accepts at once and passes the connection on to `port` after `delay`
    seconds: a live host whose ssh handshake is slow (a loaded machine)."""

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(relay(reader, upstream_writer), relay(upstream_reader, writer))

    proxy = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield proxy.sockets[0].getsockname()[1]
    finally:
        proxy.close()


async def test_slow_handshake_gets_the_whole_connect_timeout(server: SshServer) -> None:
    """tcp_timeout bounds only the TCP connection: a host that accepted it and is slow to
    answer in ssh is waited for up to connect_timeout, not reported off."""
    async with _delaying_proxy(server.port, 0.5) as port:
        known = server.tmp_path / "proxy_known_hosts"
        known.write_text(
            Path(server.spec.known_hosts or "")
            .read_text()
            .replace(f"[127.0.0.1]:{server.port}", f"[127.0.0.1]:{port}")
        )
        spec = replace(
            server.spec, port=port, known_hosts=str(known), tcp_timeout=0.1, connect_timeout=5.0
        )
        assert await run(spec, ["uname", "-n"]) == b"sshtest\n"


@contextlib.contextmanager
def _port_dropping_syns() -> Iterator[int]:
    """A loopback port whose listener's accept queue is full: the kernel drops new SYNs, so
    a connect gets no answer at all, as from a powered-off host."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(2):  # fill the queue (backlog 0 holds one); never accepted
            filler = stack.enter_context(socket.socket())
            filler.settimeout(0.2)
            with contextlib.suppress(OSError):
                filler.connect(("127.0.0.1", port))
        yield port


async def test_no_tcp_answer_is_off_after_tcp_timeout(server: SshServer) -> None:
    with _port_dropping_syns() as port:
        spec = replace(server.spec, port=port, tcp_timeout=0.2, connect_timeout=30.0)
        with pytest.raises(
            errors.HostUnreachable, match=r"at 127.0.0.1: no answer within 0.2 s"
        ) as raised:
            await asyncio.wait_for(run(spec, ["true"]), 5)  # not connect_timeout's 30 s
    assert raised.value.state == "off"


async def test_tcp_timeout_is_never_longer_than_connect_timeout(server: SshServer) -> None:
    with _port_dropping_syns() as port:
        spec = replace(server.spec, port=port, tcp_timeout=10.0, connect_timeout=0.3)
        with pytest.raises(errors.HostUnreachable, match=r"no answer within 0.3 s"):
            await asyncio.wait_for(run(spec, ["true"]), 5)


async def test_a_lost_syn_is_sent_again_within_tcp_timeout() -> None:
    """The kernel sends its own second SYN only after 1 s: mclu's further attempts within the
    bound reach a host whose first SYN was dropped."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))  # the queue is full: the next SYN is dropped
        loop = asyncio.get_running_loop()
        candidates = await loop.getaddrinfo("127.0.0.1", port, type=socket.SOCK_STREAM)

        async def free_the_queue() -> None:
            await asyncio.sleep(0.15)  # after the first attempt's SYN was dropped
            listener.accept()[0].close()

        freeing = asyncio.create_task(free_the_queue())
        async with asyncio.timeout(0.9):  # before the kernel's own retry could connect
            sock = await ssh._first_to_connect(loop, candidates, 0.9)
        await freeing
        with sock:
            assert sock.getpeername() == ("127.0.0.1", port)


async def test_missing_identity_file(server: SshServer) -> None:
    spec = replace(server.spec, identity_files=(str(server.tmp_path / "nokey"),))
    with pytest.raises(errors.HostError, match="ssh settings") as raised:
        await run(spec, ["true"])
    assert type(raised.value) is errors.HostError  # not mistaken for an unreachable host


# --- commands ---------------------------------------------------------------------------------


async def test_failed_command(server: SshServer) -> None:
    with pytest.raises(errors.HostCommandFailed) as raised:
        await run(server.spec, ["sh", "-c", "echo one >&2; echo two >&2; exit 3"])
    assert (raised.value.exit_status, raised.value.stderr) == (3, "one / two")
    assert str(raised.value) == (
        "h1: `sh -c 'echo one >&2; echo two >&2; exit 3'` failed with exit status 3: one / two"
    )


async def test_unchecked_command_returns_its_status(server: SshServer) -> None:
    async with ssh.connect(server.spec) as connection:
        result = await connection.run(["no", "such"], check=False)
    assert (result.exit_status, result.stderr) == (127, b"sh: no such: not found\n")


async def test_input(server: SshServer) -> None:
    assert await run(server.spec, ["cat"], input=b"\x00binary\xff") == b"\x00binary\xff"


async def test_command_timeout(server: SshServer) -> None:
    with pytest.raises(errors.HostTimeout) as raised:
        await run(server.spec, ["sleep", "10"], timeout=0.2)
    assert (raised.value.what, raised.value.seconds) == ("`sleep 10`", 0.2)


# --- forwarding -------------------------------------------------------------------------------


async def test_forward_unix_socket(server: SshServer) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    remote = await asyncio.start_unix_server(echo, str(server.tmp_path / "remote.sock"))
    try:
        async with (
            ssh.connect(server.spec) as connection,
            connection.forward_unix_socket(str(server.tmp_path / "remote.sock")) as local,
        ):
            directory = os.path.dirname(local)
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
            reader, writer = await asyncio.open_unix_connection(local)
            writer.write(b"ping")
            assert await reader.read(100) == b"ping"
            writer.close()
        assert not os.path.exists(directory)
    finally:
        remote.close()
        await remote.wait_closed()
