"""Benchmark `mclu list` with guests' addresses against today's `list` without them, same run.

    .venv/bin/python bench/list.py [--runs 15] [--on testdriver|sandbox] [--guests 10]

Both are the read pass `mclu list` makes (`read.snapshot.take`) and its table, in process:
without `addresses` (the list before addresses were read) and with `read.addresses.Wanted`
(the DHCP leases, then the neighbour table for guests no lease knows). Runs alternate, so a
slow moment of this shared machine touches both alike.

--on testdriver: 3 hosts, each libvirt's test driver on its own node file with --guests
running guests that have a bridged NIC (the test driver knows an address for each, from
every source), reached as `test:///` URIs: libvirt's calls without a network.
--on sandbox: the sandbox's first 3 hosts (MCLU_SANDBOX_INSTANCE; brought up with 3 hosts if
down, and taken down after), each with --guests diskless 32 MiB guests on libvirt's NAT
network `default` (a transient one made for the run where a host has none), whose iPXE asks
its DHCP server for a lease: addresses from a real libvirtd's lease source over ssh. The
guests are paused once leased (no CPU), and removed at the end with the networks made.
Goal (issue 12): with addresses <= 1.3 x without.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

from mclu import model
from mclu.cli import read_commands
from mclu.config import inventory as inventory_module
from mclu.hosts import open_session
from mclu.read import addresses, snapshot

VENV_BIN = Path(sys.executable).parent
HOSTS = 3
NODE = """<node><cpu><mhz>2400</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>
<cores>4</cores><threads>2</threads><active>8</active></cpu><memory>16777216</memory>
{domains}</node>"""
DOMAIN = """<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os><devices><interface type='bridge'>
<mac address='52:54:00:be:{host:02x}:{guest:02x}'/><source bridge='br0'/></interface>
</devices></domain>"""
NETWORK = """<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>
<ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.2'
end='192.168.122.254'/></dhcp></ip></network>"""
SANDBOX_GUEST = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>
<vcpu>1</vcpu><os><type>hvm</type><boot dev='network'/></os><devices><interface type='network'>
<mac address='52:54:00:be:{host:02x}:{guest:02x}'/><source network='default'/>
<model type='virtio'/></interface></devices></domain>"""


async def once(hosts: Sequence[model.HostSpec], wanted: addresses.Wanted | None) -> float:
    start = time.perf_counter()
    snap = await snapshot.take(hosts, open_session, limit=50, addresses=wanted)
    read_commands.list_table(snap)
    read_commands.list_json(snap)
    return time.perf_counter() - start


async def compare(hosts: Sequence[model.HostSpec], runs: int) -> tuple[list[float], list[float]]:
    wanted = addresses.Wanted(addresses.LIST_SOURCES)
    snap = await snapshot.take(hosts, open_session, limit=50, addresses=wanted)
    known = sum(1 for h in snap.ok.values() for a in (h.addresses or {}).values() if a.addresses)
    print(f"{len(snap.ok)} hosts answered, {known} guests with an address; failed: {snap.failed}")
    without, with_addresses = [], []
    for _ in range(runs):
        without.append(await once(hosts, None))
        with_addresses.append(await once(hosts, wanted))
    return without, with_addresses


def testdriver_hosts(directory: Path, guests: int) -> list[model.HostSpec]:
    specs = []
    for h in range(HOSTS):
        domains = "".join(DOMAIN.format(name=f"g{h}-{g}", host=h, guest=g) for g in range(guests))
        node = directory / f"host{h}.xml"
        node.write_text(NODE.format(domains=domains))
        specs.append(model.HostSpec(name=f"h{h}", address="localhost", uri=f"test://{node}"))
    return specs


def sandbox(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "mclu-sandbox"), *args], check=check, capture_output=True, text=True
    )


def on_host(host: str, *argv: str, check: bool = True) -> str:
    return sandbox("exec", host, "--", *argv, check=check).stdout


def sandbox_setup(guests: int, made: list[str]) -> list[model.HostSpec]:
    state = Path(os.environ.get("MCLU_SANDBOX_DIR", "/var/tmp/mclu-sandbox"))
    inventory = state / "hosts.toml"
    names = list(tomllib.loads(inventory.read_text())["hosts"])[:HOSTS]
    for h, host in enumerate(names):
        if "default" not in on_host(host, "virsh", "net-list", "--name"):
            if "default" in on_host(host, "virsh", "net-list", "--all", "--name").split():
                # Defined but inactive (the sandbox defines it on every host, starts it on
                # ham0): started for the run, stopped again after.
                on_host(host, "virsh", "net-start", "default")
            else:
                # Transient: gone once destroyed after the run, nothing left in the config.
                network = state / "bench-list-network.xml"
                network.write_text(NETWORK)
                on_host(host, "virsh", "net-create", str(network))
            made.append(f"{host}:network")
        for g in range(guests):
            name = f"bench-list-{h}-{g}"
            xml = state / f"{name}.xml"
            xml.write_text(SANDBOX_GUEST.format(name=name, host=h, guest=g))
            on_host(host, "virsh", "create", str(xml))
            made.append(f"{host}:{name}")
    wanted = sum(1 for item in made if not item.endswith(":network"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        leased = sum(
            sum(
                1
                for line in on_host(host, "virsh", "net-dhcp-leases", "default").splitlines()
                if " 52:54:00:be:" in line
            )
            for host in names
        )
        print(f"leases: {leased} of {wanted}", flush=True)
        if leased >= wanted:
            break
        time.sleep(5)
    for item in made:
        host, name = item.split(":")
        if name != "network":
            on_host(host, "virsh", "suspend", name)
    inv = inventory_module.load(inventory)
    return [h for h in inv.hosts if h.name in names]


def sandbox_teardown(made: list[str]) -> None:
    for item in made:
        host, name = item.split(":")
        if name != "network":
            on_host(host, "virsh", "destroy", name, check=False)
    for item in made:  # only the networks this run started; a host's own stays
        host, name = item.split(":")
        if name == "network":
            on_host(host, "virsh", "net-destroy", "default", check=False)
    state = Path(os.environ.get("MCLU_SANDBOX_DIR", "/var/tmp/mclu-sandbox"))
    for written in state.glob("bench-list-*.xml"):  # the XML given to virsh create
        written.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--guests", type=int, default=10)
    parser.add_argument("--on", choices=["testdriver", "sandbox"], default="testdriver")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    if args.on == "testdriver":
        with tempfile.TemporaryDirectory() as tmp:
            specs = testdriver_hosts(Path(tmp), args.guests)
            without, with_addresses = asyncio.run(compare(specs, args.runs))
    else:
        was_up = sandbox("status", check=False).returncode == 0
        if not was_up:
            sandbox("up", str(HOSTS))
        made: list[str] = []
        try:
            specs = sandbox_setup(args.guests, made)
            without, with_addresses = asyncio.run(compare(specs, args.runs))
        finally:
            sandbox_teardown(made)
            if not was_up:
                sandbox("down", check=False)
    a, b = statistics.median(without), statistics.median(with_addresses)
    print(
        f"on {args.on}: {HOSTS} hosts x {args.guests} guests, medians of {args.runs} runs, "
        f"wall seconds; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(f"list without addresses (before): {a:.4f}")
    print(f"list with addresses:             {b:.4f}")
    print(f"with / without: {b / a:.2f} (goal <= 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
