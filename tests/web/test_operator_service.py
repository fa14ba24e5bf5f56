"""The operator service against real actors started in this process (Broker,
SendBatcher, Questions, Approvals, a Coordinator with no container), on a
real sqlite file: reply shapes, ``more`` counts, and refusals that come from
the actors. No daemon, no harness."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from tornado.ioloop import IOLoop

from hyperhive.actors.approvals import Approvals
from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.events import Hub
from hyperhive.actors.questions import Questions
from hyperhive.backends.local import LocalBackend
from hyperhive.errors import HiveError
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.settings import Settings
from hyperhive.store.models import Message, open_hive_db
from hyperhive.web.operator import agents, gate, messages
from hyperhive.web.operator.lifecycle import lifecycle_action
from hyperhive.web.rpc.sockets import AgentSockets
from hyperhive.web.tables.sends import SendBatcher


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.paths = StatePaths(tmp_path / "state")
        self.paths.root.mkdir(parents=True)
        self.db = open_hive_db(self.paths.db)
        io_loop = IOLoop.current()
        clock = LoopClock(io_loop)
        hub = Hub()
        self.broker: Any = Broker.start(self.db, clock, hub).proxy()
        self.sends = SendBatcher(self.broker)
        self.questions: Any = Questions.start(self.broker, clock, hub).proxy()
        sockets = AgentSockets(io_loop, self.paths, lambda name, manager: {}, recv_cap=30.0)
        self.coordinator: Any = Coordinator.start(
            Settings(state_dir=self.paths.root, sandbox="off"), self.paths,
            LocalBackend(self.paths, "off", cgroups=False), self.broker, clock, hub, sockets).proxy()
        self.approvals: Any = Approvals.start(self.paths, self.coordinator, self.broker, hub).proxy()

    def close(self) -> None:
        pykka.ActorRegistry.stop_all()
        self.db.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    for name in ("operator", "alice"):
        await Handle(w.broker).ask(Broker.register, name, None)
    yield w
    w.close()


async def refused(work: Any) -> str:
    with pytest.raises(HiveError) as err:
        await work
    return err.value.code


async def test_send_then_the_inbox_says_how_many_it_left_out(world: World) -> None:
    sent = await messages.send(world.sends, "alice", "from the operator")
    assert Message.get_by_id(sent["message_id"]).sender == "operator"
    ids = [await Handle(world.broker).ask(Broker.send, "alice", "operator", f"note {i}") for i in range(5)]
    out = await messages.inbox(world.broker, 3)
    assert [m["body"] for m in out["messages"]] == ["note 2", "note 3", "note 4"]
    assert out["more"] == 2
    assert Message.get_by_id(ids[-1]).delivered_at is not None  # the inbox marks read
    assert (await messages.inbox(world.broker, 50))["more"] == 0
    assert await messages.mark_read(world.broker) == {"marked": 0}


async def test_send_refuses_before_anything_is_stored(world: World) -> None:
    for to, body, code in (("alice", "", "bad_request"), ("alice", "x" * (64 * 1024 + 1), "bad_request"),
                           ("../x", "hi", "bad_name"), ("nobody", "hi", "unknown_agent")):
        assert await refused(messages.send(world.sends, to, body)) == code, (to, body[:10])
    assert Message.select().count() == 0
    assert (await messages.send(world.sends, "alice", "x" * (64 * 1024)))["message_id"] == 1


async def test_questions_list_counts_the_resolved_it_left_out(world: World) -> None:
    qids = [(await gate.ask_operator(world.questions, "alice", f"q{i}?", []))["question_id"] for i in range(22)]
    for qid in qids[:21]:
        assert (await gate.cancel_question(world.questions, str(qid)))["question"]["how"] == "cancelled"
    out = await gate.questions(world.questions)
    assert [q["id"] for q in out["pending"]] == [qids[21]]
    assert len(out["resolved"]) == 20 and out["more"] == 1
    answered = await gate.answer(world.questions, qids[21], [], "yes")
    assert answered["question"]["answer"] == "yes"
    assert await refused(gate.answer(world.questions, 999, [], "x")) == "unknown_id"
    assert await refused(gate.cancel_question(world.questions, "abc")) == "bad_request"


async def test_approvals_list_counts_the_decided_it_left_out(world: World) -> None:
    aids = [(await gate.request_spawn(world.approvals, "operator", f"a{i}"))["approval_id"] for i in range(22)]
    for aid in aids:
        out = await gate.deny(world.approvals, str(aid), "  not now ")
        assert (out["approval"]["status"], out["approval"]["reason"]) == ("denied", "not now")
    listed = await gate.approvals(world.approvals)
    assert listed["pending"] == [] and len(listed["decided"]) == 20 and listed["more"] == 2
    assert await refused(gate.approve(world.approvals, 999)) == "unknown_id"
    assert await refused(gate.deny(world.approvals, "1.5")) == "bad_request"
    assert await refused(gate.request_spawn(world.approvals, "operator", "operator")) == "bad_name"
    assert await refused(gate.request_spawn(world.approvals, "operator", "bo", ["../x"])) == "bad_name"
    assert await refused(gate.request_spawn(world.approvals, "operator", "bo", None, "gpt")) == "bad_request"


async def test_agent_verbs_on_an_empty_hive(world: World) -> None:
    assert await agents.ls(world.coordinator, world.broker) == {"containers": [], "more": 0}
    assert await refused(agents.destroy(world.coordinator, "ghost")) == "unknown_agent"
    assert await refused(agents.destroy(world.coordinator, "m1nd")) == "conflict"
    assert await refused(agents.destroy(world.coordinator, "a/b")) == "bad_name"
    for verb in ("start", "stop", "restart", "rebuild", "kill"):
        assert await refused(lifecycle_action(world.coordinator, verb, "ghost", "operator")) == "unknown_agent"
        assert await refused(lifecycle_action(world.coordinator, verb, "..", "operator")) == "bad_name"
    assert await refused(lifecycle_action(world.coordinator, "restart", "m1nd", "m1nd")) == "forbidden"
    assert await refused(agents.revive(world.approvals, "ghost")) == "unknown_agent"


async def test_a_tombstone_is_listed_revived_and_purged(world: World) -> None:
    world.paths.create_agent(AgentName("kept"), AgentConfig())
    stones = await agents.tombstones(world.coordinator)
    assert [t["name"] for t in stones["tombstones"]] == ["kept"] and stones["more"] == 0
    assert isinstance((await agents.revive(world.approvals, "kept"))["approval_id"], int)
    out = await agents.purge(world.coordinator, "kept")
    assert out["name"] == "kept" and out["purged"]
    assert (await agents.tombstones(world.coordinator))["tombstones"] == []
