"""Fault injection on the sandbox: every fault ends in a clear error with nothing half-made.

mclu runs as a real process (`mclu build --json`: one line per step on stdout); the tests
send it a signal, cut its host's network, stop the host's libvirtd or fill its image
directory at the moment a step begins, and then look at the hosts themselves (virsh in the
host's namespaces, `ls` of its image directory, its processes): after SIGINT, SIGTERM or an
error nothing of the run is left; after SIGKILL (no undo can run) what is left is marked, the
next `mclu list` says so, and `mclu cleanup` removes it. Guests and files that were there
before are untouched throughout. docs/faults.md lists every case and its outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mclu import model
from mclu.read import metadata
from mclu.sandbox import config as sandbox_config
from mclu.sandbox import images as sandbox_images
from tests.integration import sandbox as sb

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(600)]

IMAGES = "/var/lib/libvirt/images"
CACHE = f"{IMAGES}/mclu-templates"
BUILD_STEPS = [
    "defining",
    "sending",
    "creating disk",
    "personalising",
    "starting",
    "waiting until ready",
]
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
WORD = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hangup"}
# Each is undone, at each step: Ctrl-C, SIGTERM (kill, a stopped service), SIGHUP (the
# terminal or ssh session mclu ran in went away).
SIGNALS = pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)


@pytest.fixture(scope="module")
def repo(sandbox: sb.Sandbox) -> Path:
    """The sandbox's template repository; only `tiny` is needed here (built once, cached)."""
    return sandbox_images.build_repository(sandbox.state, names=["tiny"])


