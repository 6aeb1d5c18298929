"""open_session: which session a HostSpec gets, and what a host that cannot be opened raises."""

from __future__ import annotations

import dataclasses
import glob
import tempfile
from pathlib import Path

import pytest

from mclu import errors
from mclu.hosts import fake, open_session, remote, virt
from mclu.hosts.session import Session
from mclu.model import HostSpec
from mclu.sandbox import config as sandbox_config


def every_implementation_is_a_session(
    a: virt.LibvirtSession, b: remote.SshSession, c: fake.FakeSession
) -> list[Session]:
    """Never called: mypy --strict checks that each class satisfies the Protocol."""
    return [a, b, c]


async def test_a_libvirt_uri_opens_libvirt_directly(testdriver_uri: str) -> None:
    async with open_session(HostSpec(name="a", address="unused", uri=testdriver_uri)) as session:
        assert isinstance(session, virt.LibvirtSession)
        assert (session.host, session.uri) == ("a", testdriver_uri)


async def test_a_missing_test_driver_file(tmp_path: Path) -> None:
    spec = HostSpec(name="a", address="unused", uri=f"test://{tmp_path}/none.xml")
    with pytest.raises(errors.LibvirtUnavailable) as raised:
        async with open_session(spec):
            pass
    assert raised.value.host == "a"


def test_libvirt_uri_of_a_forwarded_socket() -> None:
    assert remote.libvirt_uri("/tmp/mclu-a b/sock") == (
        "qemu+unix:///system?socket=%2Ftmp%2Fmclu-a+b%2Fsock"
    )


@pytest.mark.sandbox
async def test_ssh_session_on_the_sandbox(sandbox_host: HostSpec) -> None:
    async with open_session(sandbox_host) as session:
        assert isinstance(session, remote.SshSession)
        assert session.uri == f"qemu+ssh://root@{sandbox_config.SUBNET}.10:22/system"
        facts = await session.facts()
    assert facts.hostname == sandbox_host.name


@pytest.mark.sandbox
async def test_sandbox_host_without_libvirt(sandbox_host: HostSpec) -> None:
    pattern = f"{tempfile.gettempdir()}/mclu-{sandbox_host.name}-*"
    before = set(glob.glob(pattern))
    spec = dataclasses.replace(sandbox_host, libvirt_socket="/run/no-such-libvirt-sock")
    with pytest.raises(errors.LibvirtUnavailable, match="no socket /run/no-such-libvirt-sock"):
        async with open_session(spec):
            pass
    assert set(glob.glob(pattern)) == before  # the forward's directory is gone


@pytest.mark.sandbox
async def test_sandbox_address_nobody_answers(sandbox_host: HostSpec) -> None:
    spec = dataclasses.replace(
        sandbox_host, address=f"{sandbox_config.SUBNET}.99", connect_timeout=1.0
    )
    with pytest.raises(errors.HostUnreachable) as raised:
        async with open_session(spec):
            pass
    assert raised.value.state == "off"
