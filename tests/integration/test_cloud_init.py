"""cloud-init templates on the sandbox (issue 13, "Cloud images and cloud-init"): the sandbox
repository's debian-12-cloud (the debian-12 image, cloud-init from Debian's package) built with
`personalise = "cloud-init"`: no libguestfs appliance, a NoCloud seed (ISO 9660, label cidata)
attached read-only, ready once cloud-init prints its final line on the serial console.

One guest serves every check (a debian-12 boot under TCG costs a minute or more): it is built
with the user's key and `--user-data`; ready, it answers `mclu ssh NAME -- hostname` with its
name (mclu ssh checks it against the host keys mclu recorded), its seed is detached and gone,
the template's [customize] files and commands and the user's cloud-config were applied; then
it reboots (`mclu reboot`) as the same instance, then migrates and answers again.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mclu.hostpaths import SEED_SUFFIX
from tests.integration import sandbox as sb
from tests.integration.test_ssh import hostname_by_ssh, live_ipv4, recorded_host_keys, ssh_env

# Whichever test runs first also builds the module's guest: a debian-12 boot with cloud-init
# under TCG (see TEMPLATE), and the migration a live one of 384 MiB.
pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(1200)]

# Small but enough for systemd and cloud-init's Python under TCG. cloud-init runs four Python
# stages one after the other; under TCG on a loaded 2-core machine the first boot to its final
# line took 4 to 5 minutes in a plain qemu (mclu's default ready_timeout is 5).
TEMPLATE = """\
description = "debian-12 personalised by cloud-init (sandbox tests)"
base = "debian-12-cloud"
personalise = "cloud-init"
size = "2 GiB"
memory = "384 MiB"
vcpus = 1
disk_bus = "virtio"
ready_timeout = 720

[customize]
run = ["hostname > /root/from-template-run"]

[customize.files]
"/root/from-template-file" = "written by cloud-init from the template\\n"
"""
WRITTEN = "/root/from-user-data"
RAN = "/root/from-runcmd"
USER_DATA = f"""\
#cloud-config
write_files:
  - path: {WRITTEN}
    content: "written by cloud-init from --user-data\\n"
    permissions: "0600"
runcmd:
  - [sh, -c, "hostname > {RAN}"]
