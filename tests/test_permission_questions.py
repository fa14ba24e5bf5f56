"""Permission questions in the Questions actor (issue 14, item 3), on a real
sqlite file, the real Broker and the test's IOLoop: the parked op gets the
CLI's answer when the question resolves; a granted tool is allowed at once;
grants persist in the daemon's own file and can be revoked; nothing reaches
the asker's inbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from support import async_wait_for, wait_for
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import Handle, call
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import ContainerRemoved, Hub
from hyperhive.actors.grants import GRANTS_FILE, GrantStore
from hyperhive.actors.permission_core import ANNOUNCE_GRACE
from hyperhive.actors.questions import Questions, TtlTimer
from hyperhive.errors import BadRequest
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.store.models import Message, Question, open_hive_db
from hyperhive.web.operator import gate, permissions


class World:
    def __init__(self, tmp_path: Path, announce_grace: float = ANNOUNCE_GRACE) -> None:
        self.announce_grace = announce_grace
        self.paths = StatePaths(tmp_path / "state")
        self.paths.root.mkdir()
        self.paths.create_agent("alice", AgentConfig())  # type: ignore[arg-type]
        self.db = open_hive_db(self.paths.db, synchronous="normal")  # no fsync per commit: nothing here crashes
        self.clock = LoopClock(IOLoop.current())
        self.hub = Hub()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.hub.subscribe(lambda e: self.events.append((e.name, e.payload())))
        self.broker = Broker.start(self.db, self.clock, self.hub).proxy()
        self.questions: Any = None

    async def start_questions(self) -> Any:
        await call(self.broker.register, "alice", None)
        self.questions = Questions.start(self.broker, self.clock, self.hub, GrantStore(self.paths),
                                         announce_grace=self.announce_grace).proxy()
        await call(self.questions.rearm)
        return self.questions

    def close(self) -> None:
        # The Questions actor first, then wait for its timers to go: stop_all racing a timer that is
        # already stopping can hang for good (pykka may queue the stop after the timer's last look at
        # its inbox), and a test may end with cancelled asks still being abandoned.
        if self.questions is not None:
            self.questions.actor_ref.stop()
        wait_for(lambda: not pykka.ActorRegistry.get_by_class(TtlTimer), timeout=5, interval=0.001,
                 what="the timers stopped")
        pykka.ActorRegistry.stop_all()
        self.db.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    await w.start_questions()
    yield w
    w.close()


def _ask(w: World, tool: str = "Bash", inp: dict[str, Any] | None = None,
         ttl: float = 60) -> asyncio.Task[dict[str, Any]]:
    raw = json.dumps(inp if inp is not None else {"command": "touch /w/x"})
    return asyncio.ensure_future(permissions.permission(w.questions, "alice", tool, raw, "toolu_1", ttl))


async def _one_pending(w: World) -> dict[str, Any]:
    async def get() -> list[dict[str, Any]]:
        return list((await gate.questions(w.questions))["pending"])
    for _ in range(1000):
        p = await get()
        if p:
            return p[0]
        await asyncio.sleep(0.002)
    raise AssertionError("no pending question")


async def test_allow_resolves_the_parked_op_and_nothing_goes_to_the_inbox(world: World) -> None:
    task = _ask(world)
    q = await _one_pending(world)
    assert q["kind"] == "permission" and q["question"] == "`alice` wants to run Bash: `touch /w/x`"
    assert q["permission"] == {"tool_name": "Bash", "tool_use_id": "toolu_1",
                               "shown": {"kind": "command", "text": "touch /w/x", "description": ""}}
    assert not task.done()
    await gate.answer(world.questions, q["id"], ["allow"], "")
    out = await asyncio.wait_for(task, 5)
    assert out == {"decision": {"behavior": "allow", "updatedInput": {"command": "touch /w/x"}},
                   "question_id": q["id"]}
    assert Message.select().where(Message.recipient == "alice").count() == 0
    assert [n for n, _ in world.events if n.startswith("question.")] == ["question.asked", "question.resolved"]
    assert (await permissions.grants(world.questions, "alice"))["tools"] == []


async def test_deny_with_a_reason_and_expiry_deny(world: World) -> None:
    task = _ask(world)
    q = await _one_pending(world)
    await gate.answer(world.questions, q["id"], ["deny"], "not now")
    assert (await task)["decision"] == {"behavior": "deny", "message": "the operator denied this Bash call: not now"}
    task = _ask(world, ttl=0.02)
    out = await asyncio.wait_for(task, 5)
    assert out["decision"]["behavior"] == "deny" and "did not answer in time" in out["decision"]["message"]
    row = Question.get_by_id(out["question_id"])
    assert (row.how, row.answer) == ("expired", "deny")


async def test_cancel_denies_and_a_caller_that_leaves_cancels_its_question(world: World) -> None:
    task = _ask(world)
    q = await _one_pending(world)
    await gate.cancel_question(world.questions, q["id"])
    assert (await task)["decision"]["behavior"] == "deny"
    task = _ask(world)
    q = await _one_pending(world)
    task.cancel()  # the agent's connection closed (its turn was cancelled)
    await async_wait_for(lambda: Question.get_by_id(q["id"]).how == "cancelled", interval=0.002,
                         what="the abandoned question")
    assert "stopped waiting" in Question.get_by_id(q["id"]).answer


async def test_from_now_on_grants_persist_allow_at_once_and_revoke(world: World) -> None:
    task = _ask(world)
    q = await _one_pending(world)
    await gate.answer(world.questions, q["id"], ["allow Bash from now on"], "")
    assert (await task)["decision"]["behavior"] == "allow"
    file = world.paths.agent("alice") / GRANTS_FILE  # type: ignore[arg-type]
    assert json.loads(file.read_text()) == ["Bash"]
    assert not (world.paths.state("alice") / GRANTS_FILE).exists()  # type: ignore[arg-type]
    # Granted: the next call is allowed with no question.
    out = await asyncio.wait_for(_ask(world, inp={"command": "rm -rf /tmp/x"}), 5)
    assert out == {"decision": {"behavior": "allow", "updatedInput": {"command": "rm -rf /tmp/x"}},
                   "question_id": None}
    assert Question.select().count() == 1
    assert (await Handle(world.questions).ask(Questions.list))["grants"] == {"alice": ["Bash"]}
    assert "grants" not in await gate.questions(world.questions)  # the operator verb's shape stays
    # Another tool is still asked about.
    other = _ask(world, tool="Write", inp={"file_path": "/w/f", "content": "x"})
    q = await _one_pending(world)
    assert q["question"] == "`alice` wants to write /w/f (Write):\nx"
    await gate.answer(world.questions, q["id"], [], "no writes")
    assert (await other)["decision"]["behavior"] == "deny"

    # The grants survive a restart of the actor (a new daemon reads the file).
    world.questions.actor_ref.stop()
    await world.start_questions()
    assert (await permissions.grants(world.questions, "alice"))["tools"] == ["Bash"]
    out = await permissions.revoke_tool(world.questions, "alice", "Bash")
    assert out == {"agent": "alice", "tool": "Bash", "revoked": True, "tools": []}
    assert json.loads(file.read_text()) == []
    assert (await permissions.revoke_tool(world.questions, "alice", "Bash"))["revoked"] is False
    task = _ask(world)
    await _one_pending(world)  # asked again
    task.cancel()


async def test_a_purged_agent_s_grants_are_gone_for_its_successor(world: World) -> None:
    store_file = world.paths.agent("alice") / GRANTS_FILE  # type: ignore[arg-type]
    task = _ask(world)
    q = await _one_pending(world)
    await gate.answer(world.questions, q["id"], ["allow Bash from now on"], "")
    await task
    store_file.unlink()  # purged (the whole agents/alice goes)
    world.hub.publish(ContainerRemoved("alice"))
    for _ in range(500):
        if (await permissions.grants(world.questions, "alice"))["tools"] == []:
            break
        await asyncio.sleep(0.002)
    assert (await permissions.grants(world.questions, "alice"))["tools"] == []


async def test_bad_requests_change_nothing(world: World) -> None:
    for tool, raw, use in (("Bash(x)", "{}", ""), ("Bash", "[1]", ""), ("Bash", "not json", ""),
                           ("Bash", "{}", "x" * 300), ("Bash", 5, "")):
        with pytest.raises(BadRequest):
            await permissions.permission(world.questions, "alice", tool, raw, use, 60)
    with pytest.raises(BadRequest):
        await permissions.revoke_tool(world.questions, "../x", "Bash")
    with pytest.raises(BadRequest):
        await permissions.revoke_tool(world.questions, "alice", "Bash,Edit")
    assert Question.select().count() == 0


async def test_a_permission_question_left_by_a_restart_is_cancelled_at_boot(world: World) -> None:
    task = _ask(world)
    q = await _one_pending(world)
    world.questions.actor_ref.stop()  # the daemon went down with the CLI waiting
    assert not world.questions.actor_ref.is_alive()
    await async_wait_for(lambda: not pykka.ActorRegistry.get_by_class(TtlTimer), interval=0.002,
                         what="its question's timer stopped")
    task.cancel()  # its connection went with the old daemon
    await world.start_questions()
    row = Question.get_by_id(q["id"])
    assert (row.how, row.answer) == ("cancelled", "[cancelled: the daemon restarted]")


async def test_an_agent_cannot_bury_the_operator_in_questions(world: World) -> None:
    from hyperhive.actors.questions import MAX_PENDING_PERMISSIONS
    from hyperhive.errors import Conflict

    tasks = [_ask(world, inp={"command": f"echo {i}"}) for i in range(MAX_PENDING_PERMISSIONS)]
    for _ in range(1500):
        if len((await gate.questions(world.questions))["pending"]) == MAX_PENDING_PERMISSIONS:
            break
        await asyncio.sleep(0.002)
    with pytest.raises(Conflict):
        await permissions.permission(world.questions, "alice", "Bash", "{}", "", 60)
    assert len((await gate.questions(world.questions))["pending"]) == MAX_PENDING_PERMISSIONS
    for t in tasks:
        t.cancel()


async def test_a_big_input_is_denied_unasked_and_one_that_fits_is_shown_whole(world: World) -> None:
    # Review 14: the operator never allows a call they could not read whole.
    inp = {"file_path": "/w/big.txt", "content": "x" * 200_000}
    out = await asyncio.wait_for(_ask(world, tool="Write", inp=inp), 5)
    assert out["question_id"] is None and out["decision"]["behavior"] == "deny"
    assert "too long to show the operator whole" in out["decision"]["message"]
    assert Question.select().count() == 0
    inp = {"file_path": "/w/fits.txt", "content": "x" * 6000}
    task = _ask(world, tool="Write", inp=inp)
    q = await _one_pending(world)
    assert q["permission"]["shown"] == {"kind": "content", "file": "/w/fits.txt", "text": "x" * 6000}
    await gate.answer(world.questions, q["id"], ["allow"], "")
    assert (await task)["decision"] == {"behavior": "allow", "updatedInput": inp}
