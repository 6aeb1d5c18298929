"""Benchmark `mclu build` to a started and to a ready guest against virt-builder run on the
host itself.

    .venv/bin/python bench/build.py [--runs 3] [--template tiny] [--host ham1]

On the sandbox (brought up if needed, with its template repository), per run, in turn:
  mclu started   `mclu build T NAME --on HOST --no-wait` (base cached on the host): ends when
                 libvirt has started the guest
  mclu ready     the same without --no-wait: ends when the guest is ready (tiny on the
                 sandbox's br0: by ssh, mclu's default for it; virt-builder's waits for the
                 console, on user networking: see --ssh for ssh against ssh)
  mclu cold      `mclu build` (ready) with T's base NOT cached on the host (the controller's
                 own cache is warm: the download is not what is compared)
  mclu x4        `mclu build T N1 N2 N3 N4 --on HOST` (ready, warm): four guests in one command
  virt-builder started  on the host itself, the original way: `virt-builder T --hostname NAME
                 -o DISK` (its cache warm), then `virsh define` + `virsh start`
  virt-builder ready    the same, then waiting on the host for the same console line
                 (`NAME login:` in the guest's console log, looked at every 0.2 s)
Guests and disks are removed after each run. Prints medians side by side. Goals (issue 3):
cold <= 1.0 x virt-builder, warm <= 0.5 x, x4 <= 2 x one warm build; ready against ready.

    .venv/bin/python bench/build.py --cloud-init [--runs 1] [--host ham1] [--image debian-13]

cloud-init against the libguestfs appliance (issue 13), one image: the sandbox repository
publishes the debian-12 file also as debian-12-cloud. Both templates are written alike
(384 MiB, 2 GiB) to a private templates directory; bases cached on the host. Per run:
  cloud-init started / ready   `mclu build debian-12-cloud NAME` (personalise = "cloud-init":
                 a NoCloud seed, no appliance) with --no-wait / to ready (cloud-init's final
                 line on the console)
  libguestfs started / ready   `mclu build debian-12 NAME`, personalised by the appliance,
                 with --no-wait / to ready (the rule mclu detects for it)
  virt-builder started / ready  virt-builder debian-12 on the host, `virsh define` + `start`
                 (384 MiB) / then its `NAME login:` on the console
Goals: cloud-init started <= 0.2 x virt-builder started; cloud-init ready <= libguestfs ready.
--image debian-13 compares the same on Debian 13's file (debian-13 and debian-13-cloud), whose
cloud-init 25.1 runs its four stages in one Python process, where Debian 12's starts four.

    .venv/bin/python bench/build.py --ssh [--runs 3] [--host ham1]

Readiness by ssh (issue 12), tiny bridged on the host's br0 (dropbear; base cached). Per run:
  mclu ssh       `mclu build tiny NAME` to ready by ssh, mclu's default for it: dropbear,
                 asked from the host at the address mclu finds, presents the key mclu gave it
  mclu console   the same with `ready = "console:login:"`: what ssh readiness costs on top
  virt-builder ssh  virt-builder tiny on the host, `virsh define` (NIC on br0, a known MAC)
                 + `virsh start`, then a loop on the host until the guest's ssh answers: its
                 address from the host's neighbour table (provoked as mclu does), then
                 `ssh-keyscan` (any key: virt-builder's guest makes its own), every 0.5 s
Goals: mclu ssh <= 0.5 x virt-builder ssh; mclu ssh - mclu console small (CI time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from mclu import hostpaths, model
from mclu.decide import domxml
from mclu.hosts import commands
from mclu.sandbox import images as sandbox_images

BIN = Path(sys.executable).parent
STATE = Path(os.environ.get("MCLU_SANDBOX_DIR", "/var/tmp/mclu-sandbox"))
IMAGES = "/var/lib/libvirt/images"
SEED = ".mclu-seed.iso"  # a cloud-init guest's NoCloud seed, next to its disk until ready
GUESTFS = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}


def run(argv: Sequence[str], *, input: str | None = None) -> str:
    done = subprocess.run(
        argv, input=input, capture_output=True, text=True, env={**os.environ, **GUESTFS}
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def on_host(host: str, *argv: str, input: str | None = None) -> str:
    return run([str(BIN / "mclu-sandbox"), "exec", host, "--", *argv], input=input)


def mclu_build(template: str, host: str, names: Sequence[str], key: Path, *extra: str) -> str:
    return run(
        [
            str(BIN / "mclu"),
            "-c",
            str(STATE / "hosts.toml"),
            "build",
            template,
            *names,
            "--on",
            host,
            "--ssh-key",
            str(key),
            *extra,
        ]
    )


def remove_guests(host: str, names: Sequence[str]) -> None:
    for name in names:
        script = (
            f"virsh -q destroy {name}; virsh -q undefine {name}; "
            f"rm -f {IMAGES}/{name}.qcow2 {IMAGES}/{name}.img {IMAGES}/{name}{SEED}"
        )
        subprocess.run(
            [str(BIN / "mclu-sandbox"), "exec", host, "--", "sh", "-c", script], capture_output=True
        )


def uncache_base(host: str, template: str) -> None:
    on_host(host, "sh", "-c", f"rm -f {IMAGES}/mclu-templates/{template}.*")


def virt_builder(
    template: str, host: str, name: str, *, ready: bool, memory_mib: int = 128
) -> None:
    """The original mclu's way: virt-builder on the host, then define and start."""
    virt_builder_started(template, host, name, memory_mib=memory_mib)
    if ready:
        log = hostpaths.console_log(name)
        on_host(
            host,
            "timeout",
            "600",
            "sh",
            "-c",
            f'until grep -q "{name} login:" {log} 2>/dev/null; do sleep 0.2; done',
        )


