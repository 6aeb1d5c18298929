"""`mclu status`, `list` and `info` against the sandbox: real sshd, real libvirtd, real faults.

Each test runs the real `mclu` command line and checks what a user would see: the JSON
answer, the one-line errors and the exit code.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mclu import model
from mclu.read import metadata
from tests.integration import sandbox as sb

pytestmark = pytest.mark.sandbox


def states(doc: dict[str, object]) -> dict[str, str]:
    hosts = doc["hosts"]
    assert isinstance(hosts, list)
    return {h["name"]: h["state"] for h in hosts}


def guest_xml(name: str, meta: model.GuestMeta | None) -> str:
    """A diskless TCG guest: enough for libvirt to define and list it."""
    record = f"<metadata>{metadata.render(meta)}</metadata>" if meta else ""
    return (
        f"<domain type='qemu'><name>{name}</name><uuid>{uuid.uuid4()}</uuid>"
        f"<memory unit='MiB'>32</memory><vcpu>1</vcpu>{record}"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )


@pytest.fixture
def define(sandbox: sb.Sandbox) -> Iterator[object]:
    """define(host, name, meta): a guest defined with virsh on a host, undefined afterwards."""
    made: list[tuple[str, str]] = []

    def make(host: str, name: str, meta: model.GuestMeta | None = None) -> None:
        sandbox.exec(
            host,
            [
                "sh",
                "-c",
                'f=$(mktemp) && cat > "$f" && virsh -q define "$f"; r=$?; rm -f "$f"; exit $r',
            ],
            input=guest_xml(name, meta),
        )
        made.append((host, name))

    yield make
    for host, name in made:
        sandbox.exec(host, ["virsh", "-q", "undefine", name], check=False)


def test_status_shows_up_hosts_and_the_powered_off_one(sandbox: sb.Sandbox) -> None:
    code, doc = sb.mclu_json("status", inventory=sandbox.inventory)
    found = states(doc)
    assert [found[h] for h in sandbox.up_hosts] == ["on"] * sb.HOSTS
    assert found[sandbox.off_host] == "off"
    assert code == 0  # an off host is an answer, not a failure
    on = next(h for h in doc["hosts"] if h["name"] == sandbox.up_hosts[0])
    assert on["cpus"] == 2 and on["memory_total"] == 4 << 30  # the sandbox's capacity overrides
    assert on["hostname"] == sandbox.up_hosts[0]  # answered by that host's own libvirtd


def test_status_table_for_people(sandbox: sb.Sandbox) -> None:
    done = sb.mclu("status", inventory=sandbox.inventory)
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["HOST", "STATE", "CPUS"]
    off = next(line for line in lines if line.startswith(sandbox.off_host))
    assert " off " in off and "unreachable" in off


def test_host_whose_libvirtd_is_stopped_is_libvirt_down(sandbox: sb.Sandbox) -> None:
    host = sandbox.up_hosts[1]
    with sb.libvirtd_stopped(host):
        code, doc = sb.mclu_json("status", inventory=sandbox.inventory)
    assert states(doc)[host] == "libvirt down"
    assert states(doc)[sandbox.up_hosts[0]] == "on"
    assert code == 1
    code, doc = sb.mclu_json("status", "--host", host, inventory=sandbox.inventory)
    assert states(doc)[host] == "on" and code == 0  # and back once it runs again


def test_key_the_hosts_do_not_accept_is_auth_failed(sandbox: sb.Sandbox, tmp_path: Path) -> None:
    inventory = sandbox.with_stranger_key(tmp_path)
    host = sandbox.up_hosts[0]
    done = sb.mclu("info", f"{host}:nothing", inventory=inventory)
    assert done.returncode == 1
    assert done.stderr.startswith(f"mclu: error: {host}: ssh refused root@{sandbox.address(host)}")
    assert done.stderr.count("\n") == 1  # one line, no traceback
    code, doc = sb.mclu_json("status", "--host", host, inventory=inventory)
    assert states(doc) == {host: "auth failed"} and code == 1


def test_changed_host_key_is_refused_with_the_fix(sandbox: sb.Sandbox, tmp_path: Path) -> None:
    host = sandbox.up_hosts[0]
    inventory, known = sandbox.with_changed_host_key(host, tmp_path)
    done = sb.mclu("status", "--host", host, inventory=inventory)
    assert done.returncode == 1
    assert "host key changed" in done.stdout
    _, doc = sb.mclu_json("status", "--host", host, inventory=inventory)
    assert "ssh-keygen" in doc["hosts"][0]["error"] and str(known) in doc["hosts"][0]["error"]


def test_unknown_host_key_is_refused_with_how_to_accept(
    sandbox: sb.Sandbox, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    inventory = sandbox.variant(tmp_path / "hosts.toml", known_hosts=str(known))
    code, doc = sb.mclu_json("status", "--host", sandbox.up_hosts[0], inventory=inventory)
    assert doc["hosts"][0]["state"] == "host key unknown" and code == 1
    assert "accept" in doc["hosts"][0]["error"]


def test_list_and_info_find_guests_and_read_mclu_metadata(
    sandbox: sb.Sandbox, define: object
) -> None:
    assert callable(define)
    a, b = sandbox.up_hosts[0], sandbox.up_hosts[1]
    name = f"t-{uuid.uuid4().hex[:8]}"
    meta = model.GuestMeta(
        template="tiny", revision="3", built="2026-11-20T10:00:00Z", options=(("memory", "32M"),)
    )
    define(a, name, meta)
    define(b, f"{name}-pet")
    code, doc = sb.mclu_json("list", inventory=sandbox.inventory)
    assert code == 0
    guests = {g["name"]: g for g in doc["guests"]}
    assert guests[name]["host"] == a and guests[name]["state"] == "shut off"
    assert guests[name]["mclu"]["template"] == "tiny"
    assert guests[name]["mclu"]["options"] == {"memory": "32M"}
    assert guests[f"{name}-pet"]["host"] == b and guests[f"{name}-pet"]["mclu"] is None
    assert [f["name"] for f in doc["failed_hosts"]] == [sandbox.off_host]

    code, doc = sb.mclu_json("info", name, inventory=sandbox.inventory)
    assert code == 0 and doc["guest"]["host"] == a and doc["guest"]["memory"] == 32 << 20

    define(b, name)  # now two hosts have it
    listed = sb.mclu("list", inventory=sandbox.inventory)
    assert listed.returncode == 0
    assert (
        f"mclu: two guests named {name}, on {a} and {b}: name them as HOST:{name}"
        in listed.stderr.splitlines()
    )
    code, doc = sb.mclu_json("list", inventory=sandbox.inventory)
    assert [g["duplicate"] for g in doc["guests"] if g["name"] == name] == [True, True]
    done = sb.mclu("info", name, inventory=sandbox.inventory)
    assert done.returncode == 1
    assert f"exists on {a} and {b}; name it as HOST:{name}" in done.stderr
    code, doc = sb.mclu_json("info", f"{b}:{name}", inventory=sandbox.inventory)
    assert code == 0 and doc["guest"]["mclu"] is None

    done = sb.mclu("info", "no-such-guest", inventory=sandbox.inventory)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"mclu: error: no guest named 'no-such-guest' "
        f"({sandbox.off_host} did not answer: it may be there)"
    )
