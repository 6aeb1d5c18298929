"""What the sandbox writes before its hosts boot: the scripts hosts bind-mount, the ssh client
config, each host's directory (libvirt's configs and directories, /root, /etc/hosts,
sshd_config), and mclu's inventory. The texts themselves are rendered in config.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from mclu.sandbox import config
from mclu.sandbox.config import HostSpec
from mclu.sandbox.keys import ensure_keys, host_key_path
from mclu.sandbox.state import Paths, write_file

REAL_ETC_LIBVIRT = Path("/etc/libvirt")
REAL_VAR_LIB_LIBVIRT = Path("/var/lib/libvirt")


def install_scripts(paths: Paths) -> None:
    """Copy the stand-in and hostinit.sh into the state dir (hosts bind-mount from there)."""
    paths.bin.mkdir(parents=True, exist_ok=True)
    package = resources.files("mclu.sandbox")
    for name, dest in (("standin.sh", paths.standin), ("hostinit.sh", paths.hostinit)):
        data = package.joinpath(name).read_bytes()
        if not dest.exists() or dest.read_bytes() != data:
            tmp = dest.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.chmod(0o755)
            tmp.replace(dest)


def _copy_dir_skeleton(src: Path, dst: Path) -> None:
    for dirpath, _dirs, _files in os.walk(src):
        (dst / Path(dirpath).relative_to(src)).mkdir(parents=True, exist_ok=True)


def prepare_files(paths: Paths, hosts: Sequence[HostSpec]) -> None:
    """Keys, per-host directories and configs, client config: everything on disk."""
    install_scripts(paths)
    keys = ensure_keys(paths, hosts)
    known_hosts = config.render_known_hosts(keys.hosts)
    write_file(paths.client / "known_hosts", known_hosts)
    write_file(paths.client / "ssh_config", config.render_client_ssh_config(paths.state, hosts))
    authorized = "\n".join([keys.client, *keys.roots]) + "\n"
    etc_hosts = config.render_etc_hosts(hosts)
    for host in hosts:
        _prepare_host_dir(paths, host, known_hosts, authorized, etc_hosts)


def _prepare_host_dir(
    paths: Paths, host: HostSpec, known_hosts: str, authorized: str, etc_hosts: str
) -> None:
    hdir = paths.host(host)
    _prepare_libvirt_dirs(hdir, host)
    root = hdir / "root"
    root.chmod(0o700)
    (root / ".ssh").chmod(0o700)
    write_file(root / ".ssh" / "authorized_keys", authorized, 0o600)
    write_file(root / ".ssh" / "known_hosts", known_hosts, 0o644)
    write_file(hdir / "hosts", etc_hosts)
    write_file(hdir / "sshd_config", config.render_sshd_config(host, host_key_path(paths, host)))


def _prepare_libvirt_dirs(hdir: Path, host: HostSpec) -> None:
    """The host's private /etc/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt."""
    etc = hdir / "etc-libvirt"
    if not etc.exists():
        shutil.copytree(REAL_ETC_LIBVIRT, etc, symlinks=True)
    # Re-rendered from the real files every time, so edits never pile up.
    for name, settings in (
        ("libvirtd.conf", config.libvirtd_settings(host)),
        ("qemu.conf", config.qemu_settings(host)),
    ):
        original = (REAL_ETC_LIBVIRT / name).read_text()
        write_file(etc / name, config.edit_conf(original, settings), 0o600)
    _prepare_nat_network(etc, host)
    _copy_dir_skeleton(REAL_VAR_LIB_LIBVIRT, hdir / "var-lib-libvirt")
    (hdir / "var-lib-libvirt" / "images").mkdir(exist_ok=True)
    (hdir / "var-log-libvirt" / "qemu").mkdir(parents=True, exist_ok=True)
    (hdir / "var-cache-libvirt" / "qemu").mkdir(parents=True, exist_ok=True)


def _prepare_nat_network(etc: Path, host: HostSpec) -> None:
    """libvirt's NAT network `default` on the hosts that run it: defined and autostarted on a
    subnet of the sandbox's own; on the others libvirt's stock definition stays, inactive."""
    networks = etc / "qemu" / "networks"
    autostart = networks / "autostart" / f"{config.NAT_NETWORK}.xml"
    if autostart.is_symlink() or autostart.exists():
        autostart.unlink()
    if not config.runs_nat_network(host):
        stock = REAL_ETC_LIBVIRT / "qemu" / "networks" / f"{config.NAT_NETWORK}.xml"
        if stock.is_file():
            write_file(networks / stock.name, stock.read_text(), 0o600)
        return
    write_file(networks / f"{config.NAT_NETWORK}.xml", config.render_nat_network(host), 0o600)
    autostart.parent.mkdir(parents=True, exist_ok=True)
    autostart.symlink_to(f"../{config.NAT_NETWORK}.xml")


def write_inventory(paths: Paths, running: Iterable[HostSpec], powered_off: HostSpec) -> None:
    """mclu's inventory of the sandbox (hosts.toml)."""
    write_file(paths.inventory, config.render_inventory(paths.state, running, powered_off))
