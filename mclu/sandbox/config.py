"""Pure rendering for the mclu sandbox: names, addresses and every generated config file.

Nothing here touches the system, so all of it is unit-tested (tests/unit/test_sandbox_config.py).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Several sandboxes can run side by side, one per instance number (0-9): each with its own
# namespaces, bridge, subnet and state dir. Instance 0 is the default and keeps the plain names.
INSTANCE_ENV = "MCLU_SANDBOX_INSTANCE"


def _instance() -> int:
    text = os.environ.get(INSTANCE_ENV, "0") or "0"
    if not text.isdigit() or int(text) > 9:
        raise SystemExit(f"{INSTANCE_ENV} must be a number from 0 to 9, got {text!r}")
    return int(text)


INSTANCE = _instance()
_TAG = "" if INSTANCE == 0 else str(INSTANCE)

DEFAULT_STATE_DIR = Path(f"/var/tmp/mclu-sandbox{'-' + _TAG if _TAG else ''}")
STATE_DIR_ENV = "MCLU_SANDBOX_DIR"

BRIDGE = f"mclubr{INSTANCE}"
SUBNET = f"10.213.{INSTANCE}"
BRIDGE_ADDRESS = f"{SUBNET}.1"
PREFIX_LEN = 24
FIRST_HOST_OCTET = 10
MAX_HOSTS = 90  # 10.213.N.10 .. 10.213.N.99
# The LAN's DHCP server (mclu.sandbox.lan) leases addresses above the hosts' to guests
# bridged onto it; short leases, so the many guests of a test run never exhaust the pool.
DHCP_FIRST = f"{SUBNET}.100"
DHCP_LAST = f"{SUBNET}.250"
DHCP_LEASE_TIME = "2m"  # dnsmasq's shortest: a deleted guest's address is free again soon
NETNS_PREFIX = f"mclu{_TAG}-"
VETH_PREFIX = f"mclv{_TAG}-"  # root-namespace end of each host's veth (inside it is eth0)
ANCHOR_PREFIX = f"mclu{_TAG}-anchor-"  # the name each host's anchor process runs under
HOST_IFACE = "eth0"
# Inside each host: the bridge that carries its uplink (eth0) and its address, so guests with
# `network = "bridge:br0"` sit on the sandbox's LAN beside the hosts.
HOST_BRIDGE = "br0"
# libvirt's NAT network `default` runs on these hosts (its own bridge and dnsmasq inside the
# host's namespaces): guests on it are reachable only through their host.
NAT_NETWORK = "default"
NAT_NETWORK_HOSTS = ("ham0",)
NAT_SUBNET = f"192.168.{200 + INSTANCE}"
# Wake-on-LAN (`mclu on`): packets go to the bridge's own broadcast address, never the
# machine's 255.255.255.255, and the sandbox's listener (mclu.sandbox.wol) hears them there.
WOL_ADDRESS = f"{SUBNET}.255"
WOL_PORT = 9
HOST_PREFIX = "ham"
MAC_PREFIX = f"52:54:00:d{5 + INSTANCE:x}"
# Namespace for the hosts' libvirt host_uuid: must differ per host (else libvirt refuses
# migration as "same host"), and stay stable across down/up.
UUID_NAMESPACE = uuid.UUID("6d636c75-7361-6e64-626f-780000000000")

# Root's PATH inside a host: /usr/local/sbin (the power stand-ins) comes first.
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class HostSpec:
    """One fake hypervisor host: everything derived from its index."""

    index: int

    @property
    def name(self) -> str:
        return f"{HOST_PREFIX}{self.index}"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{FIRST_HOST_OCTET + self.index}"

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.name}"

    @property
    def veth(self) -> str:
        return f"{VETH_PREFIX}{self.name}"

    @property
    def mac(self) -> str:
        return f"{MAC_PREFIX}:{self.index // 256:02x}:{self.index % 256:02x}"

    @property
    def host_uuid(self) -> str:
        return str(uuid.uuid5(UUID_NAMESPACE, self.name))


def host_link_commands(host: HostSpec) -> list[str]:
    """`ip -batch` lines, run inside a new host's namespace, that put its address on br0 with
    eth0 enslaved to it (eth0 itself goes up when the host is powered on)."""
    return [
        # The host's MAC on the bridge too: a bridge otherwise takes the lowest of its ports'.
        f"link add {HOST_BRIDGE} address {host.mac} type bridge forward_delay 0",
        f"link set {HOST_IFACE} master {HOST_BRIDGE}",
        f"addr add {host.address}/{PREFIX_LEN} broadcast {WOL_ADDRESS} dev {HOST_BRIDGE}",
        f"link set {HOST_BRIDGE} up",
        "link set lo up",
    ]


def dnsmasq_argv(leases: Path, pidfile: Path, log: Path) -> list[str]:
    """The LAN's DHCP server: dnsmasq bound to this instance's bridge only, no DNS, no route.

    It offers neither a default route nor a DNS server, so a guest's traffic stays on the
    sandbox's bridges; `--interface=BRIDGE` also tells this instance's dnsmasq from others'.
    """
    return [
        "/usr/sbin/dnsmasq",
        f"--interface={BRIDGE}",
        "--bind-interfaces",
        "--except-interface=lo",
        "--port=0",
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        f"--dhcp-range={DHCP_FIRST},{DHCP_LAST},255.255.255.0,{DHCP_LEASE_TIME}",
        "--dhcp-option=option:router",
        "--dhcp-option=option:dns-server",
        "--dhcp-authoritative",
        f"--dhcp-leasefile={leases}",
        f"--pid-file={pidfile}",
        f"--log-facility={log}",
        "--log-dhcp",
    ]


def runs_nat_network(host: HostSpec) -> bool:
    return host.name in NAT_NETWORK_HOSTS


def render_nat_network(host: HostSpec) -> str:
    """libvirt's XML of the NAT network `default` of a host: libvirt's own, on a subnet that
    is neither the LAN's nor libvirt's stock 192.168.122.0/24."""
    net_uuid = uuid.uuid5(UUID_NAMESPACE, f"{host.name}/network/{NAT_NETWORK}")
    return "\n".join(
        [
            "<network>",
            f"  <name>{NAT_NETWORK}</name>",
            f"  <uuid>{net_uuid}</uuid>",
            "  <forward mode='nat'/>",
            "  <bridge name='virbr0' stp='on' delay='0'/>",
            f"  <ip address='{NAT_SUBNET}.1' netmask='255.255.255.0'>",
            "    <dhcp>",
            f"      <range start='{NAT_SUBNET}.2' end='{NAT_SUBNET}.254'/>",
            "    </dhcp>",
            "  </ip>",
            "</network>",
            "",
        ]
    )


def host_specs(count: int) -> list[HostSpec]:
    """Hosts ham0..ham{count-1}."""
    if not 0 < count <= MAX_HOSTS:
        raise ValueError(f"host count must be 1..{MAX_HOSTS}, not {count}")
    return [HostSpec(i) for i in range(count)]


_HOST_NAME_RE = re.compile(rf"^{HOST_PREFIX}(0|[1-9][0-9]*)$")


def parse_host_name(name: str) -> HostSpec:
    """'ham3' -> HostSpec(3); also accepts the host's address."""
    match = _HOST_NAME_RE.match(name)
    if match is None and name.startswith(f"{SUBNET}."):
        octet = name.rsplit(".", 1)[1]
        if octet.isdigit():
            index = int(octet) - FIRST_HOST_OCTET
            if 0 <= index < MAX_HOSTS:
                return HostSpec(index)
    if match is None or int(match.group(1)) >= MAX_HOSTS:
        raise ValueError(f"not a sandbox host name: {name!r} (expected ham0, ham1, ...)")
    return HostSpec(int(match.group(1)))