def define_xml(name: str, state: str = "ready") -> str:
    """A diskless shut-off guest with mclu's metadata: a bystander no fault may touch."""
    meta = model.GuestMeta(template="tiny", revision="1", built="2020-01-01T00:00:00Z", state=state)
    return (
        f"<domain type='qemu'><name>{name}</name><uuid>{uuid.uuid4()}</uuid>"
        f"<memory unit='MiB'>32</memory><vcpu>1</vcpu>"
        f"<metadata>{metadata.render(meta)}</metadata>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )


@pytest.fixture(scope="module")
def bystanders(sandbox: sb.Sandbox, repo: Path) -> Iterator[dict[str, str]]:
    """Per up host: a guest and a disk-like file that were there before any fault."""
    made = {}
    for host in sandbox.up_hosts:
        name = f"keep{uuid.uuid4().hex[:6]}"
        sandbox.exec(
            host,
            [
                "sh",
                "-c",
                'f=$(mktemp) && cat > "$f" && virsh -q define "$f"; r=$?; rm -f "$f"; exit $r',
            ],
            input=define_xml(name),
        )
        sandbox.exec(host, ["sh", "-c", f"mkdir -p {IMAGES} && echo pet > {IMAGES}/{name}.img"])
        made[host] = name
    yield made
    for host, name in made.items():
        sandbox.exec(host, ["virsh", "-q", "undefine", name], check=False)
        sandbox.exec(host, ["rm", "-f", f"{IMAGES}/{name}.img"], check=False)


class Faults:
    """Runs mclu as a user would and looks at the hosts; removes every guest it names."""

    def __init__(
        self, sandbox: sb.Sandbox, cache_dir: Path, ssh_key: Path, bystanders: dict[str, str]
    ) -> None:
        self.sandbox = sandbox
        # The controller's $TMPDIR, mclu's alone: what a run keeps there (host keys, sockets,
        # libguestfs's tmpdir) must be gone once it has ended, however it ended. Short, as a
        # user's /tmp is: socket paths in it must fit in 107 bytes.
        self.tmp = Path(tempfile.mkdtemp(prefix="mclu-faults-", dir="/tmp"))
        # libguestfs keeps its appliance cache in $TMPDIR unless told: where it is without one.
        self.env = {
            **os.environ,
            **sb.GUESTFS_ENV,
            "MCLU_CACHE": str(cache_dir),
            "TMPDIR": str(self.tmp),
            "LIBGUESTFS_CACHEDIR": "/var/tmp",
        }
        self.ssh_key = ssh_key
        self.bystanders = bystanders
        self.names: list[str] = []

    def name(self) -> str:
        name = f"f{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return name

    def start(self, *args: str, inventory: Path | None = None) -> subprocess.Popen[str]:
        """`mclu ARGS --json` in the background; its stdout is JSON lines."""
        argv = [
            str(sb.BIN / "mclu"),
            "-c",
            str(inventory or self.sandbox.inventory),
            *args,
            "--json",
        ]
        # Its own process group: a test can pause it with its children (nbdcopy, zstd).
        return subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            start_new_session=True,
        )

    def build(
        self, name: str, host: str, *extra: str, inventory: Path | None = None
    ) -> subprocess.Popen[str]:
        return self.start(
            "build",
            "tiny",
            name,
            "--on",
            host,
            "--ssh-key",
            str(self.ssh_key),
            *extra,
            inventory=inventory,
        )

    def mclu(
        self, *args: str, inventory: Path | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(sb.BIN / "mclu"), "-c", str(inventory or self.sandbox.inventory), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
        )

    def hosts_args(self) -> list[str]:
        return [arg for host in self.sandbox.up_hosts for arg in ("--host", host)]

    def forget_base(self, host: str) -> None:
        """Remove the host's cached base, so that the next build sends it."""
        self.sandbox.exec(host, ["sh", "-c", f"rm -f {CACHE}/tiny.*"])

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        for host in self.sandbox.up_hosts:
            for name in self.names:
                self.sandbox.exec(host, ["virsh", "-q", "destroy", name], check=False)
                self.sandbox.exec(host, ["virsh", "-q", "undefine", name], check=False)
                self.sandbox.exec(
                    host,
                    ["sh", "-c", f"rm -f {IMAGES}/{name}.* {CACHE}/*.partial-*-{name}"],
                    check=False,
                )

    def assert_bystanders_untouched(self) -> None:
        for host, name in self.bystanders.items():
            state = self.sandbox.exec(host, ["virsh", "-q", "domstate", name], check=False)
            assert state.stdout.strip() == "shut off", f"{host}: bystander {name}: {state}"
            pet = self.sandbox.exec(host, ["cat", f"{IMAGES}/{name}.img"], check=False)
            assert pet.stdout == "pet\n", f"{host}: {IMAGES}/{name}.img is gone"

    def controller_tmp(self) -> list[str]:
        """What is left in the controller's $TMPDIR."""
        return sorted(p.name for p in self.tmp.iterdir())

    def leftover_note(self) -> str:
        """The leftover note of `mclu list` (stderr), '' when there is none."""
        done = self.mclu("list", *self.hosts_args())
        assert done.returncode == 0, done.stderr
        return "".join(line for line in done.stderr.splitlines(keepends=True) if "leftover" in line)

    def reported(self, name: str) -> list[str]:
        """What `mclu cleanup --dry-run` would remove of a run for guest `name`."""
        done = self.mclu("cleanup", "--dry-run", "--json", *self.hosts_args())
        assert done.returncode == 0, done.stderr
        return [
            f"{h['name']}: {i.get('name') or i.get('path')}"
            for h in json.loads(done.stdout)["hosts"]
            for i in h["removed"]
            if name in (i.get("name") or i.get("path") or "")
        ]


@pytest.fixture
def faults(
    sandbox: sb.Sandbox, repo: Path, cache_dir: Path, ssh_key: Path, bystanders: dict[str, str]
) -> Iterator[Faults]:
    made = Faults(sandbox, cache_dir, ssh_key, bystanders)
    yield made
    made.cleanup()
    made.assert_bystanders_untouched()


def until(
    proc: subprocess.Popen[str], matches: Callable[[dict[str, object]], bool]
) -> dict[str, object]:
    """Read the JSON lines of proc until one matches; fails if it ends first."""
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if matches(event):
            return dict(event)
    _, err = proc.communicate(timeout=60)
    raise AssertionError(f"mclu ended (exit {proc.returncode}) before the step: {err}")


