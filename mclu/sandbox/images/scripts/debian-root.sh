#!/bin/sh
# Build the root tree of the `debian-12` template: debootstrap minbase with systemd, sshd and
# the Debian kernel, configured for a serial console and DHCP.
#
# usage: debian-root.sh ROOT SUITE MIRROR SECURITY_MIRROR INCLUDE UUID PACKAGES
#   INCLUDE   comma-separated extra packages for debootstrap --include (the kernel,
#             linux-image-amd64, is installed afterwards from SUITE, -updates and -security)
#   PACKAGES  comma-separated packages installed with apt after the kernel (cloud-init: its
#             dependencies have alternatives that debootstrap does not resolve)
#
# Run it inside `unshare --mount --uts --ipc --pid --fork`: debootstrap mounts /proc and /sys
# in the target and package scripts may start daemons; the namespaces confine both, and end
# them with this script. Nothing from the target is ever run outside its chroot.
set -eu
root=$1 suite=$2 mirror=$3 security=$4 include=$5 uuid=$6 packages=$7
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

in_root() { chroot "$root" "$@"; }

debootstrap --variant=minbase --components=main --include="$include" \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg "$suite" "$root" "$mirror"

# No service may start inside the chroot while we work in it.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

cat > "$root/etc/apt/sources.list" <<END
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
END
in_root apt-get -q update
in_root apt-get -q -y -o Dpkg::Options::=--force-confold full-upgrade
# The kernel only now, from the updated suites: one kernel, one initramfs build.
in_root apt-get -q -y --no-install-recommends install linux-image-amd64
# shellcheck disable=SC2046 # one word per package
in_root apt-get -q -y --no-install-recommends install $(echo "$packages" | tr , ' ')
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin

# cloud-init: its generator runs ds-identify at each boot, which enables cloud-init only when it
# finds a datasource (maybe=none in Debian's policy), e.g. a NoCloud volume labelled cidata;
# otherwise none of its units run. A single-entry datasource_list would enable it always, so
# Debian's list stays. The network is the image's own (eth0 by DHCP in
# /etc/network/interfaces): cloud-init's fallback config would define eth0 a second time.
if [ -d "$root/etc/cloud/cloud.cfg.d" ]; then
    cat > "$root/etc/cloud/cloud.cfg.d/99_mclu-sandbox.cfg" <<'END'
# The mclu sandbox's image: eth0 is configured by ifupdown (/etc/network/interfaces).
network:
  config: disabled
# No locale is generated here: C.UTF-8 is built into libc. cloud-init's default,
# en_US.UTF-8, makes update-locale fail (and `cloud-init status` say error). With C.UTF-8
# already in /etc/default/locale (below), cc_locale has nothing to do and runs no
# update-locale (0.5 s of an emulated first boot). (`locale: false` would skip it too, but
# cloud-init 22.4's schema wants a string: a warning on every first boot.)
locale: C.UTF-8
# extlinux boots this image: there is no GRUB for grub-dpkg to configure.
grub_dpkg:
  enabled: false
END
fi

echo LANG=C.UTF-8 > "$root/etc/default/locale"
echo debian > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    > "$root/etc/hosts"
printf 'UUID=%s\t/\text4\terrors=remount-ro\t0 1\n' "$uuid" > "$root/etc/fstab"
cat > "$root/etc/network/interfaces" <<'END'
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

# net.ifnames=0 on the kernel command line: the first NIC is eth0 whatever its bus address.
allow-hotplug eth0
iface eth0 inet dhcp
END

# root logs in on the console with an empty password; sshd refuses empty passwords and
# password logins for root, so over ssh only keys work (put them in /root/.ssh).
in_root passwd --delete root >/dev/null
mkdir -p "$root/root/.ssh"
chmod 700 "$root/root/.ssh"

# Fresh host keys for this build (first boot would be too late: virt-builder customises
# before the guest ever runs). Guests cloned from the template share them unless the
# cloning regenerates them.
rm -f "$root"/etc/ssh/ssh_host_*
in_root ssh-keygen -A >/dev/null

# e2scrub_reap removes e2scrub's LVM snapshots; this image has no LVM. It is a oneshot at
# idle priority that multi-user.target waits for, and cloud-init's final stage (what a
# cloud-init guest's readiness waits for) waits for multi-user.target: under emulation it
# ran 6 s of the first boot, ending after every other unit.
ln -sf /dev/null "$root/etc/systemd/system/e2scrub_reap.service"

# Each guest gets its own machine-id on first boot.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

kver=$(basename "$(readlink -f "$root/vmlinuz")")
kver=${kver#vmlinuz-}
mkdir -p "$root/boot/extlinux"
# no_timer_check: under TCG on a loaded machine the kernel's IO-APIC timer check can fail
# and panic ("IO-APIC + timer doesn't work"); libguestfs boots its appliance with it too.
cat > "$root/boot/extlinux/extlinux.conf" <<END
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  LINUX /boot/vmlinuz-$kver
  INITRD /boot/initrd.img-$kver
  APPEND root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 no_timer_check quiet
END

rm -f "$root/usr/sbin/policy-rc.d"