"""


@dataclass(frozen=True)
class CloudGuest:
    builds: sb.Guests
    name: str
    host: str
    env: dict[str, str]  # a HOME whose ssh config uses the key the guest was built with


@dataclass(frozen=True)
class CloudBuilds:
    builds: sb.Guests  # of the template debian-12-cloud (TEMPLATE)
    work: Path
    env: dict[str, str]  # as CloudGuest's


@pytest.fixture(scope="module")
def cloud_builds(
    sandbox: sb.Sandbox,
    repo: Path,
    cache_dir: Path,
    ssh_key: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CloudBuilds]:
    """Builds of debian-12-cloud; every guest made removed at the end, with its seed."""
    work = tmp_path_factory.mktemp("cloud")
    templates = work / "templates"
    templates.mkdir()
    (templates / "debian-12-cloud.toml").write_text(TEMPLATE)
    builds = sb.Guests(sandbox, ssh_key, cache_dir, templates=templates)
    try:
        yield CloudBuilds(builds, work, ssh_env(work, ssh_key))
    finally:
        builds.cleanup()
        seeds = [f"{sb.IMAGES}/{name}{SEED_SUFFIX}" for name in builds.names]
        for each in sandbox.up_hosts:
            sandbox.exec(each, ["rm", "-f", "--", *seeds], check=False)


@pytest.fixture(scope="module")
def cloud(sandbox: sb.Sandbox, cloud_builds: CloudBuilds) -> CloudGuest:
    """One debian-12-cloud guest, built to ready on the first up host, removed at the end."""
    user_data = cloud_builds.work / "user-data.yaml"
    user_data.write_text(USER_DATA)
    host, builds = sandbox.up_hosts[0], cloud_builds.builds
    name = builds.name()
    done = builds.build("debian-12-cloud", name, "--on", host, "--user-data", str(user_data))
    assert done.returncode == 0, done.stdout + done.stderr
    return CloudGuest(builds, name, host, cloud_builds.env)


def ssh(cloud: CloudGuest, command: str) -> str:
    done = cloud.builds.mclu("ssh", cloud.name, "--", command, env=cloud.env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_cloud_init_guest_is_ready_and_answers_ssh_with_the_keys_mclu_made(
    sandbox: sb.Sandbox, cloud: CloudGuest
) -> None:
    log = sb.console_log(sandbox, cloud.host, cloud.name)
    assert re.search(r"Cloud-init v\. \S+ finished at", log), log[-2000:]
    live_ipv4(cloud.builds, cloud.name)  # mclu ssh needs the address a live source knows
    # mclu ssh checks the guest against the host keys mclu recorded: it answering at all says
    # the guest presents one of them; the guest's own file says which.
    assert hostname_by_ssh(cloud.builds, cloud.name, cloud.env) == cloud.name
    recorded = recorded_host_keys(cloud.builds, cloud.host, cloud.name)
    presented = " ".join(ssh(cloud, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2])
    assert any(key.startswith(presented) for key in recorded), (presented, recorded)


def no_seed(builds: sb.Guests, host: str, name: str) -> None:
    """The guest's seed is out: the definition has no CD-ROM; the live domain keeps an empty
    drive (a SATA CD-ROM cannot be hot-unplugged: mclu ejects the medium), with no medium; no
    seed file is left on the host."""
    live = builds.virsh(host, "dumpxml", name)
    defined = builds.virsh(host, "dumpxml", "--inactive", name)
    assert "<domain" in live and "<domain" in defined
    assert SEED_SUFFIX not in live and SEED_SUFFIX not in defined
    assert "device='cdrom'" not in defined
    for drive in re.findall(r"<disk [^>]*device='cdrom'.*?</disk>", live, re.S):
        assert "<source file=" not in drive, drive
    assert not [f for f in builds.files(host) if f.endswith(SEED_SUFFIX)]


def test_the_seed_is_detached_and_removed_once_ready(cloud: CloudGuest) -> None:
    no_seed(cloud.builds, cloud.host, cloud.name)


def test_the_templates_customisation_and_the_users_cloud_config_are_applied(
    cloud: CloudGuest,
) -> None:
    # The template's [customize] files and commands, through the seed as cloud-init's.
    template_file = "/root/from-template-file"
    assert ssh(cloud, f"cat {template_file}") == "written by cloud-init from the template\n"
    assert ssh(cloud, "cat /root/from-template-run").strip() == cloud.name
    # The user's --user-data, merged after them.
    assert ssh(cloud, f"cat {WRITTEN}") == "written by cloud-init from --user-data\n"
    assert ssh(cloud, f"stat -c %a {WRITTEN}").strip() == "600"
    assert ssh(cloud, f"cat {RAN}").strip() == cloud.name  # runcmd ran with the name set


# What says which boot and which instance a guest is: the kernel's boot id, cloud-init's
# instance-id (a new one is a first boot again: per-instance modules, new host keys), the host
# key its sshd presents, and the template's run command's output (written once per instance).
IDENTITY = (
    "awk 'FNR == 1' /proc/sys/kernel/random/boot_id /var/lib/cloud/data/instance-id"
    " /etc/ssh/ssh_host_ed25519_key.pub && stat -c %Y /root/from-template-run"
)
REBOOT_SECONDS = 600  # a debian-12 boot under TCG on a loaded machine, and its shutdown


def identity(cloud: CloudGuest) -> list[str]:
    return ssh(cloud, IDENTITY).splitlines()


def booted_again(cloud: CloudGuest, boot_id: str) -> list[str]:
    """The guest's identity once it answers `mclu ssh` from a boot other than `boot_id`."""
    deadline = time.monotonic() + REBOOT_SECONDS
    last = ""
    while time.monotonic() < deadline:
        try:
            done = cloud.builds.mclu("ssh", cloud.name, "--", IDENTITY, env=cloud.env, timeout=60)
        except subprocess.TimeoutExpired:  # caught going down: its sshd still accepting
            continue
        last = done.stdout + done.stderr
        if done.returncode == 0 and done.stdout.split("\n", 1)[0] != boot_id:
            return done.stdout.splitlines()
        time.sleep(5)
    raise AssertionError(f"{cloud.name}: no new boot answered within {REBOOT_SECONDS} s: {last}")


