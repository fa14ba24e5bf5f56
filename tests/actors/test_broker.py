"""The Broker actor with a real sqlite file and the test's IOLoop as its clock."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import async_wait_for
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
    for name in ("a", "b", "c"):
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


async def test_wait_is_capped_and_empty_recv_returns_nothing(tmp_path: Path) -> None:
    db = open_hive_db(tmp_path / "capped.sqlite")
    proxy = Broker.start(db, LoopClock(IOLoop.current()), recv_default=5.0, recv_cap=0.03).proxy()
    try:
        await call(proxy.register, "b", None)
        t0 = time.monotonic()
        rows = await call(proxy.recv, "b", 100.0, False)
        assert rows == []
        assert 0.025 <= time.monotonic() - t0 < 2.0  # the 0.03 s cap, not 100 s
    finally:
        proxy.actor_ref.stop()
        db.close()


async def test_a_caller_that_gave_up_loses_no_message(broker: Any) -> None:
    with pytest.raises(Unavailable):
        await call(broker.recv, "b", 2.0, False, timeout=0.01)
    await call(broker.send, "a", "b", "kept")
    rows = await call(broker.recv, "b", 0, False)
    assert [r.body for r in rows] == ["kept"]


async def test_requeue_puts_a_delivery_back(broker: Any) -> None:
    await call(broker.send, "a", "b", "again")
    [row] = await call(broker.recv, "b", 0, False)
    broker.requeue.defer([row.id])
    [back] = await call(broker.recv, "b", 0, False)
    assert back.id == row.id


def told(method: Any, *args: Any) -> cf.Future[Any]:
    """Tell ``method`` now: the actor takes its messages in the order told."""
    fut: cf.Future[Any] = cf.Future()
    method.defer(*args, reply=fut)
    return fut


async def test_tool_recv_is_served_before_the_harness_recv(broker: Any) -> None:
    system = told(broker.recv, "b", 0.02, True)
    tool = told(broker.recv, "b", 2.0, False)
    parked = told(broker.stats)
    sent = told(broker.send, "a", "b", "for the model")
    # Blocking the loop (the actors' clock) until the send is answered: no wait can
    # run out before it, both recvs are parked when it is taken.
    assert parked.result(timeout=5)["parked"]["b"] == {"tool": 1, "system": 1}
    sent.result(timeout=5)
    assert [r.body for r in tool.result(timeout=5)] == ["for the model"]
    assert not system.done()
    assert await asyncio.wrap_future(system) == []  # its wait ran out: nothing for it


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
    from hyperhive.web.tables.sends import SendBatcher

    sends = SendBatcher(broker)
    ids = await asyncio.gather(*(sends.send("a", "b", f"m{i}") for i in range(50)), return_exceptions=True)
    assert sorted(ids) == list(range(1, 51))  # type: ignore[type-var]
    with pytest.raises(NotAllowed):
        await sends.send("a", "a", "self")
    assert Message.select().count() == 50


# --- a refused row fails alone; replies are bounded ------------------------------

@pytest.fixture
async def small_rows(tmp_path: Path) -> AsyncIterator[Any]:
    """A Broker whose store refuses rows over 64 KiB (sqlite's own length limit)."""
    db = open_hive_db(tmp_path / "hive.sqlite")
    proxy = Broker.start(db, LoopClock(IOLoop.current()), recv_default=5.0, recv_cap=2.0,
                         max_row_bytes=64 * 1024).proxy()
    for name in ("a", "b", "c"):
        await call(proxy.register, name, None)
    yield proxy
    proxy.actor_ref.stop()
    db.close()


TOO_BIG = "x" * 100_000


async def test_a_row_the_store_refuses_fails_only_itself(small_rows: Any) -> None:
    items = [("a", "b", f"m{i}") for i in range(10)]
    items[4] = ("a", "b", TOO_BIG)
    items[7] = ("c", "b", "\ud800 lone surrogate")  # sqlite's binding refuses it too
    results = await call(small_rows.send_many, items)
    errors = {i: r for i, r in enumerate(results) if not isinstance(r, int)}
    assert set(errors) == {4, 7}
    assert errors[4].code == "bad_request" and "too big" in errors[4].message
    assert errors[7].code == "bad_request" and "Unicode" in errors[7].message
    stored = [(m.id, m.body) for m in Message.select().order_by(Message.id)]
    assert [b for _, b in stored] == [f"m{i}" for i in range(10) if i not in (4, 7)]
    assert [i for i, _ in stored] == [r for r in results if isinstance(r, int)]  # each ack names its row


async def test_the_batcher_retries_row_by_row_under_concurrency(small_rows: Any) -> None:
    from hyperhive.web.tables.sends import SendBatcher

    sends = SendBatcher(small_rows)
    bodies = [TOO_BIG if i % 50 == 7 else f"m{i}" for i in range(500)]
    results = await asyncio.gather(*(sends.send("a", "b", body) for body in bodies), return_exceptions=True)
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [i for i in range(500) if i % 50 == 7]
    assert all(getattr(results[i], "code", None) == "bad_request" for i in failed)
    assert Message.select().count() == 490
    assert sorted(r for r in results if isinstance(r, int)) == [m.id for m in Message.select().order_by(Message.id)]


async def test_the_batcher_refuses_a_lone_surrogate_before_any_batch(broker: Any) -> None:
    from hyperhive.errors import BadRequest
    from hyperhive.web.tables.sends import SendBatcher

    sends = SendBatcher(broker)
    results = await asyncio.gather(sends.send("a", "b", "before"), sends.send("a", "b", "x\udfffy"),
                                   sends.send("a", "b", "after"), return_exceptions=True)
    assert isinstance(results[1], BadRequest) and "lone surrogate" in results[1].message
    assert [m.body for m in Message.select().order_by(Message.id)] == ["before", "after"]


async def test_a_parked_recv_whose_message_was_refused_waits_on(small_rows: Any) -> None:
    recv_b = asyncio.ensure_future(call(small_rows.recv, "b", 2.0, False))
    recv_c = asyncio.ensure_future(call(small_rows.recv, "c", 2.0, False))
    await async_wait_for(parked_is(small_rows, {"b": 1, "c": 1}), interval=0.002, what="both recvs parked")
    results = await call(small_rows.send_many, [("a", "b", TOO_BIG), ("a", "c", "for c")])
    assert results[0].code == "bad_request" and isinstance(results[1], int)
    assert [r.body for r in await recv_c] == ["for c"]
    assert not recv_b.done()  # still parked: nothing for it was stored
    assert await _parked(small_rows) == {"b": 1}
    later = await call(small_rows.send, "a", "b", "the next one")
    [row] = await recv_b
    assert (row.id, row.body) == (later, "the next one")
    # and a parked-again recv still expires normally: parked when the refused send is
    # taken (the loop, the actors' clock, is blocked until it is answered), then it runs out
    t0 = time.monotonic()
    again = told(small_rows.recv, "b", 0.02, False)
    parked = told(small_rows.stats)
    refused = told(small_rows.send_many, [("a", "b", TOO_BIG)])
    assert {a: k["tool"] + k["system"] for a, k in parked.result(timeout=5)["parked"].items()} == {"b": 1}
    assert refused.result(timeout=5)[0].code == "bad_request" and not again.done()
    assert await asyncio.wrap_future(again) == [] and time.monotonic() - t0 < 2.0


def parked_is(broker: Any, want: dict[str, int]) -> Any:
    async def check() -> bool:
        return await _parked(broker) == want
    return check


async def _parked(broker: Any) -> dict[str, int]:
    return {a: k["tool"] + k["system"] for a, k in (await call(broker.stats))["parked"].items()}


async def test_a_recv_takes_about_one_mib(broker: Any) -> None:
    from hyperhive.actors.broker_core import RECV_BYTES

    big = "y" * 300_000
    await call(broker.send_many, [("a", "b", big)] * 10)
    sizes = []
    while rows := await call(broker.recv, "b", 0, False):
        sizes.append(len(rows))
        assert sum(len(r.body) for r in rows) <= RECV_BYTES
    assert sizes == [3, 3, 3, 1]
    huge = "z" * (RECV_BYTES + 10)  # over the budget alone: it still goes, alone
    await call(broker.send_many, [("a", "b", huge), ("a", "b", "small")])
    assert [len(r.body) for r in await call(broker.recv, "b", 0, False)] == [len(huge)]
    assert [r.body for r in await call(broker.recv, "b", 0, False)] == ["small"]


async def test_a_waking_recv_takes_at_most_one_batch(broker: Any) -> None:
    from hyperhive.actors.broker_core import RECV_BATCH

    recv = asyncio.ensure_future(call(broker.recv, "b", 2.0, False))
    await async_wait_for(parked_is(broker, {"b": 1}), interval=0.002, what="b parked")
    await call(broker.send_many, [("a", "b", f"m{i}") for i in range(RECV_BATCH + 50)])
    assert [r.body for r in await recv] == [f"m{i}" for i in range(RECV_BATCH)]
    rest = await call(broker.recv, "b", 0, False)
    assert [r.body for r in rest] == [f"m{i}" for i in range(RECV_BATCH, RECV_BATCH + 50)]


async def test_recent_is_capped_by_bytes_and_says_so(broker: Any) -> None:
    from hyperhive.actors.broker import RECENT_BYTES

    await call(broker.send_many, [("a", "b", f"{i:03d}" + "q" * 40_000) for i in range(100)])
    rows, truncated = await call(broker.recent_page, "b", 500)
    assert truncated is True
    wire_bytes = sum(len(json.dumps(r.to_wire()).encode()) + 1 for r in rows)
    assert RECENT_BYTES - 50_000 < wire_bytes <= RECENT_BYTES
    assert [r.body[:3] for r in rows] == [f"{i:03d}" for i in range(100 - len(rows), 100)]  # the newest, oldest first
    assert await call(broker.recent, "b", 500) == rows
    few, truncated = await call(broker.recent_page, "b", 5)
    assert truncated is False and few == rows[-5:]
    # escapes count: a body of control characters is six times longer on the wire
    await call(broker.send_many, [("a", "c", "\x01" * 100_000) for _ in range(3)])
    rows, truncated = await call(broker.recent_page, "c", 500)
    assert len(rows) == 1 and truncated is True


async def test_recent_says_when_the_row_cap_left_rows_out(broker: Any) -> None:
    from hyperhive.actors.broker import RECENT_CAP

    await call(broker.send_many, [("a", "b", f"m{i}") for i in range(RECENT_CAP + 5)])
    rows, truncated = await call(broker.recent_page, "b", RECENT_CAP + 100)
    assert len(rows) == RECENT_CAP and truncated is True
    assert rows[-1].body == f"m{RECENT_CAP + 4}"
    rows, truncated = await call(broker.recent_page, "b", RECENT_CAP)
    assert len(rows) == RECENT_CAP and truncated is False  # exactly what was asked for
    await call(broker.send_many, [("a", "c", "one"), ("a", "c", "two")])
    rows, truncated = await call(broker.recent_page, "c", RECENT_CAP + 100)
    assert [r.body for r in rows] == ["one", "two"] and truncated is False
