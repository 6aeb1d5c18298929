#!/bin/sh
# Build the root tree of the `tiny` template: busybox, the host's Debian kernel, a small
# initramfs, an extlinux.conf, and dropbear (with the libraries it needs) as its ssh server.
# Nothing here runs inside the tree: it is only written.
#
# usage: tiny-root.sh ROOT KVER UUID
#   ROOT  empty directory to fill
#   KVER  kernel release with /boot/vmlinuz-KVER and /lib/modules/KVER on this machine
#   UUID  filesystem UUID the disk will get (root= and fstab)
set -eu
root=$1 kver=$2 uuid=$3
modules=/lib/modules/$kver
# Loaded by the initramfs, dependencies first; what is built in or fails (crc32c-intel under
# TCG, no SSE4.2) is skipped at boot.
want="virtio_pci virtio_blk virtio_scsi sd_mod ext4 virtio_net button evdev"

install_busybox() {  # DIR: /bin/busybox and a symlink per applet
    mkdir -p "$1/bin" "$1/sbin" "$1/usr/bin" "$1/usr/sbin"
    cp /usr/bin/busybox "$1/bin/busybox"
    for applet in $(/usr/bin/busybox --list-full); do
        [ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$1/$applet"
    done
}

install_with_libs() {  # BINARY: copy it to the same path in the root, with every library
    install -D -m 0755 "$1" "$root$1"
    for lib in $(ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        [ -e "$root$lib" ] || install -D -m 0755 "$lib" "$root$lib"  # ld.so must be executable
    done
}

# --- root tree ------------------------------------------------------------------------------
install_busybox "$root"
# ssh: dropbear from this machine (Debian's dropbear-bin); rcS starts it.
install_with_libs /usr/sbin/dropbear
install_with_libs /usr/lib/dropbear/dropbearconvert
# /etc/ssh: personalisation writes a guest's host keys only where the directory exists.
mkdir -p "$root/etc/dropbear" "$root/etc/ssh"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' > "$root/etc/nsswitch.conf"
mkdir -p "$root/boot/extlinux" "$root/dev" "$root/etc/init.d" "$root/etc/acpi/PWRF" \
    "$root/etc/udhcpc" "$root/home" "$root/proc" "$root/root" "$root/run" "$root/sys" \
    "$root/tmp" "$root/var/log" "$root/var/lib/urandom" "$root/mnt"
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
cp --sparse=never "/boot/vmlinuz-$kver" "$root/boot/vmlinuz-$kver"

cat > "$root/etc/os-release" <<'END'
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
VARIANT="mclu tiny (busybox)"
VARIANT_ID=mclu-tiny
HOME_URL="https://www.debian.org/"
END
echo 12 > "$root/etc/debian_version"
echo tiny > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\ttiny\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    > "$root/etc/hosts"
printf 'UUID=%s\t/\text4\tdefaults\t0 1\n' "$uuid" > "$root/etc/fstab"
# root logs in with an empty password on the console; dropbear takes keys only (-s).
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root::19000:0:99999:7:::' > "$root/etc/shadow"
chmod 600 "$root/etc/shadow"
echo 'root:x:0:' > "$root/etc/group"
echo /bin/sh > "$root/etc/shells"
: > "$root/etc/resolv.conf"
# virt-customize writes a random seed here per guest; rcS feeds it to the kernel.
install -m 600 /dev/null "$root/var/lib/urandom/random-seed"

cat > "$root/etc/inittab" <<'END'
::sysinit:/etc/init.d/rcS
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100
tty1::respawn:/sbin/getty 38400 tty1
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
END

cat > "$root/etc/init.d/rcS" <<'END'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -o remount,rw /
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
hostname -F /etc/hostname
cat /var/lib/urandom/random-seed > /dev/urandom 2>/dev/null
ip link set lo up
syslogd
# Power button (ACPI shutdown) -> /etc/acpi/PWRF/00000080.
acpid
# DHCP on every NIC, in the background: no DHCP server must not delay the login prompt.
for dev in /sys/class/net/*; do
    ifname=${dev##*/}
    [ "$ifname" = lo ] && continue
    ip link set "$ifname" up
    udhcpc -b -S -i "$ifname" -x "hostname:$(hostname)" -s /etc/udhcpc/default.script \
        >/dev/null 2>&1 &
done
# ssh: dropbear presents the OpenSSH host keys personalisation wrote into /etc/ssh (converted
# to its format at each boot); without any it makes its own. Keys only, no passwords.
keys=
for type in ed25519 ecdsa rsa; do
    key=/etc/ssh/ssh_host_${type}_key
    [ -s "$key" ] || continue
    out=/etc/dropbear/dropbear_${type}_host_key
    rm -f "$out"
    /usr/lib/dropbear/dropbearconvert openssh dropbear "$key" "$out" >/dev/null 2>&1 &&
        keys="$keys -r $out"
done
if [ -n "$keys" ]; then
    dropbear -s -P /run/dropbear.pid $keys
else
    dropbear -s -R -P /run/dropbear.pid
fi
END
chmod 755 "$root/etc/init.d/rcS"

cat > "$root/etc/acpi/PWRF/00000080" <<'END'
#!/bin/sh
exec /sbin/poweroff
END
chmod 755 "$root/etc/acpi/PWRF/00000080"

cat > "$root/etc/udhcpc/default.script" <<'END'
#!/bin/sh
# udhcpc event handler: configure $interface from the lease.
case $1 in
deconfig)
    ip -4 addr flush dev "$interface"
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip -4 addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "${router:-}" ]; then
        ip -4 route del default 2>/dev/null
        for r in $router; do ip -4 route add default via "$r" dev "$interface"; break; done
    fi
    : > /etc/resolv.conf
    [ -n "${domain:-}" ] && echo "search $domain" >> /etc/resolv.conf
    for d in ${dns:-}; do echo "nameserver $d" >> /etc/resolv.conf; done
    ;;