def virt_builder_started(
    template: str,
    host: str,
    name: str,
    *,
    memory_mib: int = 128,
    network: str = "user",
    mac: str | None = None,
) -> None:
    """virt-builder `template` into a raw disk on the host, then virsh define and start."""
    repo = STATE / "repo"
    disk = f"{IMAGES}/{name}.img"
    on_host(
        host,
        "env",
        f"VIRT_BUILDER_DIRS={repo}",
        f"XDG_CONFIG_HOME={repo}",
        "XDG_CACHE_HOME=/var/tmp/mclu-bench-vb-cache",
        *[f"{k}={v}" for k, v in GUESTFS.items()],
        "virt-builder",
        template,
        "--hostname",
        name,
        "--root-password",
        "disabled",
        "-o",
        disk,
        "--format",
        "raw",
        "--no-network",
    )
    spec = model.GuestSpec(
        name=name,
        domain_type="qemu",
        memory=memory_mib << 20,
        vcpus=1,
        disk_path=disk,
        disk_format="raw",
        network=network,
        mac=mac,
        meta=model.GuestMeta(template=template),
    )
    on_host(
        host,
        "sh",
        "-c",
        'f=$(mktemp) && cat > "$f" && virsh -q define "$f" && rm -f "$f"',
        input=domxml.render(spec),
    )
    on_host(host, "virsh", "-q", "start", name)


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def bench_key() -> Path:
    """The public half of the key the benchmark's guests are built with."""
    key = Path("/var/tmp/mclu-bench-key")
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    return key.with_suffix(".pub")


Ratio = tuple[str, float, str]  # label, value, goal or unit ("" for none)


def measure(
    kinds: Sequence[str], one: Callable[[str], float], warm_up: Sequence[str], runs: int
) -> dict[str, list[float]]:
    """Each kind's times: `warm_up`'s kinds once, not counted (the controller's cache, the
    host's base, virt-builder's cache, the appliance), then every kind in turn, `runs` times."""
    for kind in warm_up:
        one(kind)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(runs):
        for kind in kinds:
            times[kind].append(one(kind))
    return times


def report(
    title: str,
    times: dict[str, list[float]],
    ratios: Callable[[dict[str, float]], list[Ratio]],
    said: dict[str, str] | None = None,
) -> None:
    """Print each kind's median and runs (and the last line mclu said for it), then the ratios
    computed from the medians."""
    med = {k: statistics.median(v) for k, v in times.items()}
    print(title)
    width = max(len(k) for k in times)
    for kind, values in times.items():
        line = " ".join(f"{x:.1f}" for x in values)
        print(
            f"  {kind:<{width}} {med[kind]:7.1f}   ({line})  {(said or {}).get(kind, '')}".rstrip()
        )
    rows = ratios(med)
    width = max(len(label) for label, _, _ in rows) + 1
    for label, value, goal in rows:
        print(f"{label + ':':<{width}} {value:6.2f}" + (f" ({goal})" if goal else ""))


