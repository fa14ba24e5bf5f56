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
from support import async_wait_for, wait_for
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import call
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import Hub
from hyperhive.actors.questions import Questions, TtlTimer
from hyperhive.actors.questions_core import countdown_chip, merge_answer
from hyperhive.errors import BadRequest, UnknownId
from hyperhive.store.models import Message, Question, open_hive_db

LANES = 8  # iterations of the answer/expiry race under way at once


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "hive.sqlite"
        self.db = open_hive_db(self.path, synchronous="normal")  # no fsync per commit: nothing here crashes
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
    plain = await call(world.questions.ask, "m1nd", "quick?", [], False, 0.02)
    dflt = await call(world.questions.ask, "m1nd", "deploy?", ["yes", "no"], False, 0.02, "no")
    await async_wait_for(lambda: len(world.answered()) == 2, timeout=5, interval=0.002, what="both expired")
    by_id = {e["id"]: e for e in world.answered()}
    assert (by_id[plain]["answer"], by_id[plain]["how"]) == ("[expired]", "expired")
    assert (by_id[dflt]["answer"], by_id[dflt]["how"]) == ("no", "expired")
    # The timers stopped themselves.
    await async_wait_for(lambda: not pykka.ActorRegistry.get_by_class(TtlTimer), interval=0.002, what="timers gone")


async def test_answering_stops_the_timer_and_no_expiry_follows(world: World) -> None:
    qid = await call(world.questions.ask, "m1nd", "q", [], False, 0.1)
    await call(world.questions.answer, qid, [], "now")
    await async_wait_for(lambda: not pykka.ActorRegistry.get_by_class(TtlTimer), interval=0.002,
                         what="timer stopped")
    # Past the deadline (by 0.2 s of a 0.3 s TTL before, scaled with it): proving that nothing more happens.
    deadline: float = Question.get_by_id(qid).deadline_at  # type: ignore[assignment]
    await asyncio.sleep(max(0.0, deadline + 0.07 - time.time()))
    await call(world.questions.list)  # an expiry told by then has been handled
    assert [e["how"] for e in world.answered()] == ["answered"]
    assert [n for n, _ in world.events if n == "question.resolved"] == ["question.resolved"]


async def test_answer_and_expiry_race_200_times_one_resolution_each(world: World) -> None:
    q = world.questions
    ids = []

    async def lane(first: int) -> None:  # LANES of these run at once: one's sleeps overlap another's asks
        for i in range(first, 200, LANES):
            qid = await call(q.ask, "m1nd", f"race {i}", [], False, 0.001 * (i % 5 + 1))
            ids.append(qid)
            if i % 2:
                await asyncio.sleep(0.001 * (i % 7))
            q.answer.defer(qid, [], f"answer {i}")

    await asyncio.gather(*(lane(k) for k in range(LANES)))
    await async_wait_for(lambda: len(world.answered()) >= 200, timeout=20, interval=0.005, what="200 resolutions")
    # Any duplicate would be queued right behind: every timer has fired (telling its expiry) or
    # was stopped, and the actor has handled all it was told before this call.
    await async_wait_for(lambda: not pykka.ActorRegistry.get_by_class(TtlTimer), interval=0.002, what="timers gone")
    await call(q.list)
    assert len([n for n, _ in world.events if n == "question.resolved"]) == 200  # so no inbox message is to come
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
    later = await call(world.questions.ask, "m1nd", "later", [], False, 30.0)
    soon = await call(world.questions.ask, "m1nd", "soon", [], False, 30.0)
    world.stop_questions()
    await async_wait_for(lambda: not pykka.ActorRegistry.get_by_class(TtlTimer), interval=0.002,
                         what="timers stopped")
    # "soon"'s deadline passes while nobody runs; "later"'s is still ahead when the new actor re-arms.
    Question.update(deadline_at=time.time() - 5).where(Question.id == soon).execute()
    t0 = time.time()
    await call(world.broker.register, "m1nd", None)  # world.start_questions, with "later"'s deadline set last
    world.questions = Questions.start(world.broker, world.clock, world.hub).proxy()
    deadline = time.time() + 0.08
    Question.update(deadline_at=deadline).where(Question.id == later).execute()
    assert await call(world.questions.rearm) == 1  # "later" armed; "soon" expired at once
    await async_wait_for(lambda: len(world.answered()) == 2, timeout=5, interval=0.002, what="re-armed timer fired")
    assert [e["id"] for e in world.answered()] == [soon, later]
    at = {q.id: float(q.answered_at or 0) for q in Question.select()}
    assert 0 < at[soon] < deadline <= at[later] + 0.005  # at boot; then on its deadline
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