def step(prefix: str) -> Callable[[dict[str, object]], bool]:
    return lambda e: e.get("event") == "step" and str(e.get("text", "")).startswith(prefix)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # mclu and what it started (a libguestfs appliance)
        proc.communicate()
        raise
    return proc.returncode, err


def one_error_line(err: str) -> str:
    """stderr's one error line (notes aside); no traceback. Printed: `pytest -s` shows what
    the user sees for each fault (docs/faults.md quotes them)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("mclu: error:")]
    assert len(errors) == 1, err
    sys.stderr.write(f"\n    {errors[0]}\n")
    return errors[0]


def settled(sandbox: sb.Sandbox, name: str, seconds: float = 60) -> list[str]:
    """`sb.leftovers`, once processes of the run (qemu-nbd, zstd) have had time to end.

    What the product promises is that qemu-nbd ends with the run's ssh connection
    (commands.NBD_SERVER_SCRIPT): sshd closes the session when the connection drops, its
    watcher kills the server, which stops qemu-nbd and waits for it (qemu-nbd flushes the
    image it served first). sshd notices a killed client at once by its FIN, else within
    ClientAliveInterval x ClientAliveCountMax (15 s in the sandbox); under load the chain
    after it took longer than the 15 s this bound once was. A bounded wait, not a timing
    assertion: a qemu-nbd still there after it is a leftover.
    """
    deadline = time.monotonic() + seconds
    found = sb.leftovers(sandbox, name)
    while any("qemu-nbd" in f for f in found) and time.monotonic() < deadline:
        time.sleep(0.5)
        found = sb.leftovers(sandbox, name)
    return found


# --- signals at each step of a build -----------------------------------------------------------


@SIGNALS
@pytest.mark.parametrize("at", BUILD_STEPS)
def test_signal_at_a_build_step_undoes_everything(
    sandbox: sb.Sandbox, faults: Faults, at: str, sig: signal.Signals
) -> None:
    host = sandbox.up_hosts[1]
    if at == "sending":
        faults.forget_base(host)
    name = faults.name()
    proc = faults.build(name, host)
    until(proc, step(at))
    proc.send_signal(sig)
    code, err = finish(proc)
    assert code == EXIT[sig], err
    assert err.splitlines()[-1] == f"mclu: error: {WORD[sig]}"
    assert faults.controller_tmp() == []  # the private host keys first
    assert settled(sandbox, name) == []
    assert faults.reported(name) == []


def test_a_closed_terminal_undoes_the_build(sandbox: sb.Sandbox, faults: Faults) -> None:
    """The terminal mclu runs in goes away (its pty's master closed, as sshd does when the
    connection drops): the kernel sends SIGHUP and mclu's output now fails with EIO; the
    build is undone all the same, with nothing left on the host or the controller."""
    host, name = sandbox.up_hosts[1], faults.name()
    argv = [
        str(sb.BIN / "mclu"),
        "-c",
        str(faults.sandbox.inventory),
        "build",
        "tiny",
        name,
        "--on",
        host,
        "--ssh-key",
        str(faults.ssh_key),
    ]
    pid, master = pty.fork()
    if pid == 0:  # the child: a session leader on the pty, as a login shell's command is
        os.execve(argv[0], argv, faults.env)
    seen = b""
    while b"personalising" not in seen:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child ended
            chunk = b""
        assert chunk, seen.decode(errors="replace")
        seen += chunk
    os.close(master)  # the terminal hangs up
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 129, seen.decode(errors="replace")
    assert faults.controller_tmp() == []
    assert settled(sandbox, name) == []
    assert faults.reported(name) == []


# --- SIGKILL: no undo runs; what is left is marked, reported and removed -----------------------


@pytest.mark.parametrize("at", BUILD_STEPS)
def test_sigkill_at_a_build_step_leaves_marked_leftovers_cleanup_removes(
    sandbox: sb.Sandbox, faults: Faults, at: str
) -> None:
    host = sandbox.up_hosts[2]
    if at == "sending":
        faults.forget_base(host)
    name = faults.name()
    proc = faults.build(name, host)
    until(proc, step(at))
    if at == "sending":
        time.sleep(0.3)  # into the transfer: the partial base exists
    proc.kill()
    proc.communicate(timeout=60)
    left = settled(sandbox, name)
    tree = subprocess.run(
        ["ps", "-eo", "pid,ppid,stat,etime,args"], capture_output=True, text=True
    ).stdout
    assert not any("qemu-nbd" in f for f in left), (
        left,
        [  # ended with the ssh connection
            line for line in tree.splitlines() if name in line or " cat" in line
        ],
    )
    if at != "defining":  # defined before anything else: from here on it is marked
        assert f"{host}: domain {name}" in left
    # On the controller, the killed run's private directory stays (nothing else of it);
    # `mclu cleanup --dry-run` names it, and the next run that makes its own removes it.
    run_dirs = [f for f in faults.controller_tmp() if f.startswith("mclu-run-")]
    assert faults.controller_tmp() == run_dirs
    if at in ("creating disk", "personalising", "starting"):
        assert len(run_dirs) == 1, run_dirs
    dry = faults.mclu("cleanup", "--dry-run", "--json", *faults.hosts_args())
    assert json.loads(dry.stdout)["controller"] == {
        "removed": [str(faults.tmp / d) for d in run_dirs]
    }, dry.stdout
    assert faults.controller_tmp() == run_dirs  # a dry run
    note = faults.leftover_note()
    assert faults.controller_tmp() == []  # removed by the next run (`mclu list`)
    if left:
        assert faults.reported(name), left
        assert note.startswith("mclu: note: ") and host in note, note
        assert note.rstrip().endswith("(mclu cleanup removes them)") or note.rstrip().endswith(
            "(mclu cleanup removes it)"
        ), note
        listed = faults.mclu("list", "--host", host)
        row = next(line for line in listed.stdout.splitlines() if line.startswith(name))
        assert "interrupted build" in row
    done = faults.mclu("cleanup", *faults.hosts_args())
    assert done.returncode == 0, done.stderr
    if left:
        assert f"{host}: removed guest {name}" in done.stdout or at == "defining", done.stdout
    assert sb.leftovers(sandbox, name) == []
    assert faults.reported(name) == []


def test_cleanup_after_a_sigkill_removes_the_run_directory_on_the_controller(
    sandbox: sb.Sandbox, faults: Faults
) -> None:
    """The killed build's private directory (the new guest's private host keys, its
    sockets) is removed by the next `mclu cleanup`, with what the build left on its host."""
    host, name = sandbox.up_hosts[2], faults.name()
    proc = faults.build(name, host)
    until(proc, step("personalising"))
    proc.kill()
    proc.communicate(timeout=60)
    [run_dir] = faults.controller_tmp()
    assert run_dir.startswith(f"mclu-run-{proc.pid}-")
    assert (faults.tmp / run_dir).stat().st_mode & 0o777 == 0o700
    settled(sandbox, name)
    done = faults.mclu("cleanup", *faults.hosts_args())
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"controller: removed {faults.tmp / run_dir} (temporary files of an mclu run that is gone)"
    )
    assert f"{host}: removed guest {name}" in done.stdout, done.stdout
    assert faults.controller_tmp() == []
    assert sb.leftovers(sandbox, name) == []


def test_cleanup_leaves_a_build_under_way_alone(sandbox: sb.Sandbox, faults: Faults) -> None:
    """A guest still "building" whose lock a live build holds is no leftover."""
    host = sandbox.up_hosts[0]
    name = faults.name()
    proc = faults.build(name, host)
    until(proc, step("personalising"))
    dry = faults.mclu("cleanup", "--dry-run", "--json", *faults.hosts_args())
    doc = json.loads(dry.stdout)
    mine = next(h for h in doc["hosts"] if h["name"] == host)
    assert not any(i.get("name") == name for i in mine["removed"]), doc
    kept = [i for i in mine["kept"] if i.get("name") == name]
    assert kept and "under way" in kept[0]["reason"], doc
    done = faults.mclu("cleanup", *faults.hosts_args())
    assert done.returncode == 0
    assert f"removed guest {name}" not in done.stdout
    code, err = finish(proc)
    assert code == 0, err


# --- the network, the daemons and the disk of a host ---------------------------------------------


@contextlib.contextmanager
def throttled(host: str, rate: str) -> Iterator[None]:
    """What reaches `host` over its link limited to `rate` (a token bucket on the
    root-namespace end of its veth, which is the sandbox's own), for the block."""
    veth = sandbox_config.parse_host_name(host).veth
    tbf = ["root", "tbf", "rate", rate, "burst", "32kbit", "latency", "500ms"]
    subprocess.run(["tc", "qdisc", "add", "dev", veth, *tbf], check=True)
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], check=False)


