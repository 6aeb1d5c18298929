#!/bin/bash
# Runs inside one fake hypervisor host of the mclu sandbox (see mclu/sandbox/cluster.py).
#
#   hostinit.sh boot NAME HOSTDIR STANDIN
#       Run by `ip netns exec mclu-NAME unshare --mount --uts --propagation private`:
#       makes the host's private mounts, starts its daemons, then becomes the host's
#       anchor process (same PID, so the caller knows it) that later commands nsenter into.
#   hostinit.sh daemon NAME HOSTDIR DAEMON
#       Run through nsenter inside an already booted host: start one daemon again.
#
# Every fake host shares the real kernel, so nothing here may act outside the host's own
# namespaces: no sysctl, no module loading, no power commands.
set -euo pipefail

# The commands that would power off the whole machine (the fake hosts share its kernel).
POWER_COMMANDS=(poweroff reboot halt shutdown systemctl telinit)
STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "hostinit[$NAME]: $*" >&2; }

bind() {  # bind SRC DST: DST must already exist (a file over a file, a dir over a dir)
    mount --bind "$1" "$2"
}

setup_mounts() {
    # Private copies of everything libvirt and sshd keep state in. /run is a fresh tmpfs
    # (pidfiles, sockets, sshd's privsep dir) so two hosts never see each other's sockets.
    # First drop our copy of /run/netns: it would pin every other host's network namespace.
    if mountpoint -q /run/netns; then umount -l /run/netns; fi
    mount -t tmpfs -o mode=0755,size=64m mclu-run /run
    mkdir -p /run/sshd /run/libvirt /run/lock
    chmod 0755 /run/sshd
    bind "$HOSTDIR/etc-libvirt" /etc/libvirt
    bind "$HOSTDIR/var-lib-libvirt" /var/lib/libvirt
    bind "$HOSTDIR/var-log-libvirt" /var/log/libvirt
    bind "$HOSTDIR/var-cache-libvirt" /var/cache/libvirt
    bind "$HOSTDIR/root" /root
    bind "$HOSTDIR/hosts" /etc/hosts
    hostname "$NAME"
}

setup_standins() {
    # Cover every existing path of a power command with the stand-in. A bind mount over a
    # symlink lands on its target (here /usr/bin/systemctl), which is exactly what must be
    # covered; the stand-in looks at its $0 to know which command it plays.
    local dir cmd path target
    declare -A done_targets=()
    for dir in /usr/sbin /usr/bin /sbin /bin; do
        for cmd in "${POWER_COMMANDS[@]}"; do
            path="$dir/$cmd"
            [ -e "$path" ] || continue
            target=$(readlink -f "$path")
            [ -n "${done_targets[$target]:-}" ] && continue
            bind "$STANDIN" "$target"
            done_targets[$target]=1
        done
    done
    # And a tmpfs first on root's PATH holding all of them, so they exist even where the
    # real command does not. (The directory is created empty on the real disk if missing.)
    mkdir -p /usr/local/sbin
    mount -t tmpfs -o mode=0755,size=1m mclu-standins /usr/local/sbin
    for cmd in "${POWER_COMMANDS[@]}"; do
        install -m 0755 "$STANDIN" "/usr/local/sbin/$cmd"
    done
    # Record that this is a sandbox host, and which network namespace is the machine's own
    # (mclu-sandbox passes it): the stand-in refuses to act anywhere else.
    echo "${MCLU_MACHINE_NETNS:?MCLU_MACHINE_NETNS not set}" > /run/mclu-machine-netns
    echo "$NAME" > /run/mclu-host
}

start_daemon() {
    # Daemons get a clean environment (no pyenv shims on PATH: libvirt runs `ssh` from PATH
    # for peer-to-peer migration).
    local envv=(env -i "PATH=$STD_PATH" HOME=/root LANG=C.UTF-8 "HOSTNAME=$NAME")
    case "$1" in
        virtlogd) "${envv[@]}" /usr/sbin/virtlogd -d ;;
        libvirtd) "${envv[@]}" /usr/sbin/libvirtd -d ;;
        sshd) "${envv[@]}" /usr/sbin/sshd -f "$HOSTDIR/sshd_config" -E "$HOSTDIR/sshd.log" ;;
        *) log "unknown daemon $1"; return 2 ;;
    esac
}

mode=${1:?usage: hostinit.sh boot|daemon NAME HOSTDIR ARG}
NAME=${2:?NAME}
HOSTDIR=${3:?HOSTDIR}

case "$mode" in
    boot)
        STANDIN=${4:?STANDIN}
        cd /
        setup_mounts
        setup_standins
        ip link set lo up
        start_daemon sshd
        start_daemon virtlogd
        start_daemon libvirtd
        echo $$ > /run/mclu-anchor.pid
        log "booted"
        # Become the anchor: an idle process that keeps the namespaces alive.
        exec -a "${MCLU_ANCHOR_NAME:-mclu-anchor-$NAME}" sleep infinity
        ;;
    daemon)
        start_daemon "${4:?DAEMON}"
        ;;
    *)
        echo "hostinit.sh: unknown mode $mode" >&2
        exit 2
        ;;
esac
