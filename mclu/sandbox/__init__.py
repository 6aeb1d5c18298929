"""mclu-sandbox: simulated KVM hosts (namespaces + sshd + libvirtd) on one Linux machine.

Each host `hamI` is a network namespace `mclu-hamI` whose veth hangs on the bridge `mclubr0`
(inside, eth0 on the host's own bridge br0, which has its address and takes its guests onto
the sandbox LAN), plus a private mount and UTS namespace (made by hostinit.sh) held open by
one idle anchor process. Its sshd, virtlogd and libvirtd run inside those namespaces, with
private copies of libvirt's directories and /root from the state directory. Later commands
enter a host with `nsenter --target ANCHOR --mount --uts --net`.

All fake hosts share the real kernel and one PID namespace: processes are only ever killed by
PID after checking which network namespace they are in, never by name.

The modules, from the bottom up:
    config            names, addresses and every generated text (pure)
    errors, state     SandboxError; the state directory's paths, lock and record of `up`
    commands          running a command; the nsenter command line that enters a host
    namespaces        processes of a network namespace, and killing them all
    anchors           the process that holds a host's namespaces open
    keys, files       what is written before boot: ssh keys, host directories, inventory
    network           the bridge, the veths, a host's link and br0
    lan               the LAN's DHCP server (dnsmasq on the bridge)
    capability_cache  the warm QEMU capability cache each libvirtd starts from
    readiness         do a host's sshd and libvirtd answer; waiting until they do
    power, daemons    boot and cut a host; stop and start one of its daemons
    nat               libvirt's NAT network `default` on the hosts that run one
    wol_listener      the wake-on-LAN listener process: start, find, stop
    status            each host's state, health, what `down` left behind
    cluster           `up` and `down` of the whole sandbox
    cli, wol          the mclu-sandbox command and the wake-on-LAN listener program
    images            the sandbox's own template repository
"""
