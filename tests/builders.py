"""Test data built in one place: every test that needs a guest builds it here.

A variant is a keyword argument, named where it is used (`guest("old", state=SHUTOFF)`,
`guest("web1", own_disk=True)`), so that a reader sees what the test depends on.
"""

from __future__ import annotations

from mclu import model

MIB = 1 << 20
GIB = 1 << 30
IMAGES = "/var/lib/libvirt/images"  # a host's image directory (HostSpec.image_dir's default)
RUNNING, SHUTOFF = model.GuestState.RUNNING, model.GuestState.SHUTOFF


def disk_of(name: str) -> str:
    """The disk a build gives guest `name`: IMAGES/NAME.qcow2."""
    return f"{IMAGES}/{name}.qcow2"


def guest(
    name: str = "web1",
    *,
    state: model.GuestState = RUNNING,
    vcpus: int = 1,
    memory: int = GIB,
    max_memory: int | None = None,
    own_disk: bool = False,
    disks: tuple[str, ...] = (),
    meta: model.GuestMeta | None = None,
    uuid: str | None = None,
    persistent: bool = True,
    autostart: bool = False,
) -> model.Guest:
    """A guest as a host reports it: its UUID `uuid-NAME`, its maximum memory its current
    one, no disk unless `own_disk` (the one a build gives it) or `disks`, no mclu record
    unless `meta` (a guest mclu did not build)."""
    if own_disk and disks:
        raise ValueError("own_disk or disks, not both")
    return model.Guest(
        name=name,
        uuid=f"uuid-{name}" if uuid is None else uuid,
        state=state,
        vcpus=vcpus,
        memory=memory,
        max_memory=memory if max_memory is None else max_memory,
        disks=(disk_of(name),) if own_disk else disks,
        mclu=meta,
        persistent=persistent,
        autostart=autostart,
    )


def built(
    name: str, meta: model.GuestMeta, *, state: model.GuestState = RUNNING, memory: int = 256 * MIB
) -> model.Guest:
    """A guest as `mclu build` left it: its own disk and its record (`meta`)."""
    return guest(name, state=state, memory=memory, own_disk=True, meta=meta)


# web1 as `mclu build tiny web1 --memory 1G` left it: the CLI tests' usual guest.
WEB1 = guest(
    "web1",
    vcpus=2,
    meta=model.GuestMeta(
        template="tiny", revision="3", built="2026-11-20T10:00:00Z", options=(("memory", "1G"),)
    ),
)
