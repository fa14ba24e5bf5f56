"""The Broker keeps what a harness's turns took (issue 16), with a real sqlite
file: a system recv marks its messages taken in the commit that delivers them
(also a wake from a parked recv), a turn's start and end move the marks, a gone
harness has them delivered again, and the next kick says how many."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import async_wait_for
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import call
from hyperhive.actors.broker import Broker
from hyperhive.actors.broker_taken import STARTED, TAKEN
from hyperhive.actors.clock import LoopClock
from hyperhive.store.models import Message, open_hive_db


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Any]:
    db = open_hive_db(tmp_path / "hive.sqlite")
    proxy = Broker.start(db, LoopClock(IOLoop.current()), recv_default=5.0, recv_cap=0.5).proxy()
    for name in ("a", "b"):
        await call(proxy.register, name, None)
    yield proxy
    proxy.actor_ref.stop()
    db.close()


def marks(*ids: int) -> list[tuple[int | None, int | None, bool]]:
    return [(m.taken, m.redeliveries, m.delivered_at is not None)
            for m in Message.select().where(Message.id.in_(ids)).order_by(Message.id)]


async def kick(broker: Any, nth: int) -> None:
    broker.kick("b", lambda again, gave_up: f"kick again={again} gave_up={gave_up}")
    await async_wait_for(lambda: Message.select().where(Message.sender == "system").count() == nth,
                         interval=0.002, what="the kick stored")


async def test_a_system_recv_takes_a_tool_recv_does_not(broker: Any) -> None:
    one = await call(broker.send, "a", "b", "one")
    assert [r.id for r in await call(broker.recv, "b", 0, True)] == [one]
    two = await call(broker.send, "a", "b", "two")
    assert [r.id for r in await call(broker.recv, "b", 0, False)] == [two]
    assert marks(one, two) == [(TAKEN, None, True), (None, None, True)]


async def test_a_wake_of_a_parked_system_recv_takes_in_the_insert(broker: Any) -> None:
    recv = asyncio.ensure_future(call(broker.recv, "b", 0.5, True))
    await asyncio.sleep(0.01)
    msg = await call(broker.send, "a", "b", "woke")
    assert [r.id for r in await recv] == [msg]
    assert marks(msg) == [(TAKEN, None, True)]


async def test_turn_marks_gone_harness_and_the_kick(broker: Any) -> None:
    msg = await call(broker.send, "a", "b", "held")
    await call(broker.recv, "b", 0, True)
    broker.turn_started("b")
    await async_wait_for(lambda: marks(msg) == [(STARTED, None, True)], interval=0.002, what="the turn's start stored")
    broker.harness_gone("b")  # died mid-turn: delivered again, counted
    await async_wait_for(lambda: marks(msg) == [(None, 1, False)], interval=0.002, what="given back")
    await kick(broker, 1)
    rows = await call(broker.recv, "b", 0, True)
    assert [r.body for r in rows] == ["held", "kick again=1 gave_up=0"]
    broker.turn_started("b")
    broker.harness_gone("b")  # died on it again: not a third time (the first kick goes round once)
    await async_wait_for(lambda: marks(msg) == [(None, 1, True)], interval=0.002, what="given up")
    await kick(broker, 2)
    rows = await call(broker.recv, "b", 0, True)
    assert [r.body for r in rows] == ["kick again=1 gave_up=0", "kick again=1 gave_up=1"]
    broker.turn_started("b")
    broker.turn_done("b")  # a finished turn: nothing held, nothing goes back
    broker.harness_gone("b")
    await async_wait_for(lambda: Message.select().where(Message.taken.is_null(False)).count() == 0,
                         interval=0.002, what="the kick's turn done")
    assert await call(broker.recv, "b", 0, True) == []


async def test_requeue_clears_the_mark(broker: Any) -> None:
    msg = await call(broker.send, "a", "b", "orphan")
    await call(broker.recv, "b", 0, True)
    broker.requeue([msg])
    await async_wait_for(lambda: marks(msg) == [(None, None, False)], interval=0.002, what="requeued")
    broker.harness_gone("b")  # nothing held: nothing counted
    rows = await call(broker.recv, "b", 0, False)
    assert [r.id for r in rows] == [msg] and marks(msg) == [(None, None, True)]


async def test_harness_gone_says_whether_a_message_waits_for_the_agent(broker: Any) -> None:
    """Hibernation (issue 17): a message the harness had taken but not begun its turn
    on, or one that came as it went to sleep, wakes it again once its recvs are gone."""
    told: list[str] = []
    broker.harness_gone("b", lambda: told.append("b"))
    await call(broker.stats)  # the tells before it are done
    assert told == []  # nothing for b: it sleeps on
    taken = await call(broker.send, "a", "b", "taken, no turn yet")
    assert [r.id for r in await call(broker.recv, "b", 0, True)] == [taken]
    broker.harness_gone("b", lambda: told.append("b"))
    await call(broker.stats)
    assert told == ["b"] and marks(taken) == [(None, 1, False)]  # given back, and it wakes for it
    broker.harness_gone("a", lambda: told.append("a"))
    await call(broker.stats)
    assert told == ["b"]
