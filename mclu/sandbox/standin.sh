#!/bin/sh
# mclu-sandbox power stand-in.
#
# Inside a fake host of the mclu sandbox this file is mounted over poweroff, reboot, halt,
# shutdown, systemctl and telinit: the fake hosts share the real machine's kernel, so the real
# commands would power off the WHOLE machine. This one powers off only the fake host it runs
# in: detached (so the ssh command that ran it returns), after about a second it kills every
# process in its own network namespace (sshd, libvirtd, virtlogd, qemu, the host's anchor)
# and takes the host's link down. It never touches a process in any other namespace, and it
# refuses to do anything outside a sandbox host.

cmd=$(basename -- "$0")

not_a_host() {
    echo "mclu-sandbox stand-in for $cmd: refusing, this is not a sandbox host ($1)" >&2
    exit 2
}

power_off() {
    # Positive proof that this is a sandbox host, not the machine itself: a network namespace
    # other than the kernel's initial one (kthreadd, PID 2, lives there) and other than the one
    # mclu-sandbox ran in (recorded at boot), and the marker hostinit.sh left in this host's /run.
    my_net=$(readlink /proc/self/ns/net) || not_a_host "cannot read own network namespace"
    [ -n "$my_net" ] || not_a_host "empty network namespace"
    init_net=$(readlink /proc/2/ns/net) || not_a_host "cannot read kthreadd's network namespace"
    [ "$my_net" != "$init_net" ] || not_a_host "in the kernel's initial network namespace"
    [ -s /run/mclu-machine-netns ] || not_a_host "no /run/mclu-machine-netns"
    [ "$my_net" != "$(cat /run/mclu-machine-netns)" ] || not_a_host "in the machine's namespace"
    [ -f /run/mclu-host ] || not_a_host "no /run/mclu-host"
    host=$(cat /run/mclu-host)
    [ "$host" = "$(hostname)" ] || not_a_host "hostname is not $host"
    echo "mclu-sandbox: $cmd: powering off fake host $host"
    # The killer runs in its own session, so it survives the ssh session that started it.
    setsid sh -c '
        my_net=$1
        sleep 1
        ip link set dev eth0 down 2>/dev/null
        for pass in 1 2 3; do
            for p in /proc/[0-9]*; do
                pid=${p#/proc/}
                [ "$pid" = "$$" ] && continue
                [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$my_net" ] || continue
                kill -9 "$pid" 2>/dev/null
            done
            sleep 0.2
        done
    ' mclu-poweroff "$my_net" </dev/null >/dev/null 2>&1 &
    exit 0
}

case "$cmd" in
    poweroff|halt|reboot|shutdown)
        power_off
        ;;
    telinit)
        case "${1:-}" in
            0|6) power_off ;;
        esac
        ;;
    systemctl)
        for arg in "$@"; do
            case "$arg" in
                poweroff|halt|reboot|kexec|suspend) power_off ;;
            esac
        done
        ;;
esac
echo "mclu-sandbox: $cmd $* : this is the sandbox's harmless stand-in; it does nothing" >&2
exit 1
