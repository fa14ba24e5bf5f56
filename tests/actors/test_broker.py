"""The Broker actor with a real sqlite file and the test's IOLoop as its clock."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import call
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.errors import NotAllowed, Unavailable
from hyperhive.store.models import Message, open_hive_db


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Any]:
    db = open_hive_db(tmp_path / "hive.sqlite")
    proxy = Broker.start(db, LoopClock(IOLoop.current()), recv_default=5.0, recv_cap=0.3).proxy()
    for name in ("a", "b"):
        await call(proxy.register, name, None)
    yield proxy
    proxy.actor_ref.stop()
    db.close()


async def test_concurrent_sends_are_all_stored_once(broker: Any) -> None:
    ids = await asyncio.gather(*(call(broker.send, "a", "b", f"m{i}") for i in range(300)))
    assert len(set(ids)) == 300
    bodies = [m.body for m in Message.select().order_by(Message.id)]
    assert sorted(bodies) == sorted(f"m{i}" for i in range(300))
    # Ids follow the order the sends were queued in.
    assert [b for _, b in sorted(zip(ids, [f"m{i}" for i in range(300)], strict=True))] == bodies


async def test_a_parked_recv_wakes_with_the_message(broker: Any) -> None:
    recv = asyncio.ensure_future(call(broker.recv, "b", 0.25, False))
    await asyncio.sleep(0)  # let the recv reach the actor first
    msg_id = await call(broker.send, "a", "b", "hello")
    [row] = await recv
    assert (row.id, row.from_, row.body) == (msg_id, "a", "hello")
    assert row.delivered_at is not None
    assert Message.get_by_id(msg_id).delivered_at is not None


async def test_wait_is_capped_and_empty_recv_returns_nothing(broker: Any) -> None:
    t0 = time.monotonic()
    rows = await call(broker.recv, "b", 100.0, False)
    assert rows == []
    assert 0.25 <= time.monotonic() - t0 < 2.0  # the 0.3 s cap, not 100 s


async def test_a_caller_that_gave_up_loses_no_message(broker: Any) -> None:
    with pytest.raises(Unavailable):
        await call(broker.recv, "b", 0.3, False, timeout=0.05)
    await call(broker.send, "a", "b", "kept")
    rows = await call(broker.recv, "b", 0, False)
    assert [r.body for r in rows] == ["kept"]


async def test_requeue_puts_a_delivery_back(broker: Any) -> None:
    await call(broker.send, "a", "b", "again")
    [row] = await call(broker.recv, "b", 0, False)
    broker.requeue.defer([row.id])
    [back] = await call(broker.recv, "b", 0, False)
    assert back.id == row.id


async def test_tool_recv_is_served_before_the_harness_recv(broker: Any) -> None:
    system = asyncio.ensure_future(call(broker.recv, "b", 0.3, True))
    tool = asyncio.ensure_future(call(broker.recv, "b", 0.3, False))
    await asyncio.sleep(0.01)
    await call(broker.send, "a", "b", "for the model")
    assert [r.body for r in await tool] == ["for the model"]
    assert await system == []


async def test_dropped_harness_waiter_takes_no_message(broker: Any) -> None:
    fut: cf.Future = cf.Future()
    broker.recv.defer("b", 0.3, True, reply=fut)
    broker.drop_system_waiters.defer("b")
    await call(broker.send, "a", "b", "stays")
    assert fut.result(timeout=1) == []
    assert [r.body for r in await call(broker.recv, "b", 0, False)] == ["stays"]


async def test_policy_refusal_writes_nothing(broker: Any) -> None:
    await call(broker.register, "c", ["a"])
    with pytest.raises(NotAllowed, match="allowed_recipients"):
        await call(broker.send, "c", "b", "no")
    assert Message.select().count() == 0


async def test_stopping_fails_parked_waiters(tmp_path: Path) -> None:
    db = open_hive_db(tmp_path / "x.sqlite")
    proxy = Broker.start(db, LoopClock(IOLoop.current()), recv_cap=30).proxy()
    await call(proxy.register, "b", None)
    fut: cf.Future = cf.Future()
    proxy.recv.defer("b", 20.0, False, reply=fut)
    await asyncio.sleep(0.01)
    proxy.actor_ref.stop()
    with pytest.raises(Unavailable):
        fut.result(timeout=2)
    db.close()


async def test_send_many_answers_each_item_in_order(broker: Any) -> None:
    items = [("a", "b", "one"), ("a", "zed", "nobody"), ("a", "b", 7), ("b", "a", "two")]
    results = await call(broker.send_many, items)
    assert isinstance(results[0], int) and isinstance(results[3], int)
    assert results[3] == results[0] + 1
    assert results[1].code == "unknown_agent"
    assert results[2].code == "bad_request"
    assert [(m.sender, m.recipient, m.body) for m in Message.select().order_by(Message.id)] == [
        ("a", "b", "one"), ("b", "a", "two"),
    ]
    assert await call(broker.send_many, []) == []


async def test_send_batcher_gathers_one_loop_turn_into_one_commit(broker: Any) -> None:
    from hyperhive.web.sends import SendBatcher

    sends = SendBatcher(broker)
    ids = await asyncio.gather(*(sends.send("a", "b", f"m{i}") for i in range(50)), return_exceptions=True)
    assert sorted(ids) == list(range(1, 51))  # type: ignore[type-var]
    with pytest.raises(NotAllowed):
        await sends.send("a", "a", "self")
    assert Message.select().count() == 50
