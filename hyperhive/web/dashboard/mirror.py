"""The dashboard's mirror of the Coordinator's container snapshots (on the
IOLoop thread): kept by ``container.state`` events, so a state request crosses
to no actor for them; ``Coordinator.ls`` is asked again when a container comes
or goes, and on each resync.

A caller never gets a mirror older than an event already noted: while an
``ls`` is on its way every caller waits for it (the first one to see the
mirror stale used to ask alone, and the others took the old mirror meanwhile:
a push built then showed a removed container, or a revived agent's tombstone).
``changes`` counts what the containers and tombstones sections show besides
the snapshots' states (a container added or removed, a tombstone purged): a
build that saw it change meanwhile is built again (`StateSource.sections`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from hyperhive.actors.bridge import Handle
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.refs import CoordinatorRef
from hyperhive.actors.snapshots import ContainerSnapshot, SnapshotLike, as_snapshot

__all__ = ["ASKS", "SnapshotMirror", "merge_snapshots"]

ASKS = 3  # ``ls`` asks one call makes at most while containers keep coming and going


def merge_snapshots(
    answer: Iterable[SnapshotLike], latest: Mapping[str, tuple[int, ContainerSnapshot]], asked: int,
) -> dict[str, ContainerSnapshot]:
    """The mirror from an ``ls`` answer (pure): its containers, each with the
    newest snapshot. An event numbered after ``asked`` (it arrived while the
    answer was on its way) is newer than the answer; an earlier one is in it
    already (a ContainerActor tells the Coordinator before it publishes)."""
    mirror = {s.name: s for s in map(as_snapshot, answer)}
    for name in mirror:
        seq, snap = latest.get(name, (0, None))
        if seq > asked and snap is not None:
            mirror[name] = snap
    return mirror


class SnapshotMirror:
    def __init__(self, coordinator: CoordinatorRef) -> None:
        self.coordinator = coordinator
        self.snaps: dict[str, ContainerSnapshot] | None = None
        self.stale = True
        self.changes = 0
        # Every container.state event, numbered in arrival order: an ``ls``
        # answer is older than the events that arrive while it is on its way.
        self._seq = 0
        self._latest: dict[str, tuple[int, ContainerSnapshot]] = {}
        self._asking: asyncio.Future[None] | None = None

    def note(self, event: str, payload: SnapshotLike) -> str | None:
        """One hub event (in event order); the name of a container added or removed."""
        if event == "container.state":
            snap = as_snapshot(payload)
            self._seq += 1
            self._latest[snap.name] = (self._seq, snap)
            if self.snaps is not None and snap.name in self.snaps:  # a removed one's late event stays out
                self.snaps[snap.name] = snap
            return None
        if event == "tombstone.purged":
            self.changes += 1
            return None
        if event not in ("container.added", "container.removed"):
            return None
        self.stale = True
        self.changes += 1
        name = payload.name if isinstance(payload, ContainerSnapshot) else payload["name"]
        if event == "container.removed":
            self._latest.pop(name, None)
        return name

    async def snapshots(self) -> list[ContainerSnapshot]:
        """The mirror, asked after every container added or removed so far."""
        for _ in range(ASKS):
            if self.snaps is not None and not self.stale and self._asking is None:
                break
            if self._asking is None:
                self._asking = asyncio.ensure_future(self._ask())
            await asyncio.shield(self._asking)  # one caller cancelled is no cancelled ask for the others
        assert self.snaps is not None
        return list(self.snaps.values())

    async def _ask(self) -> None:
        self.stale = False
        asked = self._seq
        try:
            answer = await Handle(self.coordinator).ask(Coordinator.ls)
        except BaseException:
            self.stale = True
            raise
        finally:
            self._asking = None
        self.snaps = merge_snapshots(answer, self._latest, asked)
