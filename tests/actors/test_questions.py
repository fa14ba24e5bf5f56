"""The Questions actor and its TtlTimers, on a real sqlite file, the real
Broker and the test's IOLoop as the clock."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from support import async_wait_for
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import call
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import Hub
from hyperhive.actors.questions import Questions, TtlTimer
from hyperhive.actors.questions_core import countdown_chip, merge_answer
from hyperhive.errors import BadRequest, UnknownId
from hyperhive.store.models import Message, Question, open_hive_db


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "hive.sqlite"
        self.db = open_hive_db(self.path)
        self.clock = LoopClock(IOLoop.current())
        self.hub = Hub()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.hub.subscribe(lambda e: self.events.append((e.name, e.payload())))
        self.broker = Broker.start(self.db, self.clock, self.hub).proxy()
        self.questions: Any = None

    async def start_questions(self) -> Any:
        await call(self.broker.register, "m1nd", None)
        self.questions = Questions.start(self.broker, self.clock, self.hub).proxy()
        await call(self.questions.rearm)
        return self.questions

    def stop_questions(self) -> None:
        self.questions.actor_ref.stop()

    def answered(self) -> list[dict[str, Any]]:
        rows = Message.select().where((Message.recipient == "m1nd") & (Message.sender == "system")).order_by(Message.id)
        return [json.loads(m.body) for m in rows]

    def close(self) -> None:
        pykka.ActorRegistry.stop_all()
        self.db.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    await w.start_questions()
    yield w
    w.close()


async def test_ask_returns_the_id_and_answer_merges_options_and_text(world: World) -> None:
    q = world.questions
    qid = await call(q.ask, "m1nd", "which?", ["opt1", "opt2", "opt3"], True)
    assert isinstance(qid, int)
    out = await call(q.answer, qid, ["opt2", "opt1"], "  text ")
    assert (out["how"], out["answer"]) == ("answered", "opt1, opt2, text")
    await async_wait_for(world.answered, what="OperatorAnswered")
    assert world.answered() == [
        {"event": "OperatorAnswered", "id": qid, "question": "which?", "answer": "opt1, opt2, text", "how": "answered"}
    ]
    # A later cancel is a no-op: same outcome, no second event.
    again = await call(q.cancel, qid)
    assert (again["how"], again["answer"]) == ("answered", "opt1, opt2, text")
    assert len(world.answered()) == 1
    assert [n for n, _ in world.events if n.startswith("question.")] == ["question.asked", "question.resolved"]


async def test_cancel_resolves_with_cancelled(world: World) -> None:
    qid = await call(world.questions.ask, "m1nd", "go?", [], False)
    out = await call(world.questions.cancel, qid)
    assert (out["how"], out["answer"]) == ("cancelled", "[cancelled]")
    await async_wait_for(world.answered, what="event")
    assert world.answered()[0]["how"] == "cancelled"


async def test_ttl_expires_with_expired_or_the_default(world: World) -> None:
    plain = await call(world.questions.ask, "m1nd", "quick?", [], False, 0.2)
    dflt = await call(world.questions.ask, "m1nd", "deploy?", ["yes", "no"], False, 0.2, "no")
    await async_wait_for(lambda: len(world.answered()) == 2, timeout=5, what="both expired")
    by_id = {e["id"]: e for e in world.answered()}
    assert (by_id[plain]["answer"], by_id[plain]["how"]) == ("[expired]", "expired")
    assert (by_id[dflt]["answer"], by_id[dflt]["how"]) == ("no", "expired")
    # The timers stopped themselves.
    await async_wait_for(lambda: not pykka.ActorRegistry.get_by_class(TtlTimer), what="timers gone")


async def test_answering_stops_the_timer_and_no_expiry_follows(world: World) -> None:
    qid = await call(world.questions.ask, "m1nd", "q", [], False, 0.3)
    await call(world.questions.answer, qid, [], "now")
    await async_wait_for(lambda: not pykka.ActorRegistry.get_by_class(TtlTimer), what="timer stopped")
    await asyncio.sleep(0.5)  # past the deadline: proving that nothing more happens
    assert [e["how"] for e in world.answered()] == ["answered"]


async def test_answer_and_expiry_race_200_times_one_resolution_each(world: World) -> None:
    q = world.questions
    ids = []
    for i in range(200):
        qid = await call(q.ask, "m1nd", f"race {i}", [], False, 0.001 * (i % 5 + 1))
        ids.append(qid)
        if i % 2:
            await asyncio.sleep(0.001 * (i % 7))
        q.answer.defer(qid, [], f"answer {i}")
    await async_wait_for(lambda: len(world.answered()) >= 200, timeout=20, what="200 resolutions")
    await asyncio.sleep(0.1)  # any duplicate would be queued right behind
    events = world.answered()
    assert sorted(e["id"] for e in events) == sorted(ids)  # exactly one event each
    rows = {r.id: r for r in Question.select()}
    hows = {rows[i].how for i in ids}
    assert hows <= {"answered", "expired"}
    for e in events:
        assert rows[e["id"]].answer == e["answer"] and rows[e["id"]].how == e["how"]
    resolved = [n for n, _ in world.events if n == "question.resolved"]
    assert len(resolved) == 200


async def test_timers_are_rearmed_after_a_restart_and_past_deadlines_expire_at_once(world: World) -> None:
    later = await call(world.questions.ask, "m1nd", "later", [], False, 0.8)
    soon = await call(world.questions.ask, "m1nd", "soon", [], False, 30.0)
    world.stop_questions()
    await async_wait_for(lambda: not pykka.ActorRegistry.get_by_class(TtlTimer), what="timers stopped")
    # "soon"'s deadline passes while nobody runs.
    Question.update(deadline_at=time.time() - 5).where(Question.id == soon).execute()
    t0 = time.time()
    await world.start_questions()
    await async_wait_for(lambda: [e["id"] for e in world.answered()] == [soon], timeout=2, what="past deadline expired")
    await async_wait_for(lambda: len(world.answered()) == 2, timeout=5, what="re-armed timer fired")
    assert world.answered()[1]["id"] == later
    assert time.time() - t0 < 2.0


async def test_unknown_ids_and_bad_answers_change_nothing(world: World) -> None:
    with pytest.raises(UnknownId):
        await call(world.questions.answer, 999, [], "x")
    qid = await call(world.questions.ask, "m1nd", "pick", ["a", "b"], False)
    for chosen, text in ((["c"], ""), (["a", "b"], ""), ([], "   ")):
        with pytest.raises(BadRequest):
            await call(world.questions.answer, qid, chosen, text)
    assert Question.get_by_id(qid).how is None
    with pytest.raises(BadRequest):
        await call(world.questions.ask, "m1nd", "  ", [], False)
    with pytest.raises(BadRequest):
        await call(world.questions.ask, "m1nd", "x", [], False, None, "default without ttl")
    listing = await call(world.questions.list)
    assert [p["id"] for p in listing["pending"]] == [qid]


@pytest.mark.parametrize(("secs", "chip"), [(42, "⏳ 42s"), (185, "⏳ 3m 5s"), (3720, "⏳ 1h 2m"), (-3, "⏳ 0s")])
def test_countdown_chip(secs: float, chip: str) -> None:
    assert countdown_chip(secs) == chip


def test_merge_answer_keeps_the_options_order() -> None:
    assert merge_answer(["x", "y", "z"], True, ["z", "x"], "") == "x, z"
    assert merge_answer([], False, [], "free") == "free"
