"""The dashboard's Pusher on the test's real Tornado IOLoop, with a real
Broker and Questions on a temp sqlite file behind its StateSource: the events
of one loop turn become one patch, container.state rows coalesce (the newest
wins), and every event reaches the extra listener (the metrics) on the loop."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from support import async_wait_for
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import (
    ContainerState,
    Event,
    Hub,
    MessageSent,
    QuestionAsked,
    VacuumSwept,
)
from hyperhive.actors.questions import Questions
from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.store.models import open_hive_db
from hyperhive.web.dashboard.push import Pusher
from hyperhive.web.dashboard.state import StateSource


class Client:
    """Where a websocket's ``write_message`` would send: kept, decoded."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []

    def write_message(self, data: str) -> None:
        self.got.append(json.loads(data))


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.paths = StatePaths(tmp_path / "state")
        for name in ("alice", "bob"):
            self.paths.create_agent(AgentName(name), AgentConfig())
        self.db = open_hive_db(self.paths.db)
        self.loop = IOLoop.current()
        clock = LoopClock(self.loop)
        self.hub = Hub()
        broker = Broker.start(self.db, clock, self.hub).proxy()
        self.broker = Handle(broker)
        questions = Questions.start(broker, clock, self.hub).proxy()
        self.questions = Handle(questions)
        self.source = StateSource(self.paths, None, broker, questions, None)
        self.seen: list[tuple[str, bool]] = []  # the extra listener: event name, on the loop's thread?
        loop_thread = threading.get_ident()
        self.pusher = Pusher(self.loop, self.source,
                             lambda e: self.seen.append((e.name, threading.get_ident() == loop_thread)))
        self.client = Client()
        self.pusher.clients.add(self.client)  # type: ignore[arg-type]  # a websocket's write side
        self.hub.subscribe(self.pusher.on_event)

    def publish_from_a_thread(self, *events: Event) -> float:
        """Publish as an actor does, from its own thread; all before the loop's next turn."""
        at = time.time()
        def publish() -> None:
            for e in events:
                self.hub.publish(e)

        t = threading.Thread(target=publish)
        t.start()
        t.join()
        return at

    def close(self) -> None:
        pykka.ActorRegistry.stop_all()
        self.db.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def snap(name: str, state: str = "running", **kw: Any) -> ContainerSnapshot:
    return ContainerSnapshot(name=name, role="agent", state=state, **kw)  # type: ignore[arg-type]


def row(i: int, to: str) -> dict[str, Any]:
    return {"id": i, "from": "alice", "to": to, "body": f"m{i}", "sent_at": 1.0, "delivered_at": None}


async def test_one_loop_turn_of_events_is_one_patch(world: World) -> None:
    before = world.publish_from_a_thread(
        MessageSent(row(1, "bob")), MessageSent(row(2, "operator")), QuestionAsked({"id": 1}),
        VacuumSwept(0))  # VacuumSwept stales no section
    await async_wait_for(lambda: world.client.got, what="a patch")
    [patch] = world.client.got
    assert patch["type"] == "patch" and before <= patch["at"] <= time.time()
    assert set(patch["sections"]) == {"flow", "inbox", "questions"} and "rows" not in patch
    assert [m["id"] for m in patch["sections"]["flow"]] == [2, 1]  # the flow keeps the sent rows, newest first
    assert world.seen == [("message.sent", True), ("message.sent", True), ("question.asked", True),
                          ("vacuum.swept", True)]
    # The next turn's event is a patch of its own, with only its section.
    world.publish_from_a_thread(MessageSent(row(3, "bob")))
    await async_wait_for(lambda: len(world.client.got) == 2, what="the second patch")
    assert set(world.client.got[1]["sections"]) == {"flow"}


async def test_container_state_rows_coalesce_to_the_newest(world: World) -> None:
    world.publish_from_a_thread(
        ContainerState(snap("alice", "stopped", transient="starting")),
        ContainerState(snap("bob", "stopped")),
        ContainerState(snap("alice", "running", pid=42, restarts=1)))
    await async_wait_for(lambda: world.client.got, what="a patch")
    [patch] = world.client.got
    assert patch["sections"] == {}  # no section rebuilt: the rows say it all
    rows = {r["name"]: r for r in patch["rows"]}
    assert set(rows) == {"alice", "bob"}
    assert (rows["alice"]["state"], rows["alice"]["pid"], rows["alice"]["restarts"], rows["alice"]["transient"]) == (
        "running", 42, 1, None)
    assert rows["bob"]["state"] == "stopped"


async def test_touch_pushes_the_named_sections(world: World) -> None:
    await world.broker.ask(Broker.register, "alice", None)
    await world.questions.ask(Questions.ask, "alice", "which?", ["a", "b"])  # published: questions
    await async_wait_for(lambda: world.client.got, what="the question's patch")
    world.pusher.touch("inbox")
    await async_wait_for(lambda: len(world.client.got) == 2, what="the touch's patch")
    assert set(world.client.got[1]["sections"]) == {"inbox"}
    assert world.client.got[0]["sections"]["questions"]["pending"][0]["question"] == "which?"


async def test_no_clients_no_patch_and_the_listener_still_counts(world: World) -> None:
    world.pusher.clients.clear()
    world.publish_from_a_thread(QuestionAsked({"id": 1}))
    # No page open: the loop is not woken for it (issue 17); the event waits to be taken in.
    assert not world.pusher._wake_pending and world.seen == []  # noqa: SLF001
    world.pusher.drain()  # as /metrics and /api/state do before they answer
    assert world.seen == [("question.asked", True)]
    world.pusher.idle_drain = 0.01
    world.pusher.start()  # and once in a while, page or not
    world.publish_from_a_thread(QuestionAsked({"id": 2}))
    await async_wait_for(lambda: len(world.seen) == 2, what="the idle drain")
    world.pusher.close()
    later = Client()
    world.pusher.clients.add(later)  # type: ignore[arg-type]
    world.publish_from_a_thread(VacuumSwept(1))  # stales nothing: nothing to send
    world.publish_from_a_thread(MessageSent(row(2, "bob")))
    await async_wait_for(lambda: later.got, what="a patch for the new client")
    assert [set(p["sections"]) for p in later.got] == [{"flow"}]  # the question went with no client


async def test_a_commit_s_replies_and_its_hub_events_wake_the_loop_once(world: World) -> None:
    # issue 17: the Broker hands a commit's replies and the pusher's wake-up over together.
    import asyncio

    from support import Wakes

    from hyperhive.actors.bridge import call

    for name in ("alice", "bob"):
        await world.broker.ask(Broker.register, name, None)
    recv = asyncio.ensure_future(world.broker.ask(Broker.recv, "bob", 5.0, False))
    deadline = time.monotonic() + 5
    while not (await world.broker.ask(Broker.stats))["parked"].get("bob"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    wakes = Wakes(asyncio.get_running_loop())
    try:
        ids = await call(world.broker.proxy.send_many, [("alice", "bob", "one"), ("alice", "bob", "two")])
        rows = await recv
        await async_wait_for(lambda: any(p.get("type") == "patch" for p in world.client.got), what="a patch")
    finally:
        wakes.restore()
    assert [r.body for r in rows] == ["one", "two"] and sorted(ids) == [r.id for r in rows]
    assert wakes.off_thread == 1  # the batch's reply, the recv and the pusher's drain: one wake-up
