"""cloud-init personalisation: the NoCloud seed's content (read back from the ISO as a guest
would see it), the user's --user-data checked and merged, the seed's CD-ROM in the domain XML,
and the readiness rule on recorded console text."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from mclu import errors, hostpaths, model
from mclu.config import catalogue
from mclu.decide import cloudinit, domxml, readiness
from mclu.images import seed
from mclu.read import storage

# cloud-init 22.4's final message as Debian 12 prints it on the serial console, and the same
# line as journald forwards it (prefixed), in a console log with control sequences.
FINISHED = (
    "Cloud-init v. 22.4.2 finished at Sun, 29 Nov 2026 12:00:00 +0000. Datasource "
    "DataSourceNoCloud [seed=/dev/sr0][dsmode=net].  Up 45.10 seconds"
)
CONSOLE = (
    "[   12.3] cloud-init[512]: Cloud-init v. 22.4.2 running 'modules:final' at Sun, 29 Nov "
    "2026 11:59:58 +0000. Up 43.2 seconds.\r\n"
    "\x1b[0;32m  OK  \x1b[0m] Finished Execute cloud user/final scripts.\r\n"
    f"[   45.1] cloud-init[512]: {FINISHED}\r\n"
    "\r\nDebian GNU/Linux 12 web1 ttyS0\r\n\r\nweb1 login: "
)
KEYS = (
    cloudinit.HostKey("rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\nRSA\n", "ssh-rsa AAAr root@w"),
    cloudinit.HostKey(
        "ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nED\n", "ssh-ed25519 AAAe root@w\n"
    ),
)


def a_seed(**changes: Any) -> cloudinit.Seed:
    fields: dict[str, Any] = {
        "hostname": "web1",
        "instance_id": "0b6e7c2a-1f4e-4a57-9a8e-2f0c5d1e9b11",
        "authorized_keys": ("ssh-ed25519 AAAA user@ctl",),
        "password_hash": "$6$salt$hash",
        "host_keys": KEYS,
        "customization": model.Customization(
            packages=("curl",),
            files=(("/etc/motd", "hello\nworld\n"),),
            run=("echo built",),
            firstboot=("echo first",),
        ),
        **changes,
    }
    return cloudinit.Seed(**fields)


def user_config(made: cloudinit.Seed) -> dict[str, Any]:
    text = cloudinit.user_data(made)
    assert text.startswith("#cloud-config\n")
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


# --- the seed, read back from its ISO ------------------------------------------------------------


def test_the_iso_is_labelled_cidata_and_holds_meta_data_and_user_data() -> None:
    label, files = seed.read_iso(seed.iso_bytes(a_seed()))
    assert label == "cidata"
    assert set(files) == {"meta-data", "user-data"}
    assert yaml.safe_load(files["meta-data"]) == {
        "instance-id": "0b6e7c2a-1f4e-4a57-9a8e-2f0c5d1e9b11",
        "local-hostname": "web1",
    }
    assert files["user-data"].startswith("#cloud-config\n")
    assert yaml.safe_load(files["user-data"]) == user_config(a_seed())


def test_user_data_names_the_guest_gives_roots_keys_password_and_the_host_keys() -> None:
    config = user_config(a_seed())
    assert config["hostname"] == "web1" and config["preserve_hostname"] is False
    assert config["disable_root"] is False  # root's keys without cloud-init's refusal prefix
    assert config["ssh_authorized_keys"] == ["ssh-ed25519 AAAA user@ctl"]
    assert config["chpasswd"] == {
        "expire": False,
        "users": [{"name": "root", "password": "$6$salt$hash", "type": "hash"}],
    }
    assert config["ssh_deletekeys"] is True and "ssh_genkeytypes" not in config
    assert config["ssh"] == {"emit_keys_to_console": False}  # mclu records them itself
    assert config["ssh_keys"] == {
        "rsa_private": KEYS[0].private,
        "rsa_public": KEYS[0].public,
        "ed25519_private": KEYS[1].private,
        "ed25519_public": KEYS[1].public,
    }


def test_user_data_carries_the_templates_packages_files_and_commands() -> None:
    config = user_config(a_seed())
    assert config["packages"] == ["curl"]
    assert config["write_files"] == [{"path": "/etc/motd", "content": "hello\nworld\n"}]
    assert config["runcmd"] == ["echo built", "echo first"]


def test_without_password_keys_or_customisation_those_keys_are_left_out() -> None:
    config = user_config(
        a_seed(
            authorized_keys=(),
            password_hash=None,
            host_keys=(),
            customization=model.Customization(),
        )
    )
    assert set(config) == {"hostname", "preserve_hostname", "manage_etc_hosts", "disable_root"}


def test_the_recorded_host_keys_are_the_public_halves_without_comments() -> None:
    assert cloudinit.public_host_keys(KEYS) == ("ssh-ed25519 AAAe", "ssh-rsa AAAr")


def test_real_host_keys_and_password_hash_are_made_here() -> None:
    keys = seed.host_keys("web1")
    assert sorted(k.kind for k in keys) == ["ecdsa", "ed25519", "rsa"]
    for key in keys:
        assert key.private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert key.public.endswith("root@web1\n")
    assert len(cloudinit.public_host_keys(keys)) == 3


def test_a_password_hash_from_the_first_line_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret\nignored\n")
    assert seed.password_hash(str(path), "web1").startswith("$6$")
    path.write_text("\n")
    with pytest.raises(errors.PersonalizationFailed, match="is empty"):
        seed.password_hash(str(path), "web1")


# --- the user's own cloud-config ---------------------------------------------------------------


def test_the_users_cloud_config_is_merged_lists_appended_tables_merged() -> None:
    mine = cloudinit.parse_user_data(
        "#cloud-config\npackages: [htop]\nruncmd: [echo mine]\ntimezone: Europe/Paris\n"
        "chpasswd: {expire: true}\nssh_authorized_keys: [ssh-ed25519 BBBB other]\n",
        "mine.yaml",
    )
    config = user_config(a_seed(user_data=mine))
    assert config["packages"] == ["curl", "htop"]
    assert config["runcmd"] == ["echo built", "echo first", "echo mine"]
    assert config["timezone"] == "Europe/Paris"
    assert config["chpasswd"]["expire"] is True and config["chpasswd"]["users"]
    assert config["ssh_authorized_keys"] == ["ssh-ed25519 AAAA user@ctl", "ssh-ed25519 BBBB other"]
    assert config["hostname"] == "web1"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("packages: [htop]\n", "not cloud-config (its first line must be #cloud-config"),
        ("#!/bin/sh\necho hi\n", "not cloud-config"),
        ("#cloud-config\npackages: [htop\n", "not valid YAML at line"),
        ("#cloud-config\n- a\n- b\n", "not a table of cloud-config keys"),
        ("#cloud-config\nhostname: other\n", "sets hostname, which mclu sets itself"),
        ("#cloud-config\nssh_keys: {}\n", "sets ssh_keys, which mclu sets itself"),
        ("#cloud-config\ndisable_root: true\n", "sets disable_root, which mclu sets itself"),
        ("#cloud-config\npackages: htop\n", "packages is not a list"),
        ("#cloud-config\nruncmd: echo hi\n", "runcmd is not a list"),
        ("#cloud-config\nssh_authorized_keys: ssh-ed25519 X\n", "ssh_authorized_keys is not"),
        ("#cloud-config\nchpasswd: root:secret\n", "chpasswd is not a table"),
        ("#cloud-config\nchpasswd: {users: root}\n", "chpasswd's users is not a list"),
    ],
)
def test_user_data_that_cannot_be_merged_is_refused_naming_the_file(
    text: str, problem: str
) -> None:
    with pytest.raises(errors.UsageError) as raised:
        cloudinit.parse_user_data(text, "mine.yaml")
    assert str(raised.value).startswith("--user-data mine.yaml: ")
    assert problem in str(raised.value)


def test_a_users_chpasswd_users_come_after_roots_hash() -> None:
    mine = cloudinit.parse_user_data(
        "#cloud-config\nchpasswd: {users: [{name: alice, password: x, type: text}]}\n",
        "mine.yaml",
    )
    users = user_config(a_seed(user_data=mine))["chpasswd"]["users"]
    assert [u["name"] for u in users] == ["root", "alice"]
    assert users[0]["password"].startswith("$6$")


def test_a_user_can_have_the_host_keys_printed_on_the_console_again() -> None:
    mine = cloudinit.parse_user_data("#cloud-config\nssh: {emit_keys_to_console: true}\n", "m")
    assert user_config(a_seed(user_data=mine))["ssh"] == {"emit_keys_to_console": True}


def test_an_empty_cloud_config_adds_nothing() -> None:
    assert cloudinit.parse_user_data("#cloud-config\n", "e.yaml") == {}


# --- readiness: cloud-init's final message ------------------------------------------------------


def test_the_finished_rule_matches_cloud_init_22_4s_final_line() -> None:
    assert readiness.console_matches(cloudinit.FINISHED, FINISHED)
    assert readiness.console_matches(cloudinit.FINISHED, CONSOLE)
    assert str(cloudinit.FINISHED) == r"console:Cloud-init v\. \S+ finished at"
    assert readiness.parse(str(cloudinit.FINISHED)) == cloudinit.FINISHED


def test_the_finished_rule_waits_past_cloud_inits_earlier_lines() -> None:
    earlier = CONSOLE.split(FINISHED)[0].replace("[   45.1] cloud-init[512]: ", "")
    assert not readiness.console_matches(cloudinit.FINISHED, earlier)


def test_a_guest_ready_by_cloud_init_is_waited_for_as_started_when_it_boots_again() -> None:
    assert cloudinit.again(cloudinit.FINISHED) == readiness.STARTED
    assert cloudinit.again(readiness.SSH) == readiness.SSH


def test_rules_are_cloud_init_finished_then_the_templates_own() -> None:
    assert cloudinit.rules(None) == (cloudinit.FINISHED,)
    assert cloudinit.rules("ssh") == (cloudinit.FINISHED, readiness.SSH)
    assert cloudinit.rules(str(cloudinit.FINISHED)) == (cloudinit.FINISHED,)


# --- the seed's CD-ROM in the domain XML ---------------------------------------------------------


def spec(**changes: Any) -> model.GuestSpec:
    return model.GuestSpec(
        name="web1",
        domain_type="qemu",
        memory=256 << 20,
        vcpus=1,
        disk_path="/var/lib/libvirt/images/web1.qcow2",
        meta=model.GuestMeta(template="cloudy"),
        **changes,
    )


def test_a_seed_is_a_read_only_sata_cdrom_after_the_system_disk() -> None:
    seed_path = hostpaths.seed_path("/var/lib/libvirt/images", "web1")
    assert seed_path == "/var/lib/libvirt/images/web1.mclu-seed.iso"
    root = ET.fromstring(domxml.render(spec(seed=seed_path)))
    disks = root.findall("devices/disk")
    assert [d.get("device") for d in disks] == ["disk", "cdrom"]
    cdrom = disks[1]
    assert cdrom.find("source").get("file") == seed_path  # type: ignore[union-attr]
    assert cdrom.find("target").attrib == {"dev": "sdb", "bus": "sata"}  # type: ignore[union-attr]
    assert cdrom.find("readonly") is not None
    assert cdrom.find("driver").attrib == {"name": "qemu", "type": "raw"}  # type: ignore[union-attr]


def test_no_seed_no_cdrom() -> None:
    root = ET.fromstring(domxml.render(spec()))
    assert [d.get("device") for d in root.findall("devices/disk")] == ["disk"]


def test_the_cdrom_device_xml_with_and_without_its_medium() -> None:
    full = ET.fromstring(domxml.cdrom("/i/web1.mclu-seed.iso"))
    empty = ET.fromstring(domxml.cdrom(None))
    assert full.find("source").get("file") == "/i/web1.mclu-seed.iso"  # type: ignore[union-attr]
    assert empty.find("source") is None
    assert empty.find("target").get("dev") == "sdb"  # type: ignore[union-attr]


def test_the_domain_reads_back_with_its_seed_as_a_cdrom_not_a_disk() -> None:
    from mclu.read import facts

    seed_path = "/var/lib/libvirt/images/web1.mclu-seed.iso"
    guest = facts.parse_guest(
        domxml.render(spec(seed=seed_path)), model.GuestState.SHUTOFF, persistent=True
    )
    assert guest.disks == ("/var/lib/libvirt/images/web1.qcow2",)
    assert guest.cdroms == (seed_path,)


# --- templates, and the seed's name on the host ---------------------------------------------------


def test_a_template_says_personalise_cloud_init() -> None:
    parsed = catalogue.parse("cloudy", 'base = "tiny"\npersonalise = "cloud-init"\n', "c.toml")
    assert parsed.personalise == "cloud-init"
    assert catalogue.parse("t", 'base = "tiny"\n', "t.toml").personalise == "libguestfs"


def test_an_unknown_personaliser_is_refused_naming_the_key() -> None:
    with pytest.raises(errors.ConfigError) as raised:
        catalogue.parse("cloudy", 'base = "tiny"\npersonalise = "ignition"\n', "c.toml")
    assert "personalise" in str(raised.value)
    assert "must be 'libguestfs' or 'cloud-init', got 'ignition'" in str(raised.value)


def test_a_seed_names_its_guest_for_cleanup() -> None:
    assert storage.owner_of("/var/lib/libvirt/images/web1.mclu-seed.iso") == "web1"
    assert hostpaths.seed_owner("/i/web1.mclu-seed.iso") == "web1"
    assert hostpaths.seed_owner("/i/web1.qcow2") is None