def timed_build(
    said: dict[str, str],
    kind: str,
    template: str,
    host: str,
    names: Sequence[str],
    key: Path,
    *extra: str,
) -> float:
    """`mclu_build`'s time; the last line it printed is kept in `said[kind]`."""
    start = time.perf_counter()
    out = mclu_build(template, host, names, key, *extra)
    said[kind] = out.strip().splitlines()[-1] if out.strip() else ""
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--template", default="tiny")
    parser.add_argument("--host", default="ham1")
    parser.add_argument(
        "--cloud-init",
        action="store_true",
        help="cloud-init against the appliance and virt-builder (debian-12; see above)",
    )
    parser.add_argument(
        "--image",
        choices=CLOUD_IMAGES,
        default="debian-12",
        help="--cloud-init's image: debian-12 (cloud-init 22.4, four processes) or debian-13 "
        "(cloud-init 25.1, one process; built on demand, about 2 minutes)",
    )
    parser.add_argument(
        "--ssh",
        action="store_true",
        help="build to ssh-ready against virt-builder and waiting for ssh (tiny on br0)",
    )
    args = parser.parse_args()
    if args.cloud_init:
        return cloud_init(args.runs, args.host, args.image)
    if args.ssh:
        return ssh_ready(args.runs, args.host)
    t, host = args.template, args.host

    run([str(BIN / "mclu-sandbox"), "up", "3"])
    sandbox_images.build_repository(STATE, names=[t])
    pub = bench_key()

    def one(kind: str) -> float:
        names = [f"bench-{uuid.uuid4().hex[:6]}" for _ in range(4 if kind == "mclu x4" else 1)]
        if kind == "mclu cold":
            uncache_base(host, t)
        try:
            if kind.startswith("virt-builder"):
                return timed(lambda: virt_builder(t, host, names[0], ready=kind.endswith("ready")))
            extra = ["--no-wait"] if kind == "mclu started" else []
            return timed(lambda: mclu_build(t, host, names, pub, *extra))
        finally:
            remove_guests(host, names)

    kinds = [
        "mclu started",
        "mclu ready",
        "mclu cold",
        "mclu x4",
        "virt-builder started",
        "virt-builder ready",
    ]
    times = measure(kinds, one, ["mclu started", "virt-builder started"], args.runs)

    def ratios(med: dict[str, float]) -> list[Ratio]:
        vb, vb_ready = med["virt-builder started"], med["virt-builder ready"]
        return [
            ("mclu started / virt-builder started", med["mclu started"] / vb, "goal <= 0.5"),
            ("mclu ready / virt-builder ready", med["mclu ready"] / vb_ready, "goal <= 0.5"),
            ("mclu cold / virt-builder ready", med["mclu cold"] / vb_ready, "goal <= 1.0"),
            ("mclu x4 / mclu ready", med["mclu x4"] / med["mclu ready"], "goal <= 2.0"),
            ("waiting: mclu ready - started", med["mclu ready"] - med["mclu started"], "seconds"),
            ("waiting: virt-builder ready - started", vb_ready - vb, "seconds"),
        ]

    report(f"template {t} on {host}, medians of {args.runs} runs, seconds", times, ratios)
    return 0


# The cloud-init comparison's templates: the same image and guest, personalised two ways.
CLOUD_TEMPLATE = 'size = "2 GiB"\nmemory = "384 MiB"\nvcpus = 1\ndisk_bus = "virtio"\n'
CLOUD_IMAGES = ("debian-12", "debian-13")  # sandbox recipes published also as IMAGE-cloud


def cloud_templates(image: str) -> dict[str, str]:
    """The two templates of `image`: IMAGE-cloud personalised by cloud-init, IMAGE by the
    appliance."""
    return {
        f"{image}-cloud": f'base = "{image}-cloud"\npersonalise = "cloud-init"\n{CLOUD_TEMPLATE}',
        image: f'base = "{image}"\n{CLOUD_TEMPLATE}',
    }


CLOUD_KINDS = [
    "cloud-init started",
    "cloud-init ready",
    "libguestfs started",
    "libguestfs ready",
    "virt-builder started",
    "virt-builder ready",
]