def transferring(event: dict[str, object]) -> bool:
    """A transfer's progress line once some bytes are on their way."""
    done = event.get("done")
    return event.get("event") == "transfer" and isinstance(done, int) and done > 0


def test_network_cut_mid_transfer(sandbox: sb.Sandbox, faults: Faults, tmp_path: Path) -> None:
    host = sandbox.up_hosts[2]
    faults.forget_base(host)
    inventory = sandbox.variant(tmp_path / "hosts.toml", command_timeout=10)
    name = faults.name()
    # The cut must come while the base is on its way: once its first bytes are read for
    # sending (the step's line comes earlier, before the cache directory is made), and
    # before it has all arrived. Unthrottled, tiny's base (over 10 MiB compressed) crossed
    # the veth before the test had read the step's line and cut, and the build failed at
    # the next step instead. At 1 Mbit/s its delivery takes over a minute, whatever the
    # machine's load, so the cut lands in it.
    with throttled(host, "1mbit"):
        proc = faults.build(name, host, "--transport", "stream", inventory=inventory)
        until(proc, step("sending"))
        until(proc, transferring)
        sandbox.exec(host, ["ip", "link", "set", "eth0", "down"])
    try:
        code, err = finish(proc, timeout=180)
    finally:
        sandbox.exec(host, ["ip", "link", "set", "eth0", "up"])
    assert code == 1, err
    line = one_error_line(err)
    assert line.startswith(
        f"mclu: error: build of {name} failed at step 'send template' on {host}: "
    ), line
    assert "mclu cleanup" in line  # what could not be undone on the cut-off host
    # Ended by ssh's keepalive (3 x 15 s without an answer: the connection is dropped), not
    # by the transfer's own bound (HostTimeout, "no answer to ... within N s"), which is longer.
    assert f"{host}: no answer to" not in line, line
    # The host lets go of the dead run's lock once sshd drops its session (ClientAlive*:
    # 15 s in the sandbox); from then on what is left is a leftover.
    deadline = time.monotonic() + 60
    while not faults.reported(name) and time.monotonic() < deadline:
        time.sleep(2)
    assert f"{host}: {name}" in faults.reported(name)
    assert host in faults.leftover_note()
    done = faults.mclu("cleanup", *faults.hosts_args())
    assert done.returncode == 0, done.stderr
    assert sb.leftovers(sandbox, name) == []


