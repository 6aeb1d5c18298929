"""Benchmark `mclu templates import` against scp of the same file to a sandbox host, same run.

    .venv/bin/python bench/images.py [--runs 1] [--host ham1] [--image PATH]

The file: PATH if given, else the sandbox repository's tiny template (128 MiB, a busybox root
on ext4) unpacked and converted once to qcow2 under /var/tmp/mclu-images-bench/ (the kind of
file a user brings). Per run, in turn: `scp` of the file to the host's image directory over the
sandbox's ssh (OpenSSH, aes128-gcm; the copy is removed after), then the import of the same
file into a private repository (mclu.images.importing.import_image, in this process, with the
real libguestfs appliance under TCG), its phases timed from its progress reports. Prints each
run's figures and their medians side by side; the page cache is warm (dropping it is not
possible here). Nothing is asserted: import checks, converts, inspects and compresses what scp
only copies, so the figures say what that costs.

Needs the sandbox up (`mclu-sandbox up 1`, with MCLU_SANDBOX_INSTANCE/MCLU_SANDBOX_DIR set).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from mclu.images import importing
from mclu.sandbox.images import repository

STATE = Path(os.environ.get("MCLU_SANDBOX_DIR", "/var/tmp/mclu-sandbox"))
WORK = Path("/var/tmp/mclu-images-bench")
DEST = "/var/lib/libvirt/images/mclu-bench-images.img"


def ssh_argv(command: str) -> list[str]:
    return [command, "-F", str(STATE / "client" / "ssh_config"), "-c", "aes128-gcm@openssh.com"]


def choose_image(given: str | None) -> tuple[Path, str]:
    """The file to import and to copy, and a word on where it came from."""
    if given:
        return Path(given), "given"
    repo = repository.build_repository(STATE, names=["tiny"])
    image = WORK / "tiny.qcow2"
    if not image.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        raw = WORK / "tiny.raw"
        with raw.open("wb") as out:
            subprocess.run(["xz", "-dc", str(repo / "tiny.xz")], stdout=out, check=True)
        partial = image.with_suffix(".partial")
        convert = ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(partial)]
        subprocess.run(convert, check=True)
        raw.unlink()
        partial.rename(image)
    return image, "the sandbox's tiny template as qcow2"


def scp(host: str, image: Path) -> float:
    start = time.perf_counter()
    subprocess.run([*ssh_argv("scp"), "-q", str(image), f"{host}:{DEST}"], check=True)
    took = time.perf_counter() - start
    subprocess.run([*ssh_argv("ssh"), host, "rm", "-f", "--", DEST], check=True)
    return took


def import_once(image: Path) -> tuple[float, dict[str, float], importing.Imported]:
    """One import into a fresh private repository: wall seconds, seconds per phase."""
    phases: dict[str, float] = {}
    current: list[tuple[str, float]] = []

    def progress(phase: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if not current or current[-1][0] != phase:
            if current:
                phases[current[-1][0]] = now - current[-1][1]
            current.append((phase, now))

    with tempfile.TemporaryDirectory(prefix="mclu-images-bench-", dir=WORK) as scratch:
        work = Path(scratch) / "work"
        work.mkdir()
        request = importing.Request(source=str(image), name="bench")
        start = time.perf_counter()
        done = importing.import_image(request, Path(scratch) / "repo", work, progress)
        took = time.perf_counter() - start
    if current:
        phases[current[-1][0]] = start + took - current[-1][1]
    return took, phases, done


def mib(n: int) -> str:
    return f"{n / (1 << 20):.2f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--host", default="ham1")
    parser.add_argument("--image")
    args = parser.parse_args()
    # The appliance under TCG: this machine's KVM hangs it (docs/images.md).
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    inventory = tomllib.loads((STATE / "hosts.toml").read_text())
    if args.host not in inventory["hosts"]:
        raise SystemExit(f"no sandbox host {args.host} in {STATE / 'hosts.toml'}")
    image, origin = choose_image(args.image)
    WORK.mkdir(parents=True, exist_ok=True)

    copies, imports, phase_runs = [], [], []
    done = None
    for _ in range(args.runs):
        copies.append(scp(args.host, image))
        took, phases, done = import_once(image)
        imports.append(took)
        phase_runs.append(phases)
    assert done is not None

    size = image.stat().st_size
    print(
        f"file: {image} ({origin}); {mib(size)} file, {mib(os.stat(image).st_blocks * 512)} "
        f"allocated; host {args.host}; warm page cache; {args.runs} run(s), wall seconds"
    )
    print(
        f"import found: {done.format}, {mib(done.virtual_size)} disk, "
        f"{mib(done.allocated_size)} allocated, {mib(done.required_size)} on a host "
        f"(qemu-img measure), {mib(done.compressed_size)} compressed (xz); "
        f"root {done.root} ({done.os_name}), cloud-init: {', '.join(done.cloud_init) or 'no'}"
    )
    print(f"{'method':<32} {'median s':>9}  runs")
    scp_median = statistics.median(copies)
    rows = [("scp to the host (baseline)", copies), ("mclu templates import", imports)]
    names = sorted({name for phases in phase_runs for name in phases}, key=_phase_order)
    rows += [(f"  of which {name}", [p.get(name, 0.0) for p in phase_runs]) for name in names]
    for name, values in rows:
        print(
            f"{name:<32} {statistics.median(values):>9.2f}  {' '.join(f'{v:.2f}' for v in values)}"
        )
    print(f"import / scp: {statistics.median(imports) / scp_median:.1f}x")
    return 0


def _phase_order(name: str) -> int:
    order = ["downloading", "checking", "unpacking", "converting", "inspecting", "compressing"]
    return order.index(name) if name in order else len(order)


if __name__ == "__main__":
    sys.exit(main())
