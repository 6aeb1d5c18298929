"""Pure rendering of the sandbox's names, addresses and config files."""

from __future__ import annotations

import tomllib
import uuid
from pathlib import Path

import pytest

from mclu.sandbox import config
from mclu.sandbox.config import HostSpec

STATE = config.DEFAULT_STATE_DIR


def test_host_spec_derives_names_and_addresses() -> None:
    host = HostSpec(3)
    assert host.name == "ham3"
    assert host.address == f"{config.SUBNET}.13"
    assert host.netns == f"{config.NETNS_PREFIX}ham3"
    assert host.veth == f"{config.VETH_PREFIX}ham3"
    assert len(host.veth) <= 15  # IFNAMSIZ
    assert host.mac == f"{config.MAC_PREFIX}:00:03"
    assert HostSpec(0).mac == f"{config.MAC_PREFIX}:00:00"
    assert HostSpec(16).address == f"{config.SUBNET}.26"


def test_host_uuids_are_distinct_and_stable() -> None:
    uuids = {h.host_uuid for h in config.host_specs(50)}
    assert len(uuids) == 50
    assert HostSpec(1).host_uuid == HostSpec(1).host_uuid
    uuid.UUID(HostSpec(1).host_uuid)  # well formed


def test_longest_veth_name_fits() -> None:
    assert len(HostSpec(config.MAX_HOSTS - 1).veth) <= 15


@pytest.mark.parametrize("count", [0, -1, config.MAX_HOSTS + 1])
def test_host_specs_rejects_bad_counts(count: int) -> None:
    with pytest.raises(ValueError, match="host count"):
        config.host_specs(count)


def test_parse_host_name() -> None:
    assert config.parse_host_name("ham0") == HostSpec(0)
    assert config.parse_host_name("ham16") == HostSpec(16)
    assert config.parse_host_name(f"{config.SUBNET}.12") == HostSpec(2)
    for bad in ("ham", "ham01", "host1", "ham-1", f"{config.SUBNET}.5", "ham999"):
        with pytest.raises(ValueError, match="not a sandbox host"):
            config.parse_host_name(bad)


def test_edit_conf_comments_out_active_keys_and_appends() -> None:
    text = '#host_uuid = "x"\nuser = "qemu"\nother = 1\n'
    out = config.edit_conf(text, {"user": '"root"', "host_uuid": '"u"'})
    lines = out.splitlines()
    assert '#host_uuid = "x"' in lines
    assert '#user = "qemu"' in lines
    assert "other = 1" in lines
    assert lines[-4:] == [
        "# BEGIN mclu-sandbox",
        'user = "root"',
        'host_uuid = "u"',
        "# END mclu-sandbox",
    ]
    active = [ln for ln in lines if ln.startswith("user")]
    assert active == ['user = "root"']


def test_edit_conf_comments_out_multiline_lists() -> None:
    text = 'cgroup_controllers = [ "cpu",\n   "memory" ]\nkeep = 2\n'
    out = config.edit_conf(text, {"cgroup_controllers": "[ ]"})
    assert '#cgroup_controllers = [ "cpu",' in out
    assert '#   "memory" ]' in out
    assert "\nkeep = 2\n" in out
    assert out.rstrip().endswith("cgroup_controllers = [ ]\n# END mclu-sandbox")


def test_edit_conf_is_idempotent() -> None:
    text = 'a = 1\n# comment\nb = "x"\n'
    settings = {"a": "2", "c": '"y"'}
    once = config.edit_conf(text, settings)
    assert config.edit_conf(once, settings) == once


def test_libvirtd_and_qemu_settings() -> None:
    host = HostSpec(2)
    lv = config.libvirtd_settings(host)
    assert lv["host_uuid"] == f'"{host.host_uuid}"'
    assert lv["auth_unix_rw"] == '"none"'
    qemu = config.qemu_settings(host)
    assert qemu["cgroup_controllers"] == "[ ]"
    assert qemu["security_driver"] == '"none"'
    assert qemu["user"] == qemu["group"] == '"root"'
    assert qemu["migration_address"] == qemu["migration_host"] == f'"{config.SUBNET}.12"'


def test_sshd_config() -> None:
    key = STATE / "hosts/ham1/ssh_host_ed25519_key"
    lines = config.render_sshd_config(HostSpec(1), key).splitlines()
    for expected in (
        f"ListenAddress {config.SUBNET}.11",
        f"HostKey {key}",
        "UsePAM no",
        "PidFile /run/sshd.pid",
        "MaxStartups 100",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
    ):
        assert expected in lines


def test_etc_hosts_lists_every_host() -> None:
    text = config.render_etc_hosts(config.host_specs(4))
    assert "127.0.0.1\tlocalhost" in text
    for i in range(4):
        assert f"{config.SUBNET}.{10 + i}\tham{i}\n" in text


def test_known_hosts_by_name_and_address() -> None:
    text = config.render_known_hosts([(HostSpec(0), "ssh-ed25519 AAAAkey root@ham0")])
    assert text == f"ham0,{config.SUBNET}.10 ssh-ed25519 AAAAkey\n"


def test_client_ssh_config() -> None:
    text = config.render_client_ssh_config(STATE, config.host_specs(2))
    assert f"Host ham1\n    HostName {config.SUBNET}.11\n" in text
    assert f"Host {config.SUBNET}.* ham*\n" in text
    for expected in (
        "User root",
        f"IdentityFile {STATE}/client/id_ed25519",
        "IdentitiesOnly yes",
        f"UserKnownHostsFile {STATE}/client/known_hosts",
        "StrictHostKeyChecking yes",
    ):
        assert f"    {expected}\n" in text


def test_inventory_is_valid_toml_with_spare_host() -> None:
    hosts = config.host_specs(4)
    text = config.render_inventory(STATE, hosts[:3], hosts[3])
    assert text.startswith("# Written by mclu-sandbox: the sandbox's hosts.")
    inv = tomllib.loads(text)
    assert inv["parallel"] == 50
    d = inv["defaults"]
    assert d["user"] == "root"
    assert d["domain_type"] == "qemu"
    assert d["image_dir"] == "/var/lib/libvirt/images"
    assert d["identity_file"] == f"{STATE}/client/id_ed25519"
    assert d["known_hosts"] == f"{STATE}/client/known_hosts"
    assert d["ssh_config"] == "none"
    assert d["power_off_command"] == ["poweroff"]
    assert d["cpus"] == 2
    assert d["memory"] == "4 GiB"
    assert list(inv["hosts"]) == ["ham0", "ham1", "ham2", "ham3"]
    assert inv["hosts"]["ham3"] == {
        "address": f"{config.SUBNET}.13",
        "mac": f"{config.MAC_PREFIX}:00:03",
        "tags": ["sandbox"],
    }


def test_env_exports() -> None:
    text = config.render_env(Path("/tmp/sb"))
    assert "export MCLU_CONFIG=/tmp/sb/hosts.toml\n" in text
    assert "export MCLU_SANDBOX_DIR=/tmp/sb\n" in text