def test_libvirtd_stopped_mid_build(sandbox: sb.Sandbox, faults: Faults) -> None:
    host = sandbox.up_hosts[2]
    name = faults.name()
    proc = faults.build(name, host)
    until(proc, step("personalising"))
    with sb.libvirtd_stopped(host):
        code, err = finish(proc)
    assert code == 1, err
    line = one_error_line(err)
    assert line.startswith(
        f"mclu: error: build of {name} failed at step 'start' on {host}: "
        f"{host}: libvirt is not answering"
    ), line
    # The disk went (ssh still worked); the definition could not: marked, and removable now.
    assert sb.leftovers(sandbox, name) == [f"{host}: domain {name}"]
    assert f"on {host}" in faults.leftover_note()
    done = faults.mclu("cleanup", *faults.hosts_args())
    assert done.returncode == 0 and f"{host}: removed guest {name}" in done.stdout, done
    assert sb.leftovers(sandbox, name) == []


@pytest.fixture
def small_image_dir(sandbox: sb.Sandbox) -> Iterator[str]:
    """ham2's image directory on a small filesystem of its own, for the test's duration.

    300 MiB: room for what the plan counts (the base's whole 128 MiB when the controller's
    cache has not measured its data yet, and as much for the guest's disk).
    """
    host = sandbox.up_hosts[2]
    sandbox.exec(host, ["mount", "-t", "tmpfs", "-o", "size=300m", "mclu-test", IMAGES])
    try:
        yield host
    finally:
        for _ in range(20):  # the build's lock holder may take a moment to let go
            if sandbox.exec(host, ["umount", IMAGES], check=False).returncode == 0:
                break
            time.sleep(0.5)