def quote_conf(value: str) -> str:
    """A string value in libvirt's conf syntax (and TOML's basic strings)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def edit_conf(text: str, settings: Mapping[str, str], marker: str = "mclu-sandbox") -> str:
    """Set keys in a libvirt-style `key = value` config file.

    Existing active assignments of those keys are commented out (libvirt takes the first
    one it sees), including the continuation lines of a multi-line list, and the settings are
    appended in a block. Applying it twice gives the same result as once.
    """
    begin, end = f"# BEGIN {marker}", f"# END {marker}"
    out: list[str] = []
    skipping_block = False
    in_list = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == begin:
            skipping_block = True
            continue
        if skipping_block:
            skipping_block = stripped != end
            continue
        if in_list:
            out.append("#" + line)
            in_list = "]" not in stripped
            continue
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
        if key in settings and not stripped.startswith("#"):
            out.append("#" + line)
            value = stripped.split("=", 1)[1]
            in_list = "[" in value and "]" not in value
            continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    block = [begin] + [f"{k} = {v}" for k, v in settings.items()] + [end]
    return "\n".join([*out, "", *block]) + "\n"


def libvirtd_settings(host: HostSpec) -> dict[str, str]:
    return {
        "host_uuid": quote_conf(host.host_uuid),
        "auth_unix_rw": quote_conf("none"),
        "auth_unix_ro": quote_conf("none"),
        # No journald here: warnings go to a file in the host's (private) log directory.
        "log_outputs": quote_conf("3:file:/var/log/libvirt/libvirtd.log"),
    }


def qemu_settings(host: HostSpec) -> dict[str, str]:
    return {
        # No machined, and cgroupfs is shared by every fake host.
        "cgroup_controllers": "[ ]",
        "security_driver": quote_conf("none"),
        "user": quote_conf("root"),
        "group": quote_conf("root"),
        "migration_address": quote_conf(host.address),
        "migration_host": quote_conf(host.address),
    }


def render_sshd_config(host: HostSpec, host_key: Path) -> str:
    return "\n".join(
        [
            f"# Written by mclu-sandbox for fake host {host.name}.",
            "Port 22",
            f"ListenAddress {host.address}",
            f"HostKey {host_key}",
            "PidFile /run/sshd.pid",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AuthorizedKeysFile .ssh/authorized_keys",
            # Parallel clients (mclu uses up to 32 connections) must not be dropped.
            "MaxStartups 100",
            "MaxSessions 100",
            # A controller that vanished (network cut, killed host) is dropped within 15 s,
            # and with it the guest locks its runs held (mclu.act.locks): cf. docs/faults.md.
            "ClientAliveInterval 5",
            "ClientAliveCountMax 3",
            "UseDNS no",
            "PrintMotd no",
            "X11Forwarding no",
            "AcceptEnv LANG LC_*",
            f"SetEnv PATH={STD_PATH}",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ]
    )


def render_etc_hosts(hosts: Iterable[HostSpec]) -> str:
    lines = [
        "# Written by mclu-sandbox: the sandbox's hosts.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{BRIDGE_ADDRESS}\tmclu-gateway",
    ]
    lines += [f"{h.address}\t{h.name}" for h in hosts]
    return "\n".join(lines) + "\n"


def render_known_hosts(keys: Iterable[tuple[HostSpec, str]]) -> str:
    """known_hosts lines for (host, 'ssh-ed25519 AAAA...') pairs, by name and address."""
    lines = []
    for host, pubkey in keys:
        key_type, key_b64 = pubkey.split()[:2]
        lines.append(f"{host.name},{host.address} {key_type} {key_b64}")
    return "\n".join(lines) + "\n"


def render_client_ssh_config(state_dir: Path, hosts: Iterable[HostSpec]) -> str:
    client = state_dir / "client"
    lines = [
        "# Written by mclu-sandbox. Use: ssh -F THIS_FILE 10.213.0.10  (or: ssh -F THIS_FILE ham0)",
    ]
    for host in hosts:
        lines += [f"Host {host.name}", f"    HostName {host.address}"]
    lines += [
        f"Host {SUBNET}.* {HOST_PREFIX}*",
        "    User root",
        "    Port 22",
        f"    IdentityFile {client / 'id_ed25519'}",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {client / 'known_hosts'}",
        "    GlobalKnownHostsFile /dev/null",
        "    StrictHostKeyChecking yes",
        "    BatchMode yes",
        "    ConnectTimeout 3",
        "    LogLevel ERROR",
        "",
    ]
    return "\n".join(lines)


def render_inventory(state_dir: Path, running: Iterable[HostSpec], powered_off: HostSpec) -> str:
    """mclu's inventory (TOML) for the sandbox: the running hosts plus one powered off."""
    client = state_dir / "client"
    lines = [
        "# Written by mclu-sandbox: the sandbox's hosts. Use with: mclu -c THIS_FILE status",
        "parallel = 50",
        "# The sandbox's own template repository (mclu-sandbox templates builds it).",
        f'template_repos = ["{state_dir / "repo" / "virt-builder" / "repos.d"}"]',
        "[defaults]",
        'user = "root"',
        "port = 22",
        'domain_type = "qemu"            # TCG: KVM hangs guests on these machines',
        'image_dir = "/var/lib/libvirt/images"',
        'reserve_memory = "256 MiB"',
        "reserve_cpus = 0",
        "cpus = 2                         # capacity overrides: the fake hosts share one kernel",
        'memory = "4 GiB"',
        "connect_timeout = 3",
        f"identity_file = {quote_conf(str(client / 'id_ed25519'))}",
        "identities_only = true",
        f"known_hosts = {quote_conf(str(client / 'known_hosts'))}",
        'ssh_config = "none"',
        'power_off_command = ["poweroff"]   # the fake host\'s harmless stand-in',
        f"wol_address = {quote_conf(WOL_ADDRESS)}   # the bridge's broadcast, for mclu on",
        f"wol_port = {WOL_PORT}",
        f'network = "bridge:{HOST_BRIDGE}"              # the sandbox LAN, with its DHCP server',
    ]
    for host in running:
        lines += ["", *_inventory_host(host)]
    lines += [
        "",
        f"# Configured but powered off; power it on with: mclu-sandbox start {powered_off.name}",
        *_inventory_host(powered_off),
    ]
    return "\n".join(lines) + "\n"


def _inventory_host(host: HostSpec) -> list[str]:
    return [
        f"[hosts.{host.name}]",
        f"address = {quote_conf(host.address)}",
        f"mac = {quote_conf(host.mac)}",
        'tags = ["sandbox"]',
    ]


def render_env(state_dir: Path) -> str:
    return "\n".join(
        [
            f"export MCLU_SANDBOX_DIR={state_dir}",
            f"export MCLU_CONFIG={state_dir / 'hosts.toml'}",
            f"export MCLU_SANDBOX_SSH_CONFIG={state_dir / 'client' / 'ssh_config'}",
            "# libguestfs (mclu build personalises disks with it) hangs under this machine's",
            "# paravirtual KVM: run its appliance with TCG, as the sandbox's guests are.",
            "export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg",
            '# ssh into a host:   ssh -F "$MCLU_SANDBOX_SSH_CONFIG" ham0',
            "# run inside a host: mclu-sandbox exec ham0 -- virsh -c qemu:///system list",
            "",
        ]
    )
