"""Adoption in the actors (issue 16), in process: a daemon stopping with its
agents kept releases every container; the next Coordinator's boot adopts each
one still running instead of starting it (no kick), stops one whose desired
state is stopped, and supervises an adopted one like any other. The backend's
containers are real ``sleep`` processes that outlive the actors."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pykka
import pytest
from sleep_backend import NoSockets, SleepBackend, Sleeper
from support import async_wait_for, pid_alive
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.container_core import UNKNOWN_EXIT, Adopt, Backoff, ContainerCore, Kick, Start, describe_exit
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.events import ContainerCrash, Event, Hub
from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.backends.base import Backend, ExitCallback
from hyperhive.names import MANAGER, AgentName
from hyperhive.paths import StatePaths
from hyperhive.settings import Settings
from hyperhive.store.models import Container, Message, open_hive_db


def test_a_boot_start_adopts_and_only_a_fresh_start_is_kicked() -> None:
    core = ContainerCore(AgentName("a"), "builtin", Backoff())
    kick = "restarted with the host daemon"
    assert core.plan("start", kick, adopt=True) == (Adopt(kick),)
    assert core.plan("start", "started") == (Start(), Kick("started"))  # any other start: as before
    assert describe_exit(None) == UNKNOWN_EXIT == "exit status unknown (adopted)"
    gen = core.starting()
    core.started(100.0)
    crash = core.exited(gen, None, None, now=101.0)
    assert crash is not None and crash.event.exit == UNKNOWN_EXIT and core.last_exit == UNKNOWN_EXIT


class KeepingBackend(SleepBackend):
    """A released sleeper keeps running; ``adopt`` takes it over (a new watcher)."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: dict[str, Sleeper] = {}
        self.adopted: list[str] = []

    def release(self, handle: Sleeper) -> None:
        handle.asked.set()  # its first watcher says nothing any more
        self.kept[handle.name] = handle

    def adopt(self, name: AgentName, driver: str, on_exit: ExitCallback) -> Sleeper | None:
        old = self.kept.pop(name, None)
        if old is None or old.proc.poll() is not None:
            return None
        h = Sleeper(name, old.proc)

        def watch() -> None:
            h.proc.wait()
            if not h.asked.is_set():
                on_exit(None, None)  # not our child: the status is unknown

        h.watcher = threading.Thread(target=watch, daemon=True)
        h.watcher.start()
        self.adopted.append(name)
        return h


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.paths = StatePaths(tmp_path / "state")
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.db = open_hive_db(self.paths.db)
        self.hub = Hub()
        self.events: list[Event] = []
        self.hub.subscribe(self.events.append)
        self.clock = LoopClock(IOLoop.current())
        self.backend = KeepingBackend()
        self.broker = Broker.start(self.db, self.clock, self.hub).proxy()
        self.coordinator = self.new_coordinator()

    def new_coordinator(self) -> Handle[Coordinator]:
        backend: Backend[Sleeper] = self.backend
        settings = Settings(restart_backoff_seconds=0.01, restart_backoff_max_seconds=0.02)
        return Handle(Coordinator.start(settings, self.paths, backend, self.broker, self.clock, self.hub,
                                        NoSockets()).proxy())

    async def ls(self) -> dict[str, ContainerSnapshot]:
        return {s.name: s for s in await self.coordinator.ask(Coordinator.ls)}

    async def hand_over(self) -> None:
        """The daemon stopping with its agents kept, and the next one booting."""
        assert sorted(await self.coordinator.ask(Coordinator.release_all)) == sorted(await self.ls())
        self.coordinator.proxy.actor_ref.stop()
        self.backend.started.clear()
        self.coordinator = self.new_coordinator()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    assert await w.coordinator.ask(Coordinator.boot) == [MANAGER]
    yield w
    pykka.ActorRegistry.stop_all()
    for h in w.backend.kept.values():
        h.proc.kill()
        h.proc.wait()
    w.db.close()


def kicks(agent: str) -> int:
    return int(Message.select().where((Message.recipient == agent) & (Message.sender == "system")).count())


async def test_a_released_fleet_is_adopted_at_the_next_boot_unkicked(world: World) -> None:
    await world.coordinator.ask(Coordinator.spawn, "alice", kick="hello")
    await async_wait_for(lambda: kicks("alice") == 1, interval=0.002, what="the spawn's kick stored")
    before = {n: s.pid for n, s in (await world.ls()).items()}
    sent = {n: kicks(n) for n in before}
    await world.hand_over()
    assert all(pid is not None and pid_alive(pid) for pid in before.values())  # left running
    assert await world.coordinator.ask(Coordinator.boot) == [MANAGER, "alice"]
    now = await world.ls()
    assert {n: s.pid for n, s in now.items()} == before and all(s.state == "running" for s in now.values())
    assert world.backend.started == [] and sorted(world.backend.adopted) == ["alice", MANAGER]
    assert {n: kicks(n) for n in before} == sent  # nothing happened to them: no kick

    pid = before["alice"]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # an adopted harness crashing: supervised as any other

    async def restarted() -> bool:
        s = (await world.ls())["alice"]
        return s.state == "running" and s.restarts == 1 and s.pid != pid

    await async_wait_for(restarted, interval=0.002, what="alice restarted after her crash")
    crash = next(e for e in world.events if isinstance(e, ContainerCrash))
    assert crash.exit == UNKNOWN_EXIT and world.backend.started == ["alice"]


async def test_a_harness_left_running_whose_desired_state_is_stopped_is_stopped(world: World) -> None:
    await world.coordinator.ask(Coordinator.spawn, "alice")
    pid = (await world.ls())["alice"].pid
    await world.hand_over()
    Container.update(desired="stopped").where(Container.name == "alice").execute()  # as a stop killed mid-way
    assert await world.coordinator.ask(Coordinator.boot) == [MANAGER]
    assert pid is not None
    await async_wait_for(lambda: not pid_alive(pid), interval=0.002, what="alice's orphan stopped")
    assert (await world.ls())["alice"].state == "stopped" and world.backend.adopted == [MANAGER, "alice"]
