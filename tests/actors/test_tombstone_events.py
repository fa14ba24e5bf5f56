"""A purge tells the hub (``tombstone.purged``), so an open dashboard pushes its
tombstones section at once: before, nothing did, and the page dropped a purged
tombstone only at its 5 s ``/api/state`` heartbeat (the browser test waited 5 s
for it, and lost about one run in six). In process: the real Coordinator on a
real sqlite file and state dir, ``sleep`` processes for containers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pykka
import pytest
from test_coordinator_actor import World as CoordinatorWorld

from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.events import ContainerRemoved, Event, TombstonePurged
from hyperhive.names import MANAGER
from hyperhive.web.dashboard.push import sections_for


class World(CoordinatorWorld):
    """test_coordinator_actor's world (a real Coordinator, sqlite file and state dir), with
    the removal and purge events of one agent."""

    def kinds(self, agent: str) -> list[type[Event]]:
        return [type(e) for e in self.events if isinstance(e, ContainerRemoved | TombstonePurged) and e.agent == agent]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    assert await w.coordinator.ask(Coordinator.boot) == [MANAGER]
    yield w
    pykka.ActorRegistry.stop_all()
    w.db.close()


def test_a_purge_makes_the_tombstones_section_stale() -> None:
    assert sections_for(TombstonePurged.name, TombstonePurged("erin").payload()) == ("tombstones",)
    assert TombstonePurged("erin").payload() == {"name": "erin"}


async def test_purging_a_tombstone_is_published(world: World) -> None:
    await world.coordinator.ask(Coordinator.spawn, "erin")
    await world.coordinator.ask(Coordinator.destroy_agent, "erin")  # kept: a tombstone, nothing purged
    assert world.kinds("erin") == [ContainerRemoved]
    out = await world.coordinator.ask(Coordinator.purge_tombstone, "erin", True)
    assert out["purged"] and not (world.paths.agents / "erin").exists()
    assert world.kinds("erin") == [ContainerRemoved, TombstonePurged]


async def test_destroy_with_purge_publishes_the_purge_after_the_removal(world: World) -> None:
    """``container.removed`` goes out before the dirs are removed (a listing then
    may still see them): the purge's own event comes after, with them gone."""
    await world.coordinator.ask(Coordinator.spawn, "dora")
    seen: list[bool] = []
    world.hub.subscribe(lambda e: seen.append((world.paths.agents / "dora").exists())
                        if isinstance(e, TombstonePurged) else None)
    out = await world.coordinator.ask(Coordinator.destroy_agent, "dora", True, True)
    assert out["purged"]
    assert world.kinds("dora") == [ContainerRemoved, TombstonePurged] and seen == [False]