def test_image_dir_full_mid_transfer(
    sandbox: sb.Sandbox, faults: Faults, small_image_dir: str
) -> None:
    host = small_image_dir
    name = faults.name()
    proc = faults.build(name, host)
    until(proc, step("sending"))
    # The plan saw room; now 8 MiB are left, less than the base's 22 MiB of data. mclu is
    # paused meanwhile: else a quick transfer may be over before the disk fills.
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        free = int(sandbox.exec(host, ["df", "--output=avail", "-B1", IMAGES]).stdout.split()[-1])
        sandbox.exec(host, ["fallocate", "-l", str(free - (8 << 20)), f"{IMAGES}/filler"])
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    code, err = finish(proc)
    assert code == 1, err
    line = one_error_line(err)
    assert line.startswith(
        f"mclu: error: build of {name} failed at step 'send template' on {host}"
    ), line
    assert "No space left on device" in line or "no space" in line.lower(), line
    files = sandbox.exec(host, ["ls", "-A", IMAGES]).stdout.split()
    assert sorted(files) == [".mclu-locks", "filler", "mclu-templates"], files
    assert sandbox.exec(host, ["ls", "-A", CACHE]).stdout == ""
    assert sb.leftovers(sandbox, name) == []


def test_build_on_a_host_that_is_off(sandbox: sb.Sandbox, faults: Faults) -> None:
    name = faults.name()
    code, err = finish(faults.build(name, sandbox.off_host))
    assert code == 1, err
    # Given up when its TCP timeout was up (one bound, named), not after retries or a hang.
    assert re.fullmatch(
        rf"mclu: error: {sandbox.off_host}: unreachable at "
        rf"{re.escape(sandbox.address(sandbox.off_host))}: no answer within [\d.]+ s",
        one_error_line(err),
    ), err
    assert sb.leftovers(sandbox, name) == []


def test_build_on_a_host_whose_sshd_rejects_the_key(
    sandbox: sb.Sandbox, faults: Faults, tmp_path: Path
) -> None:
    inventory = sandbox.with_stranger_key(tmp_path)
    host, name = sandbox.up_hosts[0], faults.name()
    code, err = finish(faults.build(name, host, inventory=inventory))
    assert code == 1, err
    assert one_error_line(err).startswith(
        f"mclu: error: {host}: ssh refused root@{sandbox.address(host)}"
    )
    assert sb.leftovers(sandbox, name) == []


def test_build_on_a_host_whose_host_key_changed(
    sandbox: sb.Sandbox, faults: Faults, tmp_path: Path
) -> None:
    host = sandbox.up_hosts[0]
    inventory, known = sandbox.with_changed_host_key(host, tmp_path)
    name = faults.name()
    code, err = finish(faults.build(name, host, inventory=inventory))
    assert code == 1, err
    line = one_error_line(err)
    assert f"{host}: HOST KEY CHANGED for {sandbox.address(host)}" in line, line
    assert f"ssh-keygen -f {known} -R {sandbox.address(host)}" in line, line
    assert sb.leftovers(sandbox, name) == []