esac
exit 0
END
chmod 755 "$root/etc/udhcpc/default.script"

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
  APPEND root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8 no_timer_check quiet
END

# --- initramfs: load the modules, find root by UUID, switch_root ----------------------------
initramfs=$(mktemp -d)
trap 'rm -rf "$initramfs"' EXIT
install_busybox "$initramfs"
mkdir -p "$initramfs/dev" "$initramfs/proc" "$initramfs/sys" "$initramfs/newroot" \
    "$initramfs/lib/modules"
: > "$initramfs/lib/modules/load"
for ko in $(for m in $want; do modprobe -S "$kver" --show-depends "$m"; done |
        awk '$1 == "insmod" {print $2}'); do
    name=${ko##*/}
    grep -qx "$name" "$initramfs/lib/modules/load" && continue
    cp "$ko" "$initramfs/lib/modules/$name"
    echo "$name" >> "$initramfs/lib/modules/load"
done
cat > "$initramfs/init" <<'END'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r name; do insmod "/lib/modules/$name" 2>/dev/null; done < /lib/modules/load
root=
for arg in $(cat /proc/cmdline); do
    case $arg in root=*) root=${arg#root=} ;; esac
done
dev=
for _ in $(seq 100); do
    dev=$(findfs "$root" 2>/dev/null) && break
    [ -b "$root" ] && dev=$root && break
    sleep 0.1
done
if [ -z "$dev" ] || ! mount -t ext4 -o ro "$dev" /newroot; then
    echo "initramfs: cannot mount root $root; here is a shell"
    exec sh
fi
umount /sys /proc
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
END
chmod 755 "$initramfs/init"
(cd "$initramfs" && find . | sort | cpio --quiet -o -H newc -R 0:0) | gzip -9n \
    > "$root/boot/initrd.img-$kver"
