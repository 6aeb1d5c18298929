"""The sandbox as a whole: `up` brings every host up from nothing (or finds it healthy), `down`
removes every trace of it, also after a crash half way through either.

The parts are in their own modules: files and keys written before boot (files, keys), the
bridge and veths (network), namespaces and the processes in them (namespaces, anchors), a
host's power and daemons (power, daemons, readiness), the capability cache (capability_cache),
the wake-on-LAN listener (wol_listener) and status; the package docstring tells how a fake
host is made.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from mclu.sandbox import config, lan, network, wol_listener
from mclu.sandbox.anchors import orphan_anchor_netns
from mclu.sandbox.capability_cache import save_seed
from mclu.sandbox.config import HostSpec
from mclu.sandbox.files import prepare_files, write_inventory
from mclu.sandbox.namespaces import NETNS_DIR, kill_netns, sandbox_netns_names
from mclu.sandbox.power import boot_and_wait
from mclu.sandbox.state import Paths, write_record
from mclu.sandbox.status import is_healthy

Report = Callable[[str], None]


def up(paths: Paths, count: int, report: Report) -> bool:
    """Bring up `count` hosts plus one powered-off host. False if it was already up."""
    hosts = config.host_specs(count + 1)
    running, spare = hosts[:-1], hosts[-1]
    if is_healthy(paths, count):
        # Still write the inventory: a newer mclu may write it differently.
        write_inventory(paths, running, spare)
        if not wol_listener.running_pids():
            wol_listener.start(paths)
        if not lan.running_pids():
            lan.start(paths)
        return False
    down(paths, report=lambda _line: None)
    try:
        prepare_files(paths, hosts)
        network.create_bridge()
        lan.start(paths)
        network.create_host_networks(paths, hosts)
        network.set_link(spare, up=False)
        _boot_all(paths, running, report)
        save_seed(paths, running[0])
        write_inventory(paths, running, spare)
        report(f"{spare.name}  {spare.address:<12}  off (configured, powered off)")
        write_record(paths, count)
        wol_listener.start(paths)
        report(f"wake-on-LAN listener on {config.BRIDGE} ({config.WOL_ADDRESS}:{config.WOL_PORT})")
        report(f"DHCP server on {config.BRIDGE} ({config.DHCP_FIRST} to {config.DHCP_LAST})")
        nat_hosts = ", ".join(h.name for h in running if config.runs_nat_network(h))
        report(
            f"libvirt NAT network {config.NAT_NETWORK} ({config.NAT_SUBNET}.0/24) on {nat_hosts}"
        )
    except BaseException:
        with contextlib.suppress(Exception):
            down(paths, report=lambda _line: None)
        raise
    return True


def _boot_all(paths: Paths, hosts: Sequence[HostSpec], report: Report) -> None:
    lock = threading.Lock()

    def one(host: HostSpec) -> None:
        elapsed = boot_and_wait(paths, host)
        with lock:
            report(f"{host.name}  {host.address:<12}  up ({elapsed:.1f} s)")

    todo = list(hosts)
    if not paths.seed.is_dir():
        # Cold: one host pays for the capability probe, the rest start from its cache.
        one(todo.pop(0))
        save_seed(paths, hosts[0])
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=min(len(todo), 32)) as pool:
        futures = [pool.submit(one, h) for h in todo]
        for future in as_completed(futures):
            future.result()


def down(paths: Paths, report: Report) -> None:
    """Remove every process, namespace, veth and bridge of the sandbox (also after a crash)."""
    # First the listener, so that no host is powered on while the rest goes.
    if wol_listener.stop(paths):
        report("stopped the wake-on-LAN listener")
    if lan.stop(paths):
        report(f"stopped the DHCP server on {config.BRIDGE}")
    names = sandbox_netns_names()
    for ino, name in _namespaces_to_empty(paths, names).items():
        kill_netns(ino, name)
    for name in names:
        network.delete_namespace(name)
        report(f"removed {name}")
    for pidfile in (paths.state / "hosts").glob("*/anchor.pid"):
        pidfile.unlink()
    network.delete_links()
    if network.delete_bridge():
        report(f"removed bridge {config.BRIDGE}")
    network.unmount_netns_dir(paths)
    paths.record.unlink(missing_ok=True)


def _namespaces_to_empty(paths: Paths, names: Sequence[str]) -> dict[int, str]:
    """Inode -> name of each host namespace whose processes must die before it is deleted."""
    inodes: dict[int, str] = {}
    for name in names:
        with contextlib.suppress(OSError):
            inodes[(NETNS_DIR / name).stat().st_ino] = name
    # Anchors whose namespace mount is already gone (a crash half way through `down`).
    for pidfile in (paths.state / "hosts").glob("*/anchor.pid"):
        ino = orphan_anchor_netns(pidfile)
        if ino is not None:
            inodes.setdefault(ino, pidfile.parent.name)
    return inodes


def purge(paths: Paths) -> None:
    """Delete the state directory (keys, caches, images): the next `up` starts cold."""
    if paths.state.is_dir():
        shutil.rmtree(paths.state)