# --- two builds of one name at once ------------------------------------------------------------


@pytest.mark.parametrize("where", ["same host", "two hosts"])
def test_concurrent_builds_of_one_name_exactly_one_wins(
    sandbox: sb.Sandbox, faults: Faults, where: str
) -> None:
    first = sandbox.up_hosts[1]
    second = first if where == "same host" else sandbox.up_hosts[2]
    name = faults.name()
    procs = [faults.build(name, first), faults.build(name, second)]
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0, results
    loser = next(err for code, err in results if code != 0)
    assert codes[1] in (75, 1), results  # locked, or (once the winner is done) the name taken
    line = one_error_line(loser)
    assert "is locked by" in line or "already exists" in line, line
    found = [f for f in sb.leftovers(sandbox, name) if "domain" in f]
    assert len(found) == 1, found


# --- migration -----------------------------------------------------------------------------------


@pytest.fixture
def running(sandbox: sb.Sandbox, faults: Faults) -> str:
    """A running tiny guest on the first host (not yet booted: it need not be, to move)."""
    name = faults.name()
    code, err = finish(faults.build(name, sandbox.up_hosts[0]))
    assert code == 0, err
    return name


def where(sandbox: sb.Sandbox, name: str) -> dict[str, str]:
    found = {}
    for host in sandbox.up_hosts:
        done = sandbox.exec(host, ["virsh", "-q", "domstate", name], check=False)
        if done.returncode == 0:
            found[host] = done.stdout.strip()
    return found


def test_migration_whose_destination_libvirtd_dies(
    sandbox: sb.Sandbox, faults: Faults, running: str
) -> None:
    source, dest = sandbox.up_hosts[0], sandbox.up_hosts[1]
    # Slow enough to be caught mid-way: 1 MiB/s for the guest's memory.
    sandbox.exec(source, ["virsh", "migrate-setspeed", running, "1"])
    proc = faults.start("migrate", running, "--to", dest)
    until(proc, lambda e: e.get("event") == "transfer" and int(str(e.get("done", 0))) > 0)
    with sb.libvirtd_stopped(dest, kill=True):
        code, err = finish(proc)
    assert code == 1, err
    line = one_error_line(err)
    assert line.startswith(
        f"mclu: error: migration of {running} from {source} to {dest} failed at 'migrate'"
    ), line
    assert line.endswith(f"({running} runs on {source})"), line
    deadline = time.monotonic() + 30  # the restarted libvirtd drops the incoming half
    while where(sandbox, running) != {source: "running"} and time.monotonic() < deadline:
        time.sleep(1)
    assert where(sandbox, running) == {source: "running"}
    files = sandbox.exec(dest, ["ls", "-A", IMAGES]).stdout.split()
    assert not [f for f in files if running in f], files


@SIGNALS
@pytest.mark.parametrize("at", ["sending", "creating", "migrating"])
def test_signal_at_a_migration_step(
    sandbox: sb.Sandbox, faults: Faults, running: str, at: str, sig: signal.Signals
) -> None:
    source, dest = sandbox.up_hosts[0], sandbox.up_hosts[2]
    if at == "sending":
        faults.forget_base(dest)
    sandbox.exec(source, ["virsh", "migrate-setspeed", running, "1"])
    proc = faults.start("migrate", running, "--to", dest)
    until(proc, step(at))
    if at == "migrating":  # once the job runs
        until(proc, lambda e: e.get("event") == "transfer" and int(str(e.get("done", 0))) > 0)
    proc.send_signal(sig)
    code, err = finish(proc)
    assert code == EXIT[sig], err
    assert faults.controller_tmp() == []
    assert where(sandbox, running) == {source: "running"}
    files = sandbox.exec(dest, ["ls", "-A", IMAGES, CACHE]).stdout.split()
    assert not [f for f in files if running in f or ".partial" in f or ".mclu-new" in f], files