def cloud_init(runs: int, host: str, image: str) -> int:
    """Issue 13's comparison: cloud-init, the appliance and virt-builder on one image."""
    run([str(BIN / "mclu-sandbox"), "up", "3"])
    sandbox_images.build_repository(STATE, names=[image])
    pub = bench_key()
    with tempfile.TemporaryDirectory(prefix="mclu-bench-") as tmp:
        templates = Path(tmp)
        for name, text in cloud_templates(image).items():
            (templates / f"{name}.toml").write_text(text)
        said: dict[str, str] = {}  # the last line each mclu kind printed (its ready rule)

        def one(kind: str) -> float:
            name = f"bench-{uuid.uuid4().hex[:6]}"
            try:
                if kind.startswith("virt-builder"):
                    ready = kind.endswith("ready")
                    return timed(
                        lambda: virt_builder(image, host, name, ready=ready, memory_mib=384)
                    )
                template = f"{image}-cloud" if kind.startswith("cloud-init") else image
                extra = ["--templates", str(templates)]
                extra += ["--no-wait"] if kind.endswith("started") else []
                return timed_build(said, kind, template, host, [name], pub, *extra)
            finally:
                remove_guests(host, [name])

        warm_up = ["cloud-init started", "libguestfs started", "virt-builder started"]
        times = measure(CLOUD_KINDS, one, warm_up, runs)

    def ratios(med: dict[str, float]) -> list[Ratio]:
        vb, vb_ready = med["virt-builder started"], med["virt-builder ready"]
        cloud_ready, guestfs_ready = med["cloud-init ready"], med["libguestfs ready"]
        return [
            (
                "cloud-init started / virt-builder started",
                med["cloud-init started"] / vb,
                "goal <= 0.2",
            ),
            ("cloud-init ready / libguestfs ready", cloud_ready / guestfs_ready, "goal <= 1.0"),
            ("cloud-init ready / virt-builder ready", cloud_ready / vb_ready, ""),
            ("libguestfs started / virt-builder started", med["libguestfs started"] / vb, "today"),
            ("libguestfs ready / virt-builder ready", guestfs_ready / vb_ready, ""),
        ]

    report(f"{image} (384 MiB) on {host}, medians of {runs} runs, seconds", times, ratios, said)
    return 0


# --- readiness by ssh (issue 12) ---------------------------------------------------------------

SSH_KINDS = ["mclu ssh", "mclu console", "virt-builder ssh"]
# On the host: until the guest with MAC $1 answers ssh, find its address in the neighbour
# table (provoking entries with $2, mclu's own command, while it is not there) and scan it.
WAIT_FOR_SSH = r"""
mac=$1 provoke=$2
while :; do
    ip=$(ip -4 neigh show | awk -v m="$mac" '$0 ~ m && $NF != "FAILED" {print $1; exit}')
    if [ -z "$ip" ]; then
        bash -c "$provoke" >/dev/null 2>&1
    elif ssh-keyscan -T 5 -t ed25519 -- "$ip" 2>/dev/null | grep -q ssh-; then
        exit 0
    fi
    sleep 0.5
done
"""


def virt_builder_ssh(host: str, name: str, mac: str) -> None:
    """virt-builder tiny on the host, defined on br0 and started, then its ssh waited for."""
    virt_builder_started("tiny", host, name, network="bridge:br0", mac=mac)
    provoke = commands.provoke_neighbours()[-1]  # mclu's own provoking script, run by hand
    on_host(host, "timeout", "600", "sh", "-c", WAIT_FOR_SSH, "wait-for-ssh", mac, provoke)


def ssh_ready(runs: int, host: str) -> int:
    """Issue 12's comparison: mclu's build to ssh-ready, to console-ready, and virt-builder
    plus define/start plus waiting for ssh on the host; tiny on br0, same run."""
    run([str(BIN / "mclu-sandbox"), "up", "3"])
    sandbox_images.build_repository(STATE, names=["tiny"])
    pub = bench_key()
    with tempfile.TemporaryDirectory(prefix="mclu-bench-") as tmp:
        templates = Path(tmp)
        (templates / "tiny-console.toml").write_text(
            'base = "tiny"\nmemory = "128 MiB"\nready = "console:login:"\n'
        )
        (templates / "tiny-ssh.toml").write_text('base = "tiny"\nmemory = "128 MiB"\n')
        said: dict[str, str] = {}  # the line each mclu kind printed (its ready rule)

        def one(kind: str) -> float:
            name = f"bench-{uuid.uuid4().hex[:6]}"
            try:
                if kind == "virt-builder ssh":
                    mac = "52:54:00:" + ":".join(uuid.uuid4().hex[i : i + 2] for i in (0, 2, 4))
                    return timed(lambda: virt_builder_ssh(host, name, mac))
                template = "tiny-ssh" if kind == "mclu ssh" else "tiny-console"
                return timed_build(
                    said, kind, template, host, [name], pub, "--templates", str(templates)
                )
            finally:
                remove_guests(host, [name])

        times = measure(SSH_KINDS, one, ["mclu console", "virt-builder ssh"], runs)

    def ratios(med: dict[str, float]) -> list[Ratio]:
        ssh, console = med["mclu ssh"], med["mclu console"]
        return [
            ("mclu ssh / virt-builder ssh", ssh / med["virt-builder ssh"], "goal <= 0.5"),
            ("mclu ssh / mclu console", ssh / console, "ratio"),
            ("mclu ssh - mclu console", ssh - console, "seconds"),
        ]

    report(f"tiny on {host}'s br0, medians of {runs} runs, seconds", times, ratios, said)
    return 0


if __name__ == "__main__":
    sys.exit(main())
