"""Fixtures shared by mclu's test suites. Each section belongs to the module it serves."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

# The suite's own sandbox (instance 9: its namespaces, subnet 10.213.9.0/24 and state dir
# /var/tmp/mclu-sandbox-9), so that it never touches a user's demo or work on the default
# instance 0, and what they left there never breaks it. Set before mclu.sandbox.config reads
# it; a caller's own MCLU_SANDBOX_INSTANCE wins.
TEST_INSTANCE = "9"
# Under pytest-xdist (`make test` runs the sandbox tests in two streams, `-n 2`) each worker
# gwN takes the Nth instance of MCLU_TEST_INSTANCES (default "9 8") and that instance's own
# state dir, whatever MCLU_SANDBOX_INSTANCE and MCLU_SANDBOX_DIR say: xdist sets
# PYTEST_XDIST_WORKER before it loads this file, and mclu.sandbox.config reads the instance
# when imported, below. A caller who names an instance names them all for -n.
TEST_INSTANCES_ENV = "MCLU_TEST_INSTANCES"
_DEFAULTED = "MCLU_TEST_INSTANCE_DEFAULTED"  # the controller chose instance 9, not the caller
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker is None:
    if "MCLU_SANDBOX_INSTANCE" not in os.environ:
        os.environ["MCLU_SANDBOX_INSTANCE"] = TEST_INSTANCE
        os.environ[_DEFAULTED] = "1"  # the workers inherit the controller's environment
else:
    if TEST_INSTANCES_ENV not in os.environ and _DEFAULTED not in os.environ:
        raise SystemExit(
            f"MCLU_SANDBOX_INSTANCE is set: with pytest -n, name one instance per worker in "
            f"{TEST_INSTANCES_ENV} (e.g. '6 7')"
        )
    _instances = os.environ.get(TEST_INSTANCES_ENV, f"{TEST_INSTANCE} 8").split()
    _index = int(_worker.removeprefix("gw"))
    if _index >= len(_instances) or _instances[_index] in ("0", ""):
        raise SystemExit(f"{TEST_INSTANCES_ENV}={_instances}: no test instance for {_worker}")
    os.environ["MCLU_SANDBOX_INSTANCE"] = _instances[_index]
    os.environ["MCLU_SANDBOX_DIR"] = f"/var/tmp/mclu-sandbox-{_instances[_index]}"
# Sandboxes side by side share their built templates (by name and build key, under a lock),
# so two streams do not each build debian-12 (mclu.sandbox.images.build_cache).
os.environ.setdefault("MCLU_SANDBOX_BUILD_CACHE", "/var/tmp/mclu-sandbox-build-cache")

import pytest  # noqa: E402

from mclu.model import HostSpec  # noqa: E402
from mclu.sandbox import config as sandbox_config  # noqa: E402
from tests.integration import sandbox as sb  # noqa: E402

# A suite started as a background job of a non-interactive shell (`make test &`) inherits
# SIGINT ignored, and so would every mclu it runs: Python then never raises
# KeyboardInterrupt, and the tests of what Ctrl-C does would see nothing happen. The mclu
# processes the tests start get Python's own handling back from this one.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# --- Host sessions (mclu.hosts): test-driver nodes and the sandbox host ----------------------

TESTDRIVER = Path(__file__).parent / "data" / "testdriver"
SANDBOX = sb.STATE


@pytest.fixture
def testdriver_uri(tmp_path: Path) -> str:
    """`test:///` URI of a fresh copy of tests/data/testdriver/host-a.xml.

    A copy per test: the test driver keeps its state per open file path in the process, and
    test:///default is shared by every test (virt-manager tests/utils.py says the same).
    """
    node = tmp_path / "host-a.xml"
    shutil.copyfile(TESTDRIVER / "host-a.xml", node)
    return f"test://{node}"


def sandbox_spec(name: str = "ham0", address: str = f"{sandbox_config.SUBNET}.10") -> HostSpec:
    """The HostSpec of a sandbox host (mclu-sandbox's client key and known_hosts)."""
    client = SANDBOX / "client"
    return HostSpec(
        name=name,
        address=address,
        user="root",
        port=22,
        domain_type="qemu",
        identity_files=(str(client / "id_ed25519"),),
        identities_only=True,
        known_hosts=str(client / "known_hosts"),
        ssh_config="none",
        connect_timeout=3.0,
    )


@pytest.fixture(scope="session")
def sandbox() -> Iterator[sb.Sandbox]:
    """The sandbox, up for the whole test session; taken down at the end if it was not up.

    Skips the tests that use it where the sandbox cannot run (not root, packages missing).
    """
    reason = sb.unavailable_reason()
    if reason:
        pytest.skip(reason)
    was_up = sb.sandbox("status", check=False).returncode == 0
    up = sb.sandbox("up", str(sb.HOSTS), check=False)
    if up.returncode != 0:
        pytest.fail(f"mclu-sandbox up failed: {up.stdout}{up.stderr}")
    try:
        yield sb.Sandbox(state=sb.STATE, inventory=sb.STATE / "hosts.toml")
    finally:
        if not was_up:
            sb.sandbox("down", check=False)


@pytest.fixture
def sandbox_host(sandbox: sb.Sandbox) -> HostSpec:
    """ham0 of the running sandbox."""
    return sandbox_spec(sandbox.up_hosts[0], sandbox.address(sandbox.up_hosts[0]))


# --- Golden files (tests/data/domxml, ...): compared, or rewritten with --regenerate-output ---


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regenerate-output",
        action="store_true",
        default=False,
        help="rewrite golden files with what the code produces now, then review the diff",
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[Path, str], None]:
    """`golden(path, text)`: assert that `path` holds `text`, or rewrite it when regenerating."""
    regenerate = bool(request.config.getoption("--regenerate-output"))

    def check(path: Path, text: str) -> None:
        if regenerate:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"{path} is missing: run pytest --regenerate-output"
        assert text == path.read_text(), f"{path} differs: review, then --regenerate-output"

    return check
