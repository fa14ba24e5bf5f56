"""The Coordinator and its ContainerActors in process (the shells over their
cores): the real Broker on a real sqlite file and state dir, the test's IOLoop
as the clock, and a backend whose containers are real ``sleep`` processes
that report an exit nobody asked for, like the real backends do."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pykka
import pytest
from sleep_backend import NoSockets, SleepBackend, Sleeper
from support import async_wait_for
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.events import ContainerCrash, ContainerKilled, ContainerRemoved, ContainerState, Event, Hub
from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.backends.base import Backend
from hyperhive.names import MANAGER
from hyperhive.paths import StatePaths
from hyperhive.settings import Settings
from hyperhive.store.models import Container, Message, open_hive_db


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.paths = StatePaths(tmp_path / "state")
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.db = open_hive_db(self.paths.db)
        self.hub = Hub()
        self.events: list[Event] = []
        self.hub.subscribe(self.events.append)
        self.clock = LoopClock(IOLoop.current())
        self.backend = SleepBackend()
        self.broker = Broker.start(self.db, self.clock, self.hub).proxy()
        self.coordinator = self.new_coordinator()

    def new_coordinator(self) -> Handle[Coordinator]:
        backend: Backend[Sleeper] = self.backend
        settings = Settings(restart_backoff_seconds=0.01, restart_backoff_max_seconds=0.02)
        return Handle(Coordinator.start(settings, self.paths, backend, self.broker, self.clock, self.hub,
                                        NoSockets()).proxy())

    async def ls(self) -> dict[str, ContainerSnapshot]:
        return {s.name: s for s in await self.coordinator.ask(Coordinator.ls)}

    def system_events(self, to: str = MANAGER) -> list[dict[str, object]]:
        rows = Message.select().where((Message.recipient == to) & (Message.sender == "system"))
        return [json.loads(m.body) for m in rows.order_by(Message.id) if m.body.startswith("{")]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    assert await w.coordinator.ask(Coordinator.boot) == [MANAGER]  # first start: the manager is made
    yield w
    pykka.ActorRegistry.stop_all()
    w.db.close()


async def test_boot_spawn_and_the_desired_state_across_a_restart(world: World) -> None:
    snap = await world.coordinator.ask(Coordinator.spawn, "alice")
    assert (snap["name"], snap["state"], snap["transient"]) == ("alice", "running", None)
    await world.coordinator.ask(Coordinator.spawn, "bob")
    await world.coordinator.ask(Coordinator.stop_agent, "bob")
    ls = await world.ls()
    assert list(ls) == [MANAGER, "alice", "bob"]
    assert (ls[MANAGER].role, ls["alice"].state, ls["bob"].state) == ("manager", "running", "stopped")
    assert {r.name: r.desired for r in Container.select()} == {MANAGER: "running", "alice": "running",
                                                               "bob": "stopped"}
    kinds = [e.snapshot.transient for e in world.events
             if isinstance(e, ContainerState) and e.snapshot.name == "bob"]
    assert kinds[0] == "spawning" and "stopping" in kinds and kinds[-1] is None
    # The daemon again: only the running ones start.
    world.coordinator.proxy.actor_ref.stop()
    world.backend.started.clear()
    world.coordinator = world.new_coordinator()
    assert await world.coordinator.ask(Coordinator.boot) == [MANAGER, "alice"]  # in creation order
    assert sorted(world.backend.started) == ["alice", MANAGER] and (await world.ls())["bob"].state == "stopped"


async def test_a_crash_is_reported_to_the_manager_and_restarted(world: World) -> None:
    await world.coordinator.ask(Coordinator.spawn, "alice")
    first = (await world.ls())["alice"]
    assert first.pid is not None
    subprocess.run(["kill", "-9", str(first.pid)], check=True)

    async def restarted() -> bool:
        s = (await world.ls())["alice"]
        return s.state == "running" and s.restarts == 1

    await async_wait_for(restarted, interval=0.002, what="alice restarted after her crash")
    crashes = [e for e in world.events if isinstance(e, ContainerCrash)]
    assert crashes == [ContainerCrash("alice", "killed by SIGKILL", "crash", 0.01)]
    assert [m for m in world.system_events() if m["event"] == "ContainerCrash"] == [crashes[0].payload()]
    now = (await world.ls())["alice"]
    assert now.pid != first.pid and now.last_exit == "killed by SIGKILL"
    kicks = Message.select().where((Message.recipient == "alice") & (Message.body.contains("after a crash")))
    await async_wait_for(lambda: kicks.count() == 1, interval=0.002, what="the kick after the restart")


async def test_kill_tells_the_manager_and_destroy_removes_the_container(world: World) -> None:
    await world.coordinator.ask(Coordinator.spawn, "alice")
    snap = await world.coordinator.ask(Coordinator.kill_agent, "alice", "operator")
    assert (snap["state"], snap["last_exit"]) == ("stopped", "killed by SIGKILL")
    assert [e for e in world.events if isinstance(e, ContainerKilled)] == [ContainerKilled("alice", "operator", True)]
    await async_wait_for(lambda: any(m["event"] == "Killed" for m in world.system_events()), interval=0.002,
                         what="Killed")
    assert not any(isinstance(e, ContainerCrash) for e in world.events)  # asked for: no crash
    out = await world.coordinator.ask(Coordinator.destroy_agent, "alice")
    assert out == {"name": "alice", "state": "destroyed", "purged": []}
    assert world.backend.destroyed == ["alice"] and "alice" not in await world.ls()
    assert not await world.coordinator.ask(Coordinator.has_agent, "alice")
    assert any(isinstance(e, ContainerRemoved) for e in world.events)
