"""The pure parts of disk personalisation: text edits, names, the first-boot unit, the light
inspection's fstab and os-release readers and its root choice (against a fake handle), and the
watchdog that bounds the appliance (against a stand-in process)."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from mclu import errors
from mclu.images import customize, guest_text, guestfs_edit, guestfs_inspect

DEBIAN_HOSTS = "127.0.0.1\tlocalhost\n127.0.1.1\ttemplate\n\n::1\tlocalhost ip6-localhost\n"


def test_hosts_line_is_replaced_in_place() -> None:
    assert guest_text.hosts_with_hostname(DEBIAN_HOSTS, "web1") == (
        "127.0.0.1\tlocalhost\n127.0.1.1\tweb1\n\n::1\tlocalhost ip6-localhost\n"
    )


def test_hosts_line_names_fqdn_and_short_name() -> None:
    text = guest_text.hosts_with_hostname(DEBIAN_HOSTS, "web1.example.org")
    assert "127.0.1.1\tweb1.example.org web1\n" in text


def test_hosts_line_is_added_after_localhost_and_duplicates_go() -> None:
    hosts = "# comment\n127.0.0.1 localhost\n10.0.0.1 gw\n"
    assert guest_text.hosts_with_hostname(hosts, "db") == (
        "# comment\n127.0.0.1 localhost\n127.0.1.1\tdb\n10.0.0.1 gw\n"
    )
    twice = "127.0.1.1 a\n127.0.0.1 localhost\n127.0.1.1 b\n"
    assert guest_text.hosts_with_hostname(twice, "c") == "127.0.0.1 localhost\n127.0.1.1\tc\n"
    assert guest_text.hosts_with_hostname("", "c") == "127.0.1.1\tc\n"


@pytest.mark.parametrize("name", ["web1", "a", "web-1.example.org", "x" * 63])
def test_valid_hostnames(name: str) -> None:
    guest_text.check_hostname(name)


@pytest.mark.parametrize("name", ["", "-web", "web-", "we_b", "a..b", "x" * 64, "a b", "a\nb"])
def test_invalid_hostnames(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid host name"):
        guest_text.check_hostname(name)


SHADOW = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


def test_shadow_root_line_gets_hash_and_date() -> None:
    edited = guest_text.shadow_with_root_password(SHADOW, "$6$salt$hash", 20000)
    assert edited == "root:$6$salt$hash:20000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


def test_shadow_without_root_or_with_a_bad_hash_is_refused() -> None:
    with pytest.raises(ValueError, match="no root line"):
        guest_text.shadow_with_root_password("daemon:*:1:0:99999:7:::\n", "$6$s$h", 1)
    with pytest.raises(ValueError, match="crypt"):
        guest_text.shadow_with_root_password(SHADOW, "$6$s$h:x", 1)
    with pytest.raises(ValueError, match="crypt"):
        guest_text.shadow_with_root_password(SHADOW, "plaintext", 1)


def test_authorized_keys_keep_existing_and_skip_duplicates() -> None:
    existing = "ssh-ed25519 AAAA old@x\n"
    merged = guest_text.authorized_keys_with(
        existing, ["ssh-rsa BBBB new@y", "ssh-ed25519 AAAA old@x "]
    )
    assert merged == "ssh-ed25519 AAAA old@x\nssh-rsa BBBB new@y\n"
    assert guest_text.authorized_keys_with("", ["k1", "k1"]) == "k1\n"
    assert guest_text.authorized_keys_with("", []) == ""


def test_public_host_keys_are_the_pub_files_without_comments() -> None:
    keys_dir = Path(__file__).parent.parent / "data" / "hostkeys"
    files = {p.name: p.read_bytes() for p in keys_dir.iterdir()}
    files["ssh_host_ed25519_key"] = b"-----BEGIN OPENSSH PRIVATE KEY-----\n..."  # not recorded
    keys = guest_text.public_host_keys(files)
    assert [k.split()[0] for k in keys] == ["ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"]
    assert all(len(k.split()) == 2 for k in keys)
    ed25519 = (keys_dir / "ssh_host_ed25519_key.pub").read_text().split()
    assert keys[1] == f"{ed25519[0]} {ed25519[1]}"


class _Etc:
    """Just enough of a libguestfs handle for replace_host_keys: which directories exist."""

    def __init__(self, *dirs: str) -> None:
        self.dirs = set(dirs)
        self.written: list[str] = []

    def is_dir(self, path: str) -> bool:
        return path in self.dirs

    def glob_expand(self, pattern: str) -> list[str]:
        return []

    def write(self, path: str, content: bytes) -> None:
        self.written.append(path)

    def chown(self, *args: object) -> None:
        pass

    def chmod(self, *args: object) -> None:
        pass


def test_host_keys_are_said_written_only_where_the_guest_has_etc_ssh() -> None:
    # A guest without /etc/ssh (a busybox image) gets no keys, and none are recorded for it.
    keys = {"ssh_host_ed25519_key": b"private", "ssh_host_ed25519_key.pub": b"ssh-ed25519 AAAA"}
    bare = _Etc("/etc")
    assert guestfs_edit.replace_host_keys(cast(Any, bare), keys) is False
    assert bare.written == []
    with_ssh = _Etc("/etc", "/etc/ssh")
    assert guestfs_edit.replace_host_keys(cast(Any, with_ssh), keys) is True
    assert with_ssh.written == [
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssh/ssh_host_ed25519_key.pub",
    ]


class _Files:
    """Just enough of a libguestfs handle for read_traits: which files exist."""

    def __init__(self, *files: str) -> None:
        self.files = set(files)

    def is_file(self, path: str, followsymlinks: bool = False) -> bool:
        return path in self.files

    def exists(self, path: str) -> bool:
        return path in self.files

    def cat(self, path: str) -> str:
        return ""


@pytest.mark.parametrize(
    ("files", "server"),
    [
        (("/usr/sbin/sshd",), "sshd"),
        (("/usr/sbin/dropbear", "/usr/lib/dropbear/dropbearconvert"), "dropbear"),
        (("/sbin/dropbear",), "dropbear"),
        (("/usr/bin/dropbearkey", "/usr/bin/ssh"), ""),  # tools and a client: no server
        ((), ""),
    ],
)
def test_the_ssh_server_in_the_disk_is_found(files: tuple[str, ...], server: str) -> None:
    traits = guestfs_edit.read_traits(cast(Any, _Files(*files)))
    assert traits.ssh_server == server


def test_root_home_from_passwd() -> None:
    assert guest_text.root_home("root:x:0:0:root:/var/root:/bin/sh\n") == "/var/root"
    assert guest_text.root_home("daemon:x:1:1::/usr/sbin:/bin/false\n") == "/root"


def test_partitions_and_disks() -> None:
    assert guest_text.partition_number("/dev/sda1") == 1
    assert guest_text.partition_number("/dev/vda12") == 12
    with pytest.raises(ValueError, match="does not name a partition"):
        guest_text.partition_number("/dev/sda")
    assert guest_text.disk_of("/dev/sdab3") == "/dev/sdab"
    assert guest_text.disk_of("/dev/mapper/vg-root") is None


def test_devices_move_onto_the_roots_disk() -> None:
    # Copies of one base share UUIDs: fstab's UUID= of disk b resolves to disk a.
    assert guest_text.on_disk_of("/dev/sda2", "/dev/sdb1") == "/dev/sdb2"
    assert guest_text.on_disk_of("/dev/sdb2", "/dev/sdb1") == "/dev/sdb2"
    assert guest_text.on_disk_of("/dev/vg/home", "/dev/sdb1") == "/dev/vg/home"


def test_mount_order_is_parents_first() -> None:
    points = {"/boot/efi": "/dev/sda1", "/": "/dev/sda3", "/boot": "/dev/sda2"}
    assert [m for m, _ in guest_text.mount_order(points)] == ["/", "/boot", "/boot/efi"]


def test_install_command_quotes_packages() -> None:
    command = guest_text.install_command("apt", ["curl", "vim; rm -rf /"])
    assert command.endswith("--no-install-recommends curl 'vim; rm -rf /'")
    assert guest_text.install_command("dnf", ["htop"]) == "dnf -y install htop"
    with pytest.raises(ValueError, match="no supported package manager"):
        guest_text.install_command("unknown", ["x"])


def test_firstboot_unit_runs_once_and_is_wanted_by_multi_user() -> None:
    unit = guest_text.firstboot_unit()
    assert "Type=oneshot" in unit
    assert f"ExecStart=/bin/sh {guest_text.FIRSTBOOT_DIR}/run.sh" in unit
    assert "WantedBy=multi-user.target" in unit
    runner = guest_text.firstboot_runner()
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
    error = errors.PersonalizationFailed(
        guest="web1", step="run command 1 (false)", reason="a\n\nb\nc\nd\n"
    )
    assert str(error) == "web1: personalising the disk failed at run command 1 (false): b / c / d"


def test_nothing_to_do_without_drives() -> None:
    customize.personalize([])


# --- the light inspection: os-release, fstab, root choice -------------------------------------

FSTABS = Path(__file__).parent.parent / "data" / "fstab"


def fstab(name: str) -> str:
    return (FSTABS / f"{name}.fstab").read_text()


def test_os_release_unquotes_and_skips_comments() -> None:
    text = '# c\nNAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\nbroken line\nX=\'a b\'\n'
    assert guest_text.parse_os_release(text) == {
        "NAME": "Debian GNU/Linux",
        "ID": "debian",
        "VERSION_ID": "12",
        "X": "a b",
    }


@pytest.mark.parametrize(
    ("os_release", "manager"),
    [
        ({"ID": "debian", "VERSION_ID": "12"}, "apt"),
        ({"ID": "ubuntu", "ID_LIKE": "debian"}, "apt"),
        ({"ID": "fedora", "VERSION_ID": "39"}, "dnf"),
        ({"ID": "fedora", "VERSION_ID": "21"}, "yum"),
        ({"ID": "rocky", "ID_LIKE": "rhel centos fedora", "VERSION_ID": "9.3"}, "dnf"),
        ({"ID": "centos", "VERSION_ID": "7"}, "yum"),
        ({"ID": "opensuse-leap", "ID_LIKE": "suse opensuse"}, "zypper"),
        ({"ID": "alpine"}, "apk"),
        ({"ID": "arch"}, "pacman"),
        ({"ID": "mint-like", "ID_LIKE": "ubuntu debian"}, "apt"),
        ({"ID": "gentoo"}, "unknown"),
    ],
)
def test_package_management_from_os_release(os_release: dict[str, str], manager: str) -> None:
    assert guest_text.package_management(os_release) == manager


def test_fstab_of_the_templates() -> None:
    assert guest_text.parse_fstab(fstab("tiny")) == [
        guest_text.FstabEntry(
            "UUID=d7c6a66a-d9ee-4765-af46-dd556f16ff36", "/", "ext4", ("defaults",)
        )
    ]
    (entry,) = guest_text.parse_fstab(fstab("debian-12"))
    assert (entry.mountpoint, entry.options) == ("/", ("errors=remount-ro",))


def test_fstab_skips_swap_pseudo_network_bind_and_removable() -> None:
    entries = guest_text.parse_fstab(fstab("classic"))
    assert [(e.spec, e.mountpoint) for e in entries] == [
        ("/dev/vda1", "/"),
        ("/dev/vda2", "/boot"),
        ("/dev/disk/by-uuid/1111-2222", "/boot/efi"),
        ("/dev/vda4", "/srv/my data"),
    ]
    assert [e.mountpoint for e in guest_text.parse_fstab(fstab("ubuntu-cloud"))] == [
        "/",
        "/boot/efi",
    ]
    assert guest_text.parse_fstab("UUID=x ///usr//local// ext4\n")[0].mountpoint == "/usr/local"


def _disk(*tags: dict[str, str]) -> dict[str, dict[str, str]]:
    return {f"/dev/sdb{number}": tag for number, tag in enumerate(tags, 1)}


def test_fstab_resolves_uuid_label_and_partuuid_on_this_disk_only() -> None:
    devices = _disk({"TYPE": "ext4", "UUID": "7dfded66-1fe6-48d5-a1eb-96ae02ce54e8"})
    entries = guest_text.parse_fstab(fstab("debian-12"))
    assert guest_text.resolve_fstab(entries, "/dev/sdb1", "/dev/sdb", devices) == {"/": "/dev/sdb1"}
    ubuntu = _disk({"TYPE": "ext4", "LABEL": "cloudimg-rootfs"}, {"TYPE": "vfat", "LABEL": "UEFI"})
    assert guest_text.resolve_fstab(
        guest_text.parse_fstab(fstab("ubuntu-cloud")), "/dev/sdb1", "/dev/sdb", ubuntu
    ) == {"/": "/dev/sdb1", "/boot/efi": "/dev/sdb2"}
    pi = _disk(
        {"TYPE": "vfat", "PART_ENTRY_UUID": "5e3da3da-01"},
        {"TYPE": "ext4", "PART_ENTRY_UUID": "5E3DA3DA-02"},
    )
    assert guest_text.resolve_fstab(
        guest_text.parse_fstab(fstab("raspios")), "/dev/sdb2", "/dev/sdb", pi
    ) == {"/": "/dev/sdb2", "/boot/firmware": "/dev/sdb1"}


def test_fstab_guest_device_names_map_onto_this_disk() -> None:
    devices = _disk({"TYPE": "ext4"}, {"TYPE": "ext2"}, {"TYPE": "swap"}, {"TYPE": "xfs"})
    mountpoints = guest_text.resolve_fstab(
        guest_text.parse_fstab(fstab("classic")), "/dev/sdb1", "/dev/sdb", devices
    )
    # /boot/efi's UUID is on no filesystem of this disk: left out, as inspect_os leaves it.
    assert mountpoints == {"/": "/dev/sdb1", "/boot": "/dev/sdb2", "/srv/my data": "/dev/sdb4"}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (fstab("rhel-lvm"), "/dev/mapper/rhel-root"),
        (fstab("fedora-btrfs"), "btrfs subvolume"),
        ("/dev/vdb1 /data ext4 defaults 0 2\n", "/dev/vdb1"),
        ("/dev/md0 /data ext4 defaults 0 2\n", "/dev/md0"),
        ("UUID=other / ext4 defaults 0 1\nUUID=same /data ext4 defaults 0 2\n", "on /"),
        ("LABEL=twice /data ext4 defaults 0 2\n", "2 filesystems"),
    ],
)
def test_fstab_the_light_path_cannot_read(text: str, why: str) -> None:
    devices = _disk(
        {"TYPE": "ext4", "UUID": "root", "LABEL": "twice"},
        {"TYPE": "ext4", "UUID": "other", "LABEL": "twice"},
    )
    with pytest.raises(guest_text.CannotDecide, match=why):
        guest_text.resolve_fstab(guest_text.parse_fstab(text), "/dev/sdb1", "/dev/sdb", devices)


def test_root_choice() -> None:
    assert guest_text.is_os_root(["passwd", "os-release"])
    assert guest_text.is_os_root(["fstab"])
    assert not guest_text.is_os_root(["passwd", "hosts"])
    assert guest_text.choose_root(["/dev/sda2"]) == "/dev/sda2"
    with pytest.raises(guest_text.CannotDecide, match="0 OS roots"):
        guest_text.choose_root([])
    with pytest.raises(guest_text.CannotDecide, match="2 OS roots"):
        guest_text.choose_root(["/dev/sda1", "/dev/sda2"])


class FakeHandle:
    """Just the calls the inspector makes, over an in-memory disk layout."""

    def __init__(self, filesystems: dict[str, tuple[dict[str, str], dict[str, str]]]) -> None:
        self.filesystems = filesystems  # device → (blkid tags, {path: content})
        self.mounted: str | None = None
        self.calls: list[str] = []

    def list_partitions(self) -> list[str]:
        return sorted(d for d in self.filesystems if d[-1].isdigit())

    def blkid(self, device: str) -> dict[str, str]:
        if device not in self.filesystems:
            raise RuntimeError("blkid: nothing found")
        return self.filesystems[device][0]

    def mount_ro(self, device: str, mountpoint: str) -> None:
        assert self.mounted is None and mountpoint == "/"
        self.mounted = device

    def mount(self, device: str, mountpoint: str) -> None:
        self.mount_ro(device, mountpoint)

    def umount(self, mountpoint: str) -> None:
        if self.mounted is None:
            raise RuntimeError("umount: you must call 'mount' first")
        self.mounted = None

    def ls(self, directory: str) -> list[str]:
        assert self.mounted
        files = self.filesystems[self.mounted][1]
        names = [p.rsplit("/", 1)[1] for p in files if p.startswith(directory + "/")]
        if not names:
            raise RuntimeError(f"ls: {directory}: No such file or directory")
        return names

    def pread(self, path: str, count: int, offset: int) -> bytes:
        assert self.mounted
        if path not in self.filesystems[self.mounted][1]:
            raise RuntimeError(f"{path}: No such file or directory")
        return self.filesystems[self.mounted][1][path].encode()[offset : offset + count]

    def inspect_os(self) -> list[str]:
        self.calls.append("inspect_os")
        return ["/dev/sda1"]

    def inspect_get_mountpoints(self, root: str) -> dict[str, str]:
        return {"/": root}

    def inspect_get_package_management(self, root: str) -> str:
        return "apt"


DEBIAN_ROOT = {
    "/etc/os-release": 'ID=debian\nVERSION_ID="12"\n',
    "/etc/fstab": fstab("tiny"),
    "/etc/passwd": "",
}


def inspector(fake: FakeHandle, devices: list[str]) -> guestfs_inspect.Inspector:
    return guestfs_inspect.Inspector(cast(guestfs_inspect.GuestFS, fake), devices)


def test_light_inspection_finds_the_root_among_partitions(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fake = FakeHandle(
        {
            "/dev/sda1": (
                {"TYPE": "ext4", "UUID": "d7c6a66a-d9ee-4765-af46-dd556f16ff36"},
                DEBIAN_ROOT,
            ),
            "/dev/sdb1": ({"TYPE": "ext4", "UUID": "boot"}, {"/grub/grub.cfg": ""}),
            "/dev/sdb2": ({"TYPE": "swap"}, {}),
            "/dev/sdb3": (
                {"TYPE": "xfs", "UUID": "d7c6a66a-d9ee-4765-af46-dd556f16ff36"},
                {**DEBIAN_ROOT, "/etc/fstab": "UUID=boot /boot ext4 defaults 0 2\n"},
            ),
        }
    )
    found = inspector(fake, ["/dev/sda", "/dev/sdb"]).inspect(1, "web1")
    assert found == guestfs_inspect.OSRoot(
        "/dev/sdb3", {"/": "/dev/sdb3", "/boot": "/dev/sdb1"}, "apt", light=True
    )
    assert fake.calls == [] and fake.mounted is None
    assert "web1: light inspection of /dev/sdb: root /dev/sdb3" in caplog.text


def test_light_inspection_of_a_whole_disk_filesystem() -> None:
    fake = FakeHandle({"/dev/sda": ({"TYPE": "ext4"}, {**DEBIAN_ROOT, "/etc/fstab": ""})})
    found = inspector(fake, ["/dev/sda"]).inspect(0, "web1")
    assert (found.root, found.light, fake.calls) == ("/dev/sda", True, [])


@pytest.mark.parametrize(
    ("filesystems", "why"),
    [
        ({"/dev/sda1": ({"TYPE": "ext4"}, {"/data": ""})}, "0 OS roots"),
        (
            {
                "/dev/sda1": ({"TYPE": "ext4"}, DEBIAN_ROOT),
                "/dev/sda2": ({"TYPE": "ext4"}, DEBIAN_ROOT),
            },
            "2 OS roots",
        ),
        ({"/dev/sda1": ({"TYPE": "ext4"}, {}), "/dev/sda2": ({"TYPE": "LVM2_member"}, {})}, "LVM"),
        (
            {
                "/dev/sda1": (
                    {"TYPE": "ext4"},
                    {**DEBIAN_ROOT, "/etc/fstab": "/dev/mapper/vg-root / ext4\n"},
                )
            },
            "mapper",
        ),
        ({"/dev/sda1": ({"TYPE": "ext4"}, {"/etc/fstab": ""})}, "no ID in the os-release"),
    ],
)
def test_light_inspection_falls_back_to_inspect_os(
    filesystems: dict[str, tuple[dict[str, str], dict[str, str]]],
    why: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    fake = FakeHandle(filesystems)
    found = inspector(fake, ["/dev/sda"]).inspect(0, "web1")
    assert found == guestfs_inspect.OSRoot("/dev/sda1", {"/": "/dev/sda1"}, "apt", light=False)
    assert fake.calls == ["inspect_os"] and fake.mounted is None
    assert "light inspection cannot decide" in caplog.text and why in caplog.text


def test_full_inspection_runs_once_for_all_drives() -> None:
    fake = FakeHandle({"/dev/sda1": ({"TYPE": "ext4"}, {}), "/dev/sdb1": ({"TYPE": "ext4"}, {})})
    found = inspector(fake, ["/dev/sda", "/dev/sdb"])
    assert found.inspect(0, "a").root == "/dev/sda1"
    with pytest.raises(ValueError, match="no operating system"):
        found.inspect(1, "b")
    assert fake.calls == ["inspect_os"]


def test_inspect_os_roots_by_drive() -> None:
    devices = ["/dev/sda", "/dev/sdb"]
    assert guestfs_inspect.roots_by_drive(["/dev/sdb1", "/dev/sda2"], devices) == [
        "/dev/sda2",
        "/dev/sdb1",
    ]
    assert guestfs_inspect.roots_by_drive(["/dev/sda1", "/dev/sda2"], devices) == [
        "/dev/sda1",
        None,
    ]
    assert guestfs_inspect.roots_by_drive(["/dev/vg/root"], ["/dev/sda"]) == ["/dev/vg/root"]


def test_drive_devices_follow_libguestfs_naming() -> None:
    names = [guest_text.drive_device(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)]
    assert names == [
        "/dev/sda",
        "/dev/sdb",
        "/dev/sdz",
        "/dev/sdaa",
        "/dev/sdab",
        "/dev/sdaz",
        "/dev/sdba",
        "/dev/sdzz",
        "/dev/sdaaa",
    ]


def test_keeping_the_root_mounted_saves_the_remount() -> None:
    fake = FakeHandle(
        {
            "/dev/sda1": ({"TYPE": "ext4"}, {"/boot.cfg": ""}),
            "/dev/sda2": ({"TYPE": "ext4"}, {**DEBIAN_ROOT, "/etc/fstab": ""}),
        }
    )
    found = inspector(fake, ["/dev/sda"]).inspect(0, "web1", keep_root_mounted=True)
    assert (found.root, found.mounted, fake.mounted) == ("/dev/sda2", True, "/dev/sda2")


def test_each_drive_may_keep_its_root_mounted_in_turn() -> None:
    tiny = ({"TYPE": "ext4"}, {**DEBIAN_ROOT, "/etc/fstab": ""})
    fake = FakeHandle({"/dev/sda1": tiny, "/dev/sdb1": tiny})
    drives = inspector(fake, ["/dev/sda", "/dev/sdb"])
    assert drives.inspect(0, "a", keep_root_mounted=True).mounted
    fake.mounted = None  # the edits of drive 0 end with umount_all
    assert drives.inspect(1, "b", keep_root_mounted=True).root == "/dev/sdb1"
    assert fake.mounted == "/dev/sdb1"


@pytest.fixture
def appliance() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing in for the appliance's qemu (the watchdog only needs its PID)."""
    process = subprocess.Popen(["sleep", "600"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_watchdog_kills_the_appliance_when_its_time_is_up(
    appliance: subprocess.Popen[bytes],
) -> None:
    watchdog = customize.Watchdog(0.2)
    watchdog.watch(appliance.pid, time.monotonic())
    assert appliance.wait(timeout=30) == -signal.SIGKILL
    assert watchdog.reason == (
        "the libguestfs appliance did not finish within 0.2 s and was killed"
    )


def test_watchdog_counts_the_launch_in_its_time(appliance: subprocess.Popen[bytes]) -> None:
    watchdog = customize.Watchdog(60)
    watchdog.watch(appliance.pid, time.monotonic() - 61)  # the launch took it all
    assert appliance.wait(timeout=30) == -signal.SIGKILL


def test_watchdog_kill_before_the_launch_kills_the_appliance_once_up(
    appliance: subprocess.Popen[bytes],
) -> None:
    watchdog = customize.Watchdog(None)
    watchdog.kill("the build was interrupted")
    assert appliance.poll() is None
    watchdog.watch(appliance.pid, time.monotonic())
    assert appliance.wait(timeout=30) == -signal.SIGKILL
    assert watchdog.reason == "the build was interrupted"


def test_stopped_watchdog_leaves_the_appliance_alone(appliance: subprocess.Popen[bytes]) -> None:
    watchdog = customize.Watchdog(0.1)
    watchdog.watch(appliance.pid, time.monotonic())
    watchdog.stop()
    with pytest.raises(subprocess.TimeoutExpired):
        appliance.wait(timeout=0.5)
    watchdog.kill("too late")  # after stop the PID is no longer the watchdog's to kill
    with pytest.raises(subprocess.TimeoutExpired):
        appliance.wait(timeout=0.2)
    assert watchdog.reason == "too late"