def test_a_ready_cloud_init_guest_reboots_as_the_same_instance(
    sandbox: sb.Sandbox, cloud: CloudGuest
) -> None:
    """Its seed gone, a reboot is not a first boot again: the guest comes back named as
    built, answers `mclu ssh` (checked against the host keys mclu recorded), and cloud-init
    kept its instance: the same instance-id, host key and template's command's output."""
    before = identity(cloud)
    done = cloud.builds.mclu("reboot", cloud.name)
    assert done.returncode == 0, done.stderr
    after = booted_again(cloud, before[0])
    assert after[1:] == before[1:], (before, after)
    assert cloud.builds.state(cloud.host, cloud.name) == "running"
    assert hostname_by_ssh(cloud.builds, cloud.name, cloud.env) == cloud.name
    presented = " ".join(after[2].split()[:2])
    recorded = recorded_host_keys(cloud.builds, cloud.host, cloud.name)
    assert any(key.startswith(presented) for key in recorded), (presented, recorded)
    no_seed(cloud.builds, cloud.host, cloud.name)


def test_a_cloud_init_guest_migrates_and_answers_ssh_after(
    sandbox: sb.Sandbox, cloud: CloudGuest
) -> None:
    destination = sandbox.up_hosts[1]
    moved = cloud.builds.mclu("migrate", cloud.name, "--to", destination)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert cloud.builds.state(cloud.host, cloud.name) == "undefined"
    assert cloud.builds.state(destination, cloud.name) == "running"
    no_seed(cloud.builds, destination, cloud.name)
    live_ipv4(cloud.builds, cloud.name)
    assert hostname_by_ssh(cloud.builds, cloud.name, cloud.env) == cloud.name


def test_a_guest_still_holding_its_seed_migrates_with_it(
    sandbox: sb.Sandbox, cloud_builds: CloudBuilds
) -> None:
    """Built with --no-wait, the guest holds its seed (a read-only CD-ROM, which libvirt's
    storage migration does not copy) when it is moved at once: the move carries the seed to
    the same path on the destination and takes it off the source, and cloud-init, likely not
    yet at it when the guest left, finishes there from it. (Without the carrying, on this
    sandbox: the destination dropped the optional medium, the guest came up as the image's
    `debian` with the image's host keys, and the seed stayed on the source.)"""
    builds, env = cloud_builds.builds, cloud_builds.env
    source, destination = sandbox.up_hosts[0], sandbox.up_hosts[2]
    name = builds.name()
    seed = f"{sb.IMAGES}/{name}{SEED_SUFFIX}"
    done = builds.build("debian-12-cloud", name, "--on", source, "--no-wait")
    assert done.returncode == 0, done.stdout + done.stderr
    moved = builds.mclu("migrate", name, "--to", destination)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert builds.state(source, name) == "undefined"
    assert builds.state(destination, name) == "running"
    assert f"{name}{SEED_SUFFIX}" not in builds.files(source)
    assert f"<source file='{seed}'" in builds.virsh(destination, "dumpxml", name)
    assert sandbox.exec(destination, ["stat", "-c", "%a", seed]).stdout.strip() == "600"
    # The destination's console log starts with the move, before cloud-init has finished.
    log = sb.console_shows(sandbox, destination, name, " finished at ", seconds=720)
    # The line may still be being written (an emulated UART): read on until it ends.
    for _ in range(30):
        if re.search(r"Cloud-init v\. \S+ finished at [^\n]* seconds", log):
            break
        time.sleep(2)
        log = sb.console_log(sandbox, destination, name)
    assert re.search(r"Cloud-init v\. \S+ finished at [^\n]* DataSourceNoCloud", log), log[-2000:]
    live_ipv4(builds, name)
    assert hostname_by_ssh(builds, name, env) == name  # checked against the recorded keys
