"""How other programs reach a host's libvirt over ssh (pure): the URI the source's libvirtd
migrates a guest to, and virt-viewer's URI and command line."""

from __future__ import annotations

import urllib.parse

from mclu import model


def migration_uri(dest: model.HostSpec) -> str:
    """The destination's libvirt as the source's libvirtd reaches it (peer to peer, over ssh)."""
    user = f"{dest.user}@" if dest.user else ""
    port = f":{dest.port}" if dest.port not in (None, 22) else ""
    return f"qemu+ssh://{user}{dest.address}{port}/system"


def viewer_uri(spec: model.HostSpec) -> str:
    """The qemu+ssh URI virt-viewer opens for spec's host, with the inventory's ssh key and
    known_hosts, and host key checking on (no_verify=0)."""
    user = f"{spec.user}@" if spec.user else ""
    port = f":{spec.port}" if spec.port is not None else ""
    params = []
    if spec.identity_files:
        params.append(("keyfile", spec.identity_files[0]))
    if spec.known_hosts:
        params.append(("known_hosts", spec.known_hosts))
    params.append(("no_verify", "0"))
    query = urllib.parse.urlencode(params, safe="/", quote_via=urllib.parse.quote)
    return f"qemu+ssh://{user}{spec.address}{port}/system?{query}"


def viewer_argv(program: str, spec: model.HostSpec, name: str) -> list[str]:
    """virt-viewer's command line for guest `name` on spec's host."""
    return [program, "--connect", viewer_uri(spec), name]
