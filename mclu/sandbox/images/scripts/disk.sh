#!/bin/sh
# Make a bootable raw disk from a root tree: an MBR with one bootable partition from 1 MiB to
# the end, ext4 filled by `mkfs.ext4 -d` (no root mount needed for that), then extlinux.
#
# usage: disk.sh ROOT DISK SIZE_MIB UUID
#
# extlinux must write into a mounted filesystem, so the last step mounts the partition through
# a loop device, inside a private mount namespace: if this script dies, the namespace and with
# it the mount go away, and the loop device (autoclear) is freed.
set -eu
if [ "${1:-}" = --boot-inside ]; then
    disk=$2 offset=$3 bootfiles=$4
    mnt=$(mktemp -d)
    mount -o loop,offset="$offset" "$disk" "$mnt"
    # syslinux cannot read files that mkfs.ext4 -d stored sparse: /boot's files go in densely.
    cp --sparse=never --preserve=mode,ownership,timestamps "$bootfiles"/* "$mnt/boot/"
    # extlinux warns that a loop device has no geometry; show its output only on failure.
    if ! out=$(extlinux --install "$mnt/boot/extlinux" 2>&1); then
        echo "$out" >&2
        exit 1
    fi
    umount "$mnt"
    rmdir "$mnt"
    exit 0
fi

root=$1 disk=$2 size_mib=$3 uuid=$4
offset=1048576
# Take /boot's files out of the tree (it is the caller's scratch copy): they are copied in
# after mkfs, so no sparse copy of them is left behind in the image's free blocks.
bootfiles=$(mktemp -d "$disk.boot.XXXXXX")
trap 'rm -rf "$bootfiles"' EXIT
find "$root/boot" -maxdepth 1 -type f -exec mv -t "$bootfiles" {} +
rm -f "$disk"
truncate -s "${size_mib}M" "$disk"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk --quiet "$disk"
# extlinux 6.04 cannot boot ext4 with 64bit or metadata_csum_seed.
mkfs.ext4 -q -F -L root -U "$uuid" -O ^64bit,^metadata_csum_seed -E offset="$offset" \
    -d "$root" "$disk" "$(( (size_mib - 1) * 1024 ))k"
dd if=/usr/lib/EXTLINUX/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
unshare --mount --propagation private sh "$0" --boot-inside "$disk" "$offset" "$bootfiles"
