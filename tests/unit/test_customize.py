"""The pure parts of disk personalisation: text edits, names and the first-boot unit."""

from __future__ import annotations

import pytest

from mclu import errors
from mclu.images import customize

DEBIAN_HOSTS = "127.0.0.1\tlocalhost\n127.0.1.1\ttemplate\n\n::1\tlocalhost ip6-localhost\n"


def test_hosts_line_is_replaced_in_place() -> None:
    assert customize.hosts_with_hostname(DEBIAN_HOSTS, "web1") == (
        "127.0.0.1\tlocalhost\n127.0.1.1\tweb1\n\n::1\tlocalhost ip6-localhost\n")


def test_hosts_line_names_fqdn_and_short_name() -> None:
    text = customize.hosts_with_hostname(DEBIAN_HOSTS, "web1.example.org")
    assert "127.0.1.1\tweb1.example.org web1\n" in text


def test_hosts_line_is_added_after_localhost_and_duplicates_go() -> None:
    hosts = "# comment\n127.0.0.1 localhost\n10.0.0.1 gw\n"
    assert customize.hosts_with_hostname(hosts, "db") == (
        "# comment\n127.0.0.1 localhost\n127.0.1.1\tdb\n10.0.0.1 gw\n")
    twice = "127.0.1.1 a\n127.0.0.1 localhost\n127.0.1.1 b\n"
    assert customize.hosts_with_hostname(twice, "c") == "127.0.0.1 localhost\n127.0.1.1\tc\n"
    assert customize.hosts_with_hostname("", "c") == "127.0.1.1\tc\n"


@pytest.mark.parametrize("name", ["web1", "a", "web-1.example.org", "x" * 63])
def test_valid_hostnames(name: str) -> None:
    customize.check_hostname(name)


@pytest.mark.parametrize("name", ["", "-web", "web-", "we_b", "a..b", "x" * 64, "a b", "a\nb"])
def test_invalid_hostnames(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid host name"):
        customize.check_hostname(name)


SHADOW = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


def test_shadow_root_line_gets_hash_and_date() -> None:
    edited = customize.shadow_with_root_password(SHADOW, "$6$salt$hash", 20000)
    assert edited == "root:$6$salt$hash:20000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


def test_shadow_without_root_or_with_a_bad_hash_is_refused() -> None:
    with pytest.raises(ValueError, match="no root line"):
        customize.shadow_with_root_password("daemon:*:1:0:99999:7:::\n", "$6$s$h", 1)
    with pytest.raises(ValueError, match="crypt"):
        customize.shadow_with_root_password(SHADOW, "$6$s$h:x", 1)
    with pytest.raises(ValueError, match="crypt"):
        customize.shadow_with_root_password(SHADOW, "plaintext", 1)


def test_authorized_keys_keep_existing_and_skip_duplicates() -> None:
    existing = "ssh-ed25519 AAAA old@x\n"
    merged = customize.authorized_keys_with(existing, ["ssh-rsa BBBB new@y",
                                                       "ssh-ed25519 AAAA old@x "])
    assert merged == "ssh-ed25519 AAAA old@x\nssh-rsa BBBB new@y\n"
    assert customize.authorized_keys_with("", ["k1", "k1"]) == "k1\n"
    assert customize.authorized_keys_with("", []) == ""


def test_root_home_from_passwd() -> None:
    assert customize.root_home("root:x:0:0:root:/var/root:/bin/sh\n") == "/var/root"
    assert customize.root_home("daemon:x:1:1::/usr/sbin:/bin/false\n") == "/root"


def test_partitions_and_disks() -> None:
    assert customize.partition_number("/dev/sda1") == 1
    assert customize.partition_number("/dev/vda12") == 12
    with pytest.raises(ValueError, match="does not name a partition"):
        customize.partition_number("/dev/sda")
    assert customize.disk_of("/dev/sdab3") == "/dev/sdab"
    assert customize.disk_of("/dev/mapper/vg-root") is None


def test_devices_move_onto_the_roots_disk() -> None:
    # Copies of one base share UUIDs: fstab's UUID= of disk b resolves to disk a.
    assert customize.on_disk_of("/dev/sda2", "/dev/sdb1") == "/dev/sdb2"
    assert customize.on_disk_of("/dev/sdb2", "/dev/sdb1") == "/dev/sdb2"
    assert customize.on_disk_of("/dev/vg/home", "/dev/sdb1") == "/dev/vg/home"


def test_mount_order_is_parents_first() -> None:
    points = {"/boot/efi": "/dev/sda1", "/": "/dev/sda3", "/boot": "/dev/sda2"}
    assert [m for m, _ in customize.mount_order(points)] == ["/", "/boot", "/boot/efi"]


def test_install_command_quotes_packages() -> None:
    command = customize.install_command("apt", ["curl", "vim; rm -rf /"])
    assert command.endswith("--no-install-recommends curl 'vim; rm -rf /'")
    assert customize.install_command("dnf", ["htop"]) == "dnf -y install htop"
    with pytest.raises(ValueError, match="no supported package manager"):
        customize.install_command("unknown", ["x"])


def test_firstboot_unit_runs_once_and_is_wanted_by_multi_user() -> None:
    unit = customize.firstboot_unit()
    assert "Type=oneshot" in unit
    assert f"ExecStart=/bin/sh {customize.FIRSTBOOT_DIR}/run.sh" in unit
    assert "WantedBy=multi-user.target" in unit
    runner = customize.firstboot_runner()
    assert runner.startswith("#!/bin/sh\n")
    assert "rm -f /etc/systemd/system/multi-user.target.wants/mclu-firstboot.service" in runner
    assert 'mv "$script" "$dir/done/$name"' in runner


def test_drive_needs_exactly_one_source() -> None:
    assert customize.Drive(nbd_socket="/run/x.sock").label == "nbd:/run/x.sock"
    assert customize.Drive(path="/tmp/a.qcow2", format="qcow2").label == "/tmp/a.qcow2"
    with pytest.raises(ValueError, match="exactly one"):
        customize.Drive()
    with pytest.raises(ValueError, match="exactly one"):
        customize.Drive(nbd_socket="/s", path="/p")


def test_bad_request_fails_before_any_launch() -> None:
    person = customize.Personalization("bad_name")
    with pytest.raises(errors.PersonalizationFailed) as caught:
        customize.personalize([("/nonexistent.sock", person)])
    assert caught.value.step == "check the request"
    assert caught.value.drive == "nbd:/nonexistent.sock"
    assert "bad_name" in str(caught.value)


def test_unreadable_password_file_fails_before_any_launch() -> None:
    person = customize.Personalization("web1", root_password_file="/nonexistent/pw")
    with pytest.raises(errors.PersonalizationFailed, match="root password"):
        customize.personalize([("/nonexistent.sock", person)])


def test_error_message_keeps_the_last_lines() -> None:
    error = errors.PersonalizationFailed("web1", "run command 1 (false)", "a\n\nb\nc\nd\n")
    assert str(error) == "web1: personalising the disk failed at run command 1 (false): b / c / d"


def test_nothing_to_do_without_drives() -> None:
    customize.personalize([])