# --- rebuild -------------------------------------------------------------------------------------

REBUILD_STEPS = [
    "creating the new disk",
    "personalising the new disk",
    "stopping the old guest",
    "starting the new guest",
    "waiting until ready",
]


@pytest.fixture(scope="module")
def pet(
    sandbox: sb.Sandbox,
    repo: Path,
    cache_dir: Path,
    ssh_key: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path]]:
    """A running guest built from the template `flaky` (tiny, as yet harmless), and the
    templates directory that has it; rebuilt, and interrupted, by the tests below."""
    templates = tmp_path_factory.mktemp("templates")
    (templates / "flaky.toml").write_text('base = "tiny"\n')
    faults = Faults(sandbox, cache_dir, ssh_key, {})
    name = faults.name()
    code, err = finish(
        faults.start(
            "build",
            "flaky",
            name,
            "--on",
            sandbox.up_hosts[1],
            "--templates",
            str(templates),
            "--ssh-key",
            str(ssh_key),
        )
    )
    assert code == 0, err
    yield name, templates
    faults.cleanup()


def guest_record(faults: Faults, name: str) -> dict[str, object]:
    done = faults.mclu("info", name, "--json", *faults.hosts_args())
    assert done.returncode == 0, done.stderr
    guest = json.loads(done.stdout)["guest"]
    return {
        "host": guest["host"],
        "uuid": guest["uuid"],
        "state": guest["state"],
        "disks": guest["disks"],
        "mclu": guest["mclu"],
    }


def rebuild_files(sandbox: sb.Sandbox, host: str, name: str) -> list[str]:
    files = sandbox.exec(host, ["ls", "-A", IMAGES]).stdout.split()
    return sorted(f for f in files if f.startswith(name))


def test_rebuild_whose_new_build_fails_leaves_the_old_guest(
    sandbox: sb.Sandbox, faults: Faults, pet: tuple[str, Path]
) -> None:
    name, templates = pet
    before = guest_record(faults, name)
    (templates / "flaky.toml").write_text('base = "tiny"\n[customize]\nrun = ["exit 3"]\n')
    try:
        done = faults.mclu(
            "rebuild",
            name,
            "--templates",
            str(templates),
            "--ssh-key",
            str(faults.ssh_key),
            *faults.hosts_args(),
        )
    finally:
        (templates / "flaky.toml").write_text('base = "tiny"\n')
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert guest_record(faults, name) == before  # running, same disk, same metadata
    assert rebuild_files(sandbox, str(before["host"]), name) == [f"{name}.qcow2"]
    assert faults.reported(name) == []


@SIGNALS
@pytest.mark.parametrize("at", REBUILD_STEPS)
def test_signal_at_a_rebuild_step_leaves_the_old_guest(
    sandbox: sb.Sandbox, faults: Faults, pet: tuple[str, Path], at: str, sig: signal.Signals
) -> None:
    name, templates = pet
    host = sandbox.up_hosts[1]
    sandbox.exec(host, ["virsh", "-q", "start", name], check=False)  # running, whatever before
    before = guest_record(faults, name)
    assert before["state"] == "running"
    proc = faults.start(
        "rebuild",
        name,
        "--templates",
        str(templates),
        "--ssh-key",
        str(faults.ssh_key),
        "--stop-timeout",
        "3",
        *faults.hosts_args(),
    )
    until(proc, step(at))
    proc.send_signal(sig)
    code, err = finish(proc)
    assert code == EXIT[sig], err
    assert faults.controller_tmp() == []
    if at == "stopping the old guest":
        time.sleep(15)  # an ACPI power-off request already sent shows by now
    after = guest_record(faults, name)
    assert after == before, (before, after)  # running again, on its old disk and record
    assert rebuild_files(sandbox, str(before["host"]), name) == [f"{name}.qcow2"]
    assert faults.reported(name) == []
