"""What a rebuild plan (`mclu.decide.rebuild`) needs beyond the snapshot: which bases the
caches of the hosts with a guest to rebuild hold."""

from __future__ import annotations

from mclu import model
from mclu.decide.rebuild import RebuildPlan
from mclu.read import fanout, snapshot, storage


async def read_caches(
    now: snapshot.Connected, chosen: RebuildPlan
) -> dict[str, model.StorageFacts]:
    """The storage facts (the bases cached) of each host with a guest to rebuild, for the
    plan; a host whose image directory could not be read is left out (its base is sent)."""
    hosts = sorted({r.host for r in chosen.rebuild} & set(now.sessions))
    found = await fanout.gather(
        [now.specs[h] for h in hosts],
        lambda spec: storage.read(now.sessions[spec.name], spec),
        limit=now.limit,
        what="storage",
    )
    return dict(found.ok)
