"""libvirt's QEMU capability cache, kept warm: the first libvirtd to start probes QEMU (slow
under TCG on a loaded machine), and every later host starts from a copy of what it found."""

from __future__ import annotations

import shutil
from pathlib import Path

from mclu.sandbox.config import HostSpec
from mclu.sandbox.state import Paths


def _host_cache(paths: Paths, host: HostSpec) -> Path:
    return paths.host(host) / "var-cache-libvirt" / "qemu"


def seed_capability_cache(paths: Paths, host: HostSpec) -> None:
    """Give a host the warm QEMU capability cache before its libvirtd starts."""
    if not paths.seed.is_dir():
        return
    dst = _host_cache(paths, host)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(paths.seed, dst, symlinks=True)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def save_seed(paths: Paths, host: HostSpec) -> bool:
    """Keep the host's capability cache as the seed if it differs (first run, new qemu)."""
    src = _host_cache(paths, host)
    fresh = _tree_bytes(src)
    if not any(name.startswith("capabilities/") for name in fresh):
        return False
    if paths.seed.is_dir() and _tree_bytes(paths.seed) == fresh:
        return False
    tmp = paths.seed.with_name("qemu-cache.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, symlinks=True)
    shutil.rmtree(paths.seed, ignore_errors=True)
    tmp.replace(paths.seed)
    return True
