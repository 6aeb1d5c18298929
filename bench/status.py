"""Benchmark `mclu status` against a sequential `virsh -c qemu+ssh://` loop, same hosts, same run.

    .venv/bin/python bench/status.py [--runs 5] [--sizes 1,4,16,48]

Brings the sandbox up with as many hosts as the largest size (and takes it down afterwards
if it was not up before), then times, per size: `mclu status` over that many hosts, and a
loop that runs `virsh -c qemu+ssh://HOST/system 'nodeinfo; list --all'` on each host in
turn (one virsh, one ssh connection per host). Then, with the sandbox's powered-off host
(configured, no namespace behind its address: no ARP answer, so TCP gets no answer at all):
`mclu status` over one host and the off one, and over the largest size and the off one.
Prints medians side by side.
Goals (issue 10): the off host reported within 1.5 s; mclu at 48 hosts <= 2 x mclu at
1 host; the virsh loop at 48 hosts >= 10 x mclu.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
STATE = Path(os.environ.get("MCLU_SANDBOX_DIR", "/var/tmp/mclu-sandbox"))


def sandbox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "mclu-sandbox"), *args], check=True, capture_output=True, text=True
    )


def sandbox_host_count() -> int:
    """Hosts of the sandbox that are up now (0 when it is down)."""
    status = subprocess.run(
        [str(VENV_BIN / "mclu-sandbox"), "status"], capture_output=True, text=True
    )
    if status.returncode != 0:
        return 0
    return sum(1 for line in status.stdout.splitlines() if line.split()[-1:] == ["up"])


def timed(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    return timed_cpu(argv, env)[0]


def timed_cpu(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds, and the CPU seconds (user + system) the command itself used: the part
    that does not grow when other work on this machine competes for its cores."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def median_of(runs: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(runs))


def mclu_argv(inventory: Path, names: list[str]) -> list[str]:
    return [str(VENV_BIN / "mclu"), "-c", str(inventory), "status", *(f"--host={h}" for h in names)]


def virsh_loop(addresses: list[str], ssh: Path) -> float:
    """`virsh nodeinfo; list --all` on each host in turn, one ssh connection each."""
    start = time.perf_counter()
    for address in addresses:
        uri = f"qemu+ssh://root@{address}/system?command={ssh}&no_tty=1"
        subprocess.run(
            ["virsh", "-c", uri, "nodeinfo; list --all"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    return time.perf_counter() - start


def virsh_wrapper(directory: Path) -> Path:
    """An ssh for libvirt's qemu+ssh transport that uses the sandbox's keys and known_hosts."""
    wrapper = directory / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {STATE}/client/ssh_config "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1,4,16,48")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    load_before = os.getloadavg()[0]
    was_up = sandbox_host_count()
    sandbox("up", str(max(sizes)))
    inventory = STATE / "hosts.toml"
    hosts = tomllib.loads(inventory.read_text())["hosts"]
    names = list(hosts)[: max(sizes)]
    off = list(hosts)[-1]  # the sandbox writes its powered-off host last
    with_off = {"1 + off": [names[0], off], f"{max(sizes)} + off": [*names, off]}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ssh = virsh_wrapper(Path(tmp))
            # Runs interleave the sizes (1, 4, 16, 1, 4, 16, ...) so that a slow moment of
            # this shared machine touches every size alike, not one.
            runs: dict[int, tuple[list[float], list[float]]] = {n: ([], []) for n in sizes}
            cpu: dict[int, list[float]] = {n: [] for n in sizes}
            offs: dict[str, list[float]] = {label: [] for label in with_off}
            for n in sizes:
                timed(mclu_argv(inventory, names[:n]))  # warm the page cache
            for _ in range(args.runs):
                for n in sizes:
                    wall, used = timed_cpu(mclu_argv(inventory, names[:n]))
                    runs[n][0].append(wall)
                    cpu[n].append(used)
                    runs[n][1].append(virsh_loop([hosts[h]["address"] for h in names[:n]], ssh))
                for label, chosen in with_off.items():
                    offs[label].append(timed(mclu_argv(inventory, chosen)))
            rows = [(n, statistics.median(m), statistics.median(v)) for n, (m, v) in runs.items()]
            off_rows = [(label, statistics.median(t)) for label, t in offs.items()]
    finally:
        if not was_up:
            sandbox("down")
        elif was_up != max(sizes):
            sandbox("up", str(was_up))

    print(
        f"medians of {args.runs} runs, wall seconds; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (the fake hosts share this machine's cores)"
    )
    print(
        f"{'hosts':>5}  {'mclu status':>11}  {'virsh loop':>10}  {'loop / mclu':>11}  "
        f"{'mclu CPU':>8}"
    )
    for n, m, v in rows:
        print(f"{n:>5}  {m:>11.3f}  {v:>10.3f}  {v / m:>11.1f}  {statistics.median(cpu[n]):>8.3f}")
    for label, t in off_rows:
        print(f"{label:>10}  {t:>6.3f}  (mclu status with the powered-off host {off})")
    first, last = rows[0], rows[-1]
    print(f"mclu {last[0]} hosts / {first[0]} host: {last[1] / first[1]:.2f} (goal <= 2)")
    print(f"virsh loop / mclu at {last[0]} hosts: {last[2] / last[1]:.1f} (goal >= 10)")
    print(
        f"off host reported within: {off_rows[0][1]:.2f} s, whole command with one host on "
        "(goal <= 1.5)"
    )
    print(
        f"the off host added to {last[0]} hosts: {off_rows[1][1] - last[1]:+.2f} s "
        "(it waits only on the others, then tcp_timeout)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
