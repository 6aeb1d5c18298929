"""Benchmark moving a raw image to a sandbox host: mclu's transports against plain ssh pipes.

    .venv/bin/python bench/transfer.py [--runs 3] [--host ham1] [--image PATH]

The image: PATH if given, else the sandbox repository's Debian template
(/var/tmp/mclu-sandbox/repo/debian-12*.xz, decompressed once with `xz -dc -T0` into a sparse
file under /var/tmp/mclu-transfer-test/), else /var/tmp/mclu-transfer-test/test.img. Per
run, in turn: mclu `stream` and `nbd` (send_atomically over one already open session; the
session's opening is timed separately), `cat img | ssh host 'cat > f'`,
`zstd -1 -T0 -c img | ssh host 'zstd -d -q -o f'` and `ssh host dd bs=1M conv=sparse of=f <
img` (OpenSSH with aes128-gcm). The destination is deleted after each run. The page cache is
warm (dropping it is not possible here). Prints medians, and the destination's allocated
bytes against the source's. Goals: mclu's default <= 1.1 x the fastest baseline; allocation
<= 1.05 x the source's.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import glob
import os
import shlex
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path

from mclu import images
from mclu.hosts import open_session
from mclu.hosts.session import Session
from mclu.model import HostSpec

STATE = Path(os.environ.get("MCLU_SANDBOX_DIR", "/var/tmp/mclu-sandbox"))
WORK = Path("/var/tmp/mclu-transfer-test")
DEST = "/var/lib/libvirt/images/mclu-bench-transfer.raw"


def ssh(host: str) -> list[str]:
    return ["ssh", "-F", str(STATE / "client" / "ssh_config"), "-c", "aes128-gcm@openssh.com", host]


def choose_image(given: str | None) -> tuple[Path, str]:
    """The image to send and a word on where it came from."""
    if given:
        return Path(given), "given"
    templates = sorted(glob.glob(str(STATE / "repo" / "debian-12*.xz")))
    if templates:
        raw = WORK / (Path(templates[0]).name.removesuffix(".xz") + ".raw")
        if not raw.exists():
            WORK.mkdir(parents=True, exist_ok=True)
            partial = raw.with_suffix(".partial")
            with partial.open("wb") as out:
                xz = subprocess.Popen(["xz", "-dc", "-T0", templates[0]], stdout=subprocess.PIPE)
                subprocess.run(
                    ["dd", "bs=1M", "conv=sparse", "status=none"],
                    stdin=xz.stdout,
                    stdout=out,
                    check=True,
                )
                if xz.wait() != 0:
                    raise SystemExit(f"xz -dc {templates[0]} failed")
            partial.rename(raw)
        return raw, f"Debian template {templates[0]}"
    return WORK / "test.img", "own test image (no Debian template in the repository yet)"


def baselines(host: str, image: Path) -> dict[str, str]:
    remote = ssh(host)
    dest = shlex.quote(DEST)
    return {
        "ssh cat": f"cat {image} | {shlex.join(remote)} 'cat > {dest}'",
        "zstd|ssh|zstd": (
            f"zstd -1 -T0 -q -c {image} | {shlex.join(remote)} 'zstd -d -q -o {dest}'"
        ),
        "ssh dd sparse": f"{shlex.join(remote)} dd bs=1M conv=sparse status=none of={dest} "
        f"< {image}",
    }


async def allocated_and_remove(session: Session) -> int:
    stat = await session.run(["stat", "-c", "%b %B", "--", DEST])
    blocks, block_size = (int(x) for x in stat.stdout.split())
    await session.run(["rm", "-f", "--", DEST])
    return blocks * block_size


async def timed(run: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await run()
    return time.perf_counter() - start


async def measure(
    spec: HostSpec, image: Path, runs: int
) -> tuple[dict[str, list[float]], dict[str, int], list[float]]:
    times: dict[str, list[float]] = {}
    allocated: dict[str, int] = {}
    opening: list[float] = []
    size = image.stat().st_size
    commands = baselines(spec.name, image)
    for _ in range(runs):
        start = time.perf_counter()
        async with open_session(spec) as session:
            opening.append(time.perf_counter() - start)
            for name in ("stream", "nbd"):
                transport = images.get(name)
                send = functools.partial(
                    images.send_atomically, transport, session, image, DEST, size
                )
                times.setdefault(f"mclu {name}", []).append(await timed(send))
                allocated[f"mclu {name}"] = await allocated_and_remove(session)
            for name, command in commands.items():

                async def shell(command: str = command) -> None:
                    done = await asyncio.create_subprocess_shell(command)
                    if await done.wait() != 0:
                        raise SystemExit(f"failed: {command}")

                times.setdefault(name, []).append(await timed(shell))
                allocated[name] = await allocated_and_remove(session)
    return times, allocated, opening


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--host", default="ham1")
    parser.add_argument("--image")
    args = parser.parse_args()
    image, origin = choose_image(args.image)
    inventory = tomllib.loads((STATE / "hosts.toml").read_text())
    client = STATE / "client"
    spec = HostSpec(
        name=args.host,
        address=inventory["hosts"][args.host]["address"],
        user="root",
        port=22,
        identity_files=(str(client / "id_ed25519"),),
        identities_only=True,
        known_hosts=str(client / "known_hosts"),
        ssh_config="none",
    )
    source_allocated = os.stat(image).st_blocks * 512
    times, allocated, opening = asyncio.run(measure(spec, image, args.runs))

    print(
        f"image: {image} ({origin}); {image.stat().st_size} bytes, "
        f"{source_allocated} allocated; host {args.host}; warm page cache"
    )
    print(
        f"medians of {args.runs} runs, wall seconds; mclu's ssh session opened once per run "
        f"(median {statistics.median(opening):.3f} s, not included)"
    )
    print(f"{'method':<16} {'wall s':>7} {'runs':>22} {'allocated':>12} {'/ source':>8}")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        runs = " ".join(f"{v:.2f}" for v in values)
        print(
            f"{name:<16} {medians[name]:>7.2f} {runs:>22} {allocated[name]:>12} "
            f"{allocated[name] / source_allocated:>8.3f}"
        )
    fastest = min(v for k, v in medians.items() if not k.startswith("mclu"))
    default = medians[f"mclu {images.DEFAULT}"]
    print(
        f"mclu default ({images.DEFAULT}) / fastest baseline: {default / fastest:.2f} (goal <= 1.1)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
