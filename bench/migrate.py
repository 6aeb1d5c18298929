"""Benchmark `mclu migrate` of a running guest against `virsh migrate` run on the source host.

    .venv/bin/python bench/migrate.py [--runs 3] [--template tiny] [--hosts ham0 ham1]

On the sandbox (brought up if needed, with its template repository), two guests of the same
template are built on the first host, both running. Per run, in turn, each guest moves to
the other host and back (both directions timed), with local, non-shared disks:
  mclu    `mclu migrate SRC:NAME --to DEST`: the whole command (connecting, reading the
          guest's disks, creating its overlay on the destination, the migration, removing
          the source's copy)
  virsh   the guest's overlay pre-created on the destination (untimed, as virsh's docs
          require), then, on the source host itself, `virsh migrate --live --p2p
          --persistent --undefinesource --copy-storage-all NAME qemu+ssh://root@DEST/system`
          (timed), then the source's copy removed (untimed)
The template base is cached on both hosts before timing starts. Prints medians side by side.
Goal (issue 4): mclu <= 1.25 x virsh.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from mclu.sandbox import config as sandbox_config
from mclu.sandbox import images as sandbox_images

BIN = Path(sys.executable).parent
STATE = Path(os.environ.get("MCLU_SANDBOX_DIR", str(sandbox_config.DEFAULT_STATE_DIR)))
GUESTFS = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}


def run(argv: Sequence[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **GUESTFS})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def on_host(host: str, *argv: str) -> str:
    return run([str(BIN / "mclu-sandbox"), "exec", host, "--", *argv])


def mclu(*args: str) -> str:
    return run([str(BIN / "mclu"), "-c", str(STATE / "hosts.toml"), *args])


def address(host: str) -> str:
    import tomllib

    return str(tomllib.loads((STATE / "hosts.toml").read_text())["hosts"][host]["address"])


def disk_of(host: str, name: str) -> dict[str, object]:
    path = f"/var/lib/libvirt/images/{name}.qcow2"
    info: dict[str, object] = json.loads(
        on_host(host, "qemu-img", "info", "-U", "--output=json", path)
    )
    return info


def virsh_migrate(name: str, source: str, dest: str) -> float:
    info = disk_of(source, name)
    path = str(info["filename"])
    on_host(
        dest,
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        str(info["full-backing-filename"]),
        "-F",
        "raw",
        path,
        str(info["virtual-size"]),
    )
    start = time.perf_counter()
    on_host(
        source,
        "virsh",
        "migrate",
        "--live",
        "--p2p",
        "--persistent",
        "--undefinesource",
        "--copy-storage-all",
        name,
        f"qemu+ssh://root@{address(dest)}/system",
    )
    seconds = time.perf_counter() - start
    on_host(source, "rm", "-f", path)
    return seconds


def mclu_migrate(name: str, source: str, dest: str) -> float:
    start = time.perf_counter()
    mclu("migrate", f"{source}:{name}", "--to", dest)
    return time.perf_counter() - start


def remove(names: Sequence[str], hosts: Sequence[str]) -> None:
    for host in hosts:
        for name in names:
            script = (
                f"virsh -q destroy {name}; virsh -q undefine {name}; "
                f"rm -f /var/lib/libvirt/images/{name}.qcow2"
            )
            subprocess.run(
                [str(BIN / "mclu-sandbox"), "exec", host, "--", "sh", "-c", script],
                capture_output=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--template", default="tiny")
    parser.add_argument("--hosts", nargs=2, default=["ham0", "ham1"])
    args = parser.parse_args()
    a, b = args.hosts

    was_up = (
        subprocess.run([str(BIN / "mclu-sandbox"), "status"], capture_output=True).returncode == 0
    )
    run([str(BIN / "mclu-sandbox"), "up", "3"])
    try:
        return bench(args, a, b)
    finally:
        if not was_up:  # as it was before
            run([str(BIN / "mclu-sandbox"), "down"])


def bench(args: argparse.Namespace, a: str, b: str) -> int:
    sandbox_images.build_repository(STATE, names=[args.template])
    key = Path("/var/tmp/mclu-bench-key")
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    m, v = f"bench-m{uuid.uuid4().hex[:4]}", f"bench-v{uuid.uuid4().hex[:4]}"
    try:
        mclu("build", args.template, m, v, "--on", a, "--ssh-key", f"{key}.pub")
        time.sleep(10)  # let the guests boot: a migration of a booting guest is not typical
        # Warm-up, untimed: the base reaches b, ssh and libvirt connections are warm.
        mclu_migrate(m, a, b)
        mclu_migrate(m, b, a)
        virsh_migrate(v, a, b)
        virsh_migrate(v, b, a)
        times: dict[str, list[float]] = {"mclu": [], "virsh": []}
        for _ in range(args.runs):
            for source, dest in ((a, b), (b, a)):
                times["mclu"].append(mclu_migrate(m, source, dest))
                times["virsh"].append(virsh_migrate(v, source, dest))
    finally:
        remove([m, v], [a, b])
    med = {k: statistics.median(x) for k, x in times.items()}
    print(
        f"live migration of a running {args.template} guest, local disks, {a} <-> {b}, "
        f"medians of {2 * args.runs} moves, seconds"
    )
    for kind, label in (("mclu", "mclu migrate"), ("virsh", "virsh migrate (p2p)")):
        moves = " ".join(f"{x:.2f}" for x in times[kind])
        print(f"  {label:<20} {med[kind]:6.2f}   ({moves})")
    print(f"mclu / virsh: {med['mclu'] / med['virsh']:.2f} (goal <= 1.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
