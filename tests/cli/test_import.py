"""`mclu templates import`: an image made a template of the user's repository, which
`mclu templates` then lists; refusals are one line and keep nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from mclu.cli.import_ import Meter
from mclu.images import import_inspect
from tests.cli.harness import Cli
from tests.unit.test_image_import import NO_OS, raw_disk, stand_in_appliance

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("mkfs.ext4") is None,
    reason="needs qemu-img and mkfs.ext4",
)


def qcow2(tmp_path: Path, name: str = "disk.qcow2") -> Path:
    """An 8 MiB qcow2 of a raw disk with an MBR and an ext4 OS root."""
    raw = raw_disk(tmp_path / "disk.raw")
    out = tmp_path / name
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(autouse=True)
def appliance(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """libguestfs's appliance stood in for (tests/integration/test_import_inspect.py runs
    it): it finds raw_disk's OS root."""
    return stand_in_appliance(monkeypatch)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def repository(cli: Cli) -> Path:
    return cli.home / ".local" / "share" / "mclu" / "images"


def test_import_then_templates_lists_it_with_its_revision(cli: Cli, tmp_path: Path) -> None:
    source = qcow2(tmp_path)
    assert cli("templates", "import", str(source), "mine", "--description", "My disk") == 0
    assert cli.stdout.startswith("imported mine revision 1 from qcow2: 8.00 MiB disk")
    assert (cli.repos_d / "mclu-local.conf").is_file()
    assert cli("templates", "--json") == 0
    listed = {t["name"]: t for t in json.loads(cli.stdout)["templates"]}
    assert listed["mine"]["revision"] == 1 and listed["mine"]["source"] == "mclu-local"
    assert listed["mine"]["description"] == "My disk" and listed["mine"]["size"] == 8 << 20
    assert cli("templates", "import", str(source), "mine") == 0
    assert cli("templates") == 0
    [row] = [line.split() for line in cli.stdout.splitlines() if line.startswith("mine ")]
    assert row[:3] == ["mine", "mclu-local", "2"]


def test_import_under_a_repository_templates_name_is_its_next_revision(
    cli: Cli, tmp_path: Path
) -> None:
    assert cli("templates", "import", str(qcow2(tmp_path)), "tiny") == 0  # the index has r3
    assert "revision 4" in cli.stdout
    assert cli("templates", "info", "tiny", "--json") == 0
    template = json.loads(cli.stdout)["template"]
    assert template["base"]["revision"] == 4
    assert template["source_uri"].startswith(repository(cli).as_uri())


def test_json_gives_progress_lines_then_the_import(cli: Cli, tmp_path: Path) -> None:
    assert cli("templates", "import", str(qcow2(tmp_path)), "mine", "--json") == 0
    events = [json.loads(line) for line in cli.stdout.splitlines()]
    assert {e["event"] for e in events[:-1]} == {"progress"}
    last = events[-1]
    assert last["event"] == "imported" and last["revision"] == 1 and last["format"] == "qcow2"
    assert last["listed"] is True and Path(last["file"]).is_file()
    assert last["virtual_size"] == 8 << 20 and 0 < last["required_size"] < 8 << 20
    assert (last["root"], last["cloud_init"]) == ("/dev/sda1", [])


def test_a_refusal_is_one_line_and_keeps_nothing(cli: Cli, tmp_path: Path) -> None:
    junk = tmp_path / "junk.qcow2"
    junk.write_bytes(b"\x01" * 100_000)
    result = cli.result("templates", "import", str(junk), "mine")
    assert result.code == 1
    assert result.one_error_line().startswith(f"mclu: error: {junk}: not imported: not a")
    assert not (repository(cli) / "index").exists()
    assert cli("templates") == 0 and "mine" not in cli.stdout


def test_a_checksum_mismatch_is_refused(cli: Cli, tmp_path: Path) -> None:
    source = qcow2(tmp_path)
    assert cli("templates", "import", str(source), "mine", "--sha256", "ab" * 32) == 1
    assert "sha256 mismatch" in cli.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["bad/name"],
        ["mine", "--sha256", "xyz"],
        ["mine", "--sha256", "ab" * 32, "--sha512", "ab" * 64],
    ],
)
def test_bad_names_and_digests_are_usage_errors(cli: Cli, tmp_path: Path, argv: list[str]) -> None:
    assert cli("templates", "import", str(tmp_path), *argv) == 2


