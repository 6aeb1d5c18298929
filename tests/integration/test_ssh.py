"""`mclu ssh` and `mclu ssh-config` on the sandbox (issue 12, part 4): a debian-12 guest
(sshd, DHCP) bridged on the sandbox LAN answers `mclu ssh NAME -- hostname` with its name,
checked against exactly the host keys mclu made for it; plain OpenSSH reads `mclu ssh-config`
(KnownHostsCommand); the exit status is the remote command's; once the guest's host keys are
replaced, ssh refuses it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration import sandbox as sb

pytestmark = pytest.mark.sandbox


def test_ssh_checks_the_guest_against_the_keys_mclu_made(
    sandbox: sb.Sandbox, builds: sb.Guests, ssh_key: Path, tmp_path: Path
) -> None:
    host = sandbox.up_hosts[0]
    # Ready by ssh: its sshd, asked from its host, presents a key mclu gave it.
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "debian-12.toml").write_text(
        'ready = "ssh"\n' + (Path(__file__).parents[2] / "templates" / "debian-12.toml").read_text()
    )
    name = builds.name()
    done = builds.build("debian-12", name, "--on", host, templates=templates)
    assert done.returncode == 0, done.stderr
    assert "by ssh)" in done.stdout
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    own = f"IdentityFile {ssh_key.with_suffix('')}\nIdentitiesOnly yes\nBatchMode yes\n"
    (home / ".ssh" / "config").write_text(own)
    env = {"HOME": str(home)}

    done = builds.mclu("ssh", name, "--", "hostname", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == name
    assert builds.mclu("ssh", name, "--", "exit 3", env=env).returncode == 3

    printed = builds.mclu("ssh-config", name, env=env)
    assert printed.returncode == 0, printed.stderr
    config = tmp_path / "config"
    config.write_text(f"{printed.stdout}\nHost *\n{own}")
    plain = subprocess.run(
        ["ssh", "-F", str(config), name, "hostname"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(home)},
    )
    assert plain.stdout.strip() == name, plain.stderr

    replace = "rm -f /etc/ssh/ssh_host_*; ssh-keygen -A; systemctl reload ssh"
    assert builds.mclu("ssh", name, "--", replace, env=env).returncode == 0
    refused = builds.mclu("ssh", name, "--", "hostname", env=env)
    assert refused.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    assert name not in refused.stdout
