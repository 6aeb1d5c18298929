"""The sandbox's wake-on-LAN listener: what a real NIC with WoL armed does, for the fake hosts.

`mclu-sandbox up` starts it (`python -m mclu.sandbox.wol --state DIR --bridge mclubrN --port P`)
in the machine's root network namespace, bound to the sandbox's bridge only (SO_BINDTODEVICE),
so it hears the broadcasts `mclu on` sends to the bridge's broadcast address and nothing from
any other network. On a valid magic packet for the MAC of a powered-off sandbox host it powers
that host on (`power.start_host`). `down` stops it. Everything it does goes to
STATE/wol-listener.log.

`parse_magic_packet` and `host_for_mac` are pure (tests/unit/test_sandbox_wol.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from mclu.sandbox import anchors, config, power, state
from mclu.sandbox.errors import SandboxError
from mclu.sandbox.state import Paths

log = logging.getLogger("mclu.sandbox.wol")

SYNC = b"\xff" * 6
MAC_LENGTH = 6
MAC_REPEATS = 16
PACKET_LENGTH = len(SYNC) + MAC_LENGTH * MAC_REPEATS  # 102
# A SecureOn password of 4 or 6 bytes may follow the 16 repetitions; the fake NICs have none
# set, and real ones without a password ignore it too.
PASSWORD_LENGTHS = (0, 4, 6)
# Seconds to wait for the sandbox lock: an `up` or `start` may hold it for a few seconds.
LOCK_WAIT = 60.0


def parse_magic_packet(data: bytes) -> str | None:
    """The MAC (52:54:00:...) a wake-on-LAN payload is for, or None when it is not one.

    A payload is 6 bytes 0xFF, then one MAC 16 times, then optionally a 4- or 6-byte password.
    """
    if len(data) - PACKET_LENGTH not in PASSWORD_LENGTHS or not data.startswith(SYNC):
        return None
    mac = data[len(SYNC) : len(SYNC) + MAC_LENGTH]
    if data[len(SYNC) : PACKET_LENGTH] != mac * MAC_REPEATS:
        return None
    return ":".join(f"{b:02x}" for b in mac)


def host_for_mac(mac: str, hosts: Iterable[config.HostSpec]) -> config.HostSpec | None:
    """The sandbox host whose NIC has `mac`, if any."""
    return next((h for h in hosts if h.mac == mac.lower()), None)


def handle(paths: Paths, data: bytes, sender: str) -> None:
    """Act on one datagram: power on the powered-off host it wakes, log everything else."""
    mac = parse_magic_packet(data)
    if mac is None:
        log.info("from %s: %d bytes, not a magic packet: ignored", sender, len(data))
        return
    host = host_for_mac(mac, state.known_hosts_of_record(paths))
    if host is None:
        log.info("from %s: magic packet for %s: no sandbox host has that MAC", sender, mac)
        return
    if anchors.anchor_pid(paths, host) is not None:
        log.info("from %s: magic packet for %s (%s): already on", sender, mac, host.name)
        return
    log.info("from %s: magic packet for %s (%s): powering on", sender, mac, host.name)
    try:
        with state.locked(paths, wait=LOCK_WAIT):
            elapsed = power.start_host(paths, host)
    except SandboxError as e:
        log.error("%s: power on failed: %s", host.name, e)
        return
    log.info("%s: on (%.1f s)", host.name, elapsed)


def listen(bridge: str, port: int) -> socket.socket:
    """A UDP socket on `port` that receives only what arrives on `bridge` (broadcasts too)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Bound to the device before bind(): another instance's listener on its own bridge may
    # use the same port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, bridge.encode())
    sock.bind(("", port))
    return sock


def serve(paths: Paths, bridge: str, port: int) -> None:
    with listen(bridge, port) as sock:
        paths.wol_pidfile.write_text(f"{os.getpid()}\n")
        log.info("listening on %s, UDP port %d (pid %d)", bridge, port, os.getpid())
        while True:
            data, (address, sender_port) = sock.recvfrom(4096)
            handle(paths, data, f"{address}:{sender_port}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mclu.sandbox.wol", description="the mclu sandbox's wake-on-LAN listener"
    )
    parser.add_argument("--state", type=Path, required=True, help="the sandbox's state dir")
    parser.add_argument("--bridge", required=True, help="the sandbox's bridge (mclubrN)")
    parser.add_argument("--port", type=int, default=config.WOL_PORT)
    args = parser.parse_args(argv)
    if args.bridge != config.BRIDGE:
        parser.error(
            f"--bridge {args.bridge} is not this instance's bridge {config.BRIDGE} "
            f"(set {config.INSTANCE_ENV})"
        )
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s wol-listener %(levelname)s %(message)s",
    )
    try:
        serve(Paths(args.state), args.bridge, args.port)
    except OSError as e:
        log.error("cannot listen on %s port %d: %s", args.bridge, args.port, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