def test_progress_reads_as_ovirt_img_s() -> None:
    line = Meter._line(6 << 30, 6 << 30, 16.85, "import completed")
    assert line == "[100%] 6.00 GiB, 16.85 s, 364.63 MiB/s | import completed"
    assert Meter._line(0, 0, 0.0, "downloading") == "[ ...] 0 bytes, 0.00 s, - | downloading"
    # The appliance has no bytes to count: only its time.
    assert Meter._line(0, 0, 12.4, "inspecting") == (
        "[ ...] 12.40 s | inspecting (libguestfs appliance)"
    )


@pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")
def test_signed_import_is_listed_through_its_checked_signature(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(home))
    # mclu checks the signature with a keyring in $TMPDIR, whose gpg-agent socket path must
    # fit in a socket address: a short $TMPDIR, not pytest's.
    short = Path(tempfile.mkdtemp(prefix="mclu-t-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
    monkeypatch.setattr(tempfile, "tempdir", str(short))
    gen = ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "t@example.org", "ed25519"]
    subprocess.run([*gen, "sign", "never"], check=True, capture_output=True)
    assert cli("templates", "import", str(qcow2(tmp_path)), "mine", "--sign", "t@example.org") == 0
    assert cli.stdout.splitlines()[0].endswith("(signed by t@example.org)")
    conf = (cli.repos_d / "mclu-local.conf").read_text()
    assert "index.asc" in conf and "gpgkey=" in conf
    assert cli("templates") == 0, cli.stderr
    assert re.search(r"^mine\s+mclu-local\s+1\s", cli.stdout, re.M)
    (repository(cli) / "index.asc").write_text("tampered\n")
    assert cli("templates") == 1
    assert "mclu-local" in cli.stderr and "not signed" in cli.stderr


def test_the_text_says_the_room_a_host_needs_and_the_system_found(cli: Cli, tmp_path: Path) -> None:
    assert cli("templates", "import", str(qcow2(tmp_path)), "mine") == 0
    first, second = cli.stdout.splitlines()
    assert re.fullmatch(
        r"imported mine revision 1 from qcow2: 8\.00 MiB disk, \S+ \S+ allocated, "
        r"\S+ \S+ on a host, \S+ \S+ compressed, into \S+/index \(unsigned\)",
        first,
    )
    assert second == "its system: Debian GNU/Linux 12 (bookworm) on /dev/sda1, no cloud-init"
    assert cli.stderr == ""


def test_an_image_with_cloud_init_is_proposed_for_it(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = ("/usr/bin/cloud-init", "/etc/cloud/cloud.cfg")
    stand_in_appliance(
        monkeypatch,
        import_inspect.Inspection({"/dev/sda1": "ext4"}, "/dev/sda1", "Debian 12", True, found),
    )
    assert cli("templates", "import", str(qcow2(tmp_path)), "cloudy") == 0
    assert cli.stdout.splitlines()[1] == "its system: Debian 12 on /dev/sda1, with cloud-init"
    template = Path(__file__).resolve().parents[2] / "templates" / "cloudy.toml"
    assert cli.stderr == (
        "mclu: cloudy carries cloud-init (/usr/bin/cloud-init, /etc/cloud/cloud.cfg): "
        "cloud-init can personalise it without the libguestfs appliance; to build so, write "
        f'{template} with base = "cloudy" and personalise = "cloud-init"\n'
    )


def test_a_disk_with_only_a_vfat_filesystem_is_one_line(
    cli: Cli, tmp_path: Path, appliance: list[Path]
) -> None:
    if shutil.which("mkfs.vfat") is None:
        pytest.skip("needs mkfs.vfat")
    disk = tmp_path / "esp.img"
    subprocess.run(["mkfs.vfat", "-C", str(disk), "8192"], check=True, capture_output=True)
    result = cli.result("templates", "import", str(disk), "esp")
    assert result.code == 1 and appliance == []
    assert result.one_error_line() == (
        f"mclu: error: {disk}: not imported: {NO_OS} (found: one vfat filesystem, no root)"
    )
    assert not (repository(cli) / "index").exists()
