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
from sleep_backend import NoSockets, SleepBackend
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.events import ContainerRemoved, Event, Hub, TombstonePurged
from hyperhive.names import MANAGER
from hyperhive.paths import StatePaths
from hyperhive.settings import Settings
from hyperhive.store.models import open_hive_db
from hyperhive.web.dashboard.push import sections_for


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.paths = StatePaths(tmp_path / "state")
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.db = open_hive_db(self.paths.db)
        self.hub = Hub()
        self.events: list[Event] = []
        self.hub.subscribe(self.events.append)
        clock = LoopClock(IOLoop.current())
        broker = Broker.start(self.db, clock, self.hub).proxy()
        self.coordinator = Handle(Coordinator.start(Settings(), self.paths, SleepBackend(), broker, clock, self.hub,
                                                    NoSockets()).proxy())

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
