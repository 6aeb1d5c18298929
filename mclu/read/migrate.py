"""What a migration plan (`mclu.decide.migrate`) is made from beyond the snapshot: the
guests' disks, read on their host (`qemu-img info --backing-chain`, parsed here, pure), and
the other hosts' storage facts (`gather`). Rebuild reads a guest's system disk the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from mclu import errors
from mclu.decide.migrate import Disk, Facts, all_shared, local_disk_problem
from mclu.hosts import commands
from mclu.hosts.session import Session
from mclu.model import Guest, HostSpec, Snapshot, StorageFacts
from mclu.read import snapshot, storage


async def read_disks(session: Session, guest: Guest) -> tuple[Disk, ...]:
    """Every disk of the guest, read on its host; raises HostError for a disk that is not a
    local file (it would need shared storage)."""
    problem = local_disk_problem(guest)
    if problem is not None:
        raise errors.HostError(host=session.host, detail=problem)
    if not guest.disks:
        return ()
    done = await session.run(commands.disk_info(guest.disks))
    return tuple(
        parse_disk_info(path, text)
        for path, text in zip(guest.disks, json_documents(done.stdout.decode()), strict=True)
    )


async def gather(
    now: snapshot.Connected,
    snap: Snapshot,
    source: str,
    guests: Sequence[Guest],
    local_bases: frozenset[str] = frozenset(),
) -> Facts:
    """What a plan to move `guests` off `source` is made from: their disks (read on the
    source) and the other hosts' storage facts, unless every possible destination shares the
    source's storage (then nothing is copied), and `local_bases`, the names of the bases in
    the controller's cache. A host whose storage could not be read joins `snap.failed`."""
    if all_shared(snap, source):
        return Facts(snap, {g.name: () for g in guests})
    session = now.sessions[source]
    disks = {g.name: await read_disks(session, g) for g in guests}

    async def read(host: Session, spec: HostSpec) -> StorageFacts:
        if spec.name == source:
            return StorageFacts(image_dir=spec.image_dir, free=0)
        return await storage.read(host, spec)

    facts = await now.gather(read)
    snap.failed.update({h: e for h, e in facts.failed.items() if h != source})
    others = {h: f for h, f in facts.ok.items() if h != source}
    return Facts(snap, disks, others, local_bases)


# --- what qemu-img says ------------------------------------------------------------------------


def parse_disk_info(path: str, text: str) -> Disk:
    """`qemu-img info --backing-chain --output=json` (a JSON list, top image first) → Disk."""
    chain = json.loads(text)
    top = chain[0] if isinstance(chain, list) else chain
    backing = top.get("full-backing-filename") or top.get("backing-filename")
    below = chain[1] if isinstance(chain, list) and len(chain) > 1 else {}
    return Disk(
        path=path,
        format=str(top["format"]),
        virtual_size=int(top["virtual-size"]),
        data_bytes=int(top.get("actual-size", 0)),
        backing=str(backing) if backing else None,
        backing_format=top.get("backing-filename-format"),
        backing_bytes=int(below.get("actual-size", 0)),
    )


def json_documents(text: str) -> list[str]:
    """Concatenated JSON documents, each as its own text."""
    decoder = json.JSONDecoder()
    found, pos, text = [], 0, text.strip()
    while pos < len(text):
        _, end = decoder.raw_decode(text, pos)
        found.append(text[pos:end])
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return found
