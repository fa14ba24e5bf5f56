"""One hand-over to the loop per commit (issue 17: the Broker wakes the loop once
per batch), with a real Broker on a real sqlite file and the test's loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import Wakes
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import call
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.handoff import loop_future, one_handoff, to_loop
from hyperhive.errors import Unavailable
from hyperhive.store.models import open_hive_db
from hyperhive.web.tables.sends import SendBatcher


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Any]:
    db = open_hive_db(tmp_path / "hive.sqlite", synchronous="full")
    proxy = Broker.start(db, LoopClock(IOLoop.current()), recv_default=5.0, recv_cap=5.0).proxy()
    for name in ("a", "b", "c"):
        await call(proxy.register, name, None)
    yield proxy
    proxy.actor_ref.stop()
    db.close()


async def _parked(broker: Any, agent: str) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while not (await call(broker.stats))["parked"].get(agent):
        assert asyncio.get_running_loop().time() < deadline, f"no recv parked for {agent}"
        await asyncio.sleep(0.001)


async def test_a_commit_that_acks_sends_and_wakes_recvs_wakes_the_loop_once(broker: Any) -> None:
    loop = asyncio.get_running_loop()
    recv_b = asyncio.ensure_future(call(broker.recv, "b", 5.0, False))
    recv_c = asyncio.ensure_future(call(broker.recv, "c", 5.0, False))
    await _parked(broker, "b")
    await _parked(broker, "c")
    wakes = Wakes(loop)
    try:
        ids = await call(broker.send_many, [("a", "b", "to b"), ("a", "c", "to c"), ("a", "b", "to b again")])
        rows_b, rows_c = await recv_b, await recv_c
    finally:
        wakes.restore()
    assert [r.body for r in rows_b] == ["to b", "to b again"] and [r.body for r in rows_c] == ["to c"]
    assert sorted(ids) == sorted(r.id for r in rows_b + rows_c)
    # The batch's acks and two recvs, in one commit: one hand-over (it was one per reply).
    assert wakes.off_thread == 1


async def test_a_woken_recv_is_answered_before_the_send_that_woke_it() -> None:
    loop = asyncio.get_running_loop()
    order: list[str] = []
    done = threading.Event()

    def actor_side() -> None:
        with one_handoff():
            to_loop(loop, order.append, "recv")
            to_loop(loop, order.append, "ack")
            assert order == []  # nothing runs before the block ends
        done.set()

    threading.Thread(target=actor_side).start()
    while len(order) < 2:
        await asyncio.sleep(0.001)
    assert done.is_set() and order == ["recv", "ack"]


async def test_nested_blocks_hand_over_at_the_outer_end_and_a_failing_callback_skips_nothing() -> None:
    loop = asyncio.get_running_loop()
    ran: list[int] = []
    wakes = Wakes(loop)

    def boom() -> None:
        raise RuntimeError("boom")

    def actor_side() -> None:
        with one_handoff():
            to_loop(loop, ran.append, 1)
            with one_handoff():
                to_loop(loop, boom)
            to_loop(loop, ran.append, 2)

    try:
        t = threading.Thread(target=actor_side)
        t.start()
        t.join(5)
        while len(ran) < 2:
            await asyncio.sleep(0.001)
    finally:
        wakes.restore()
    assert ran == [1, 2] and wakes.off_thread == 1


async def test_to_loop_outside_a_block_runs_at_once_and_a_closed_loop_runs_nothing() -> None:
    loop = asyncio.get_running_loop()
    got: list[str] = []
    t = threading.Thread(target=to_loop, args=(loop, got.append, "now"))
    t.start()
    t.join(5)
    while not got:
        await asyncio.sleep(0.001)
    closed = asyncio.new_event_loop()
    closed.close()
    to_loop(closed, got.append, "never")  # no error: nobody is left to hear of it
    with one_handoff():
        to_loop(closed, got.append, "never")
    assert got == ["now"]


async def test_loop_future_settles_as_its_source() -> None:
    import concurrent.futures as cf

    loop = asyncio.get_running_loop()
    ok: cf.Future[int] = cf.Future()
    bad: cf.Future[int] = cf.Future()
    gone: cf.Future[int] = cf.Future()
    a, b, c = loop_future(ok, loop), loop_future(bad, loop), loop_future(gone, loop)
    ok.set_result(3)
    bad.set_exception(ValueError("no"))
    gone.cancel()
    assert await a == 3
    with pytest.raises(ValueError, match="no"):
        await b
    with pytest.raises(asyncio.CancelledError):
        await c


async def test_a_deadline_with_no_task_of_its_own_still_fails_the_call(broker: Any) -> None:
    # bridge.call keeps its deadline with a loop timer (no asyncio.timeout): driven by hand, as an
    # inline op is, it still ends with Unavailable, and the recv it gave up on keeps no message.
    coro = call(broker.recv, "b", 2.0, False, timeout=0.02)
    fut = asyncio.get_running_loop().create_future()

    def step(_: object = None) -> None:
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            fut.set_result(stop.value)
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            fut.set_exception(exc)
            return
        yielded._asyncio_future_blocking = False
        yielded.add_done_callback(step)

    step()
    with pytest.raises(Unavailable, match="no reply within"):
        await fut
    await call(broker.send, "a", "b", "kept")
    assert [r.body for r in await call(broker.recv, "b", 0, False)] == ["kept"]


async def test_a_send_that_finds_no_batch_at_the_broker_goes_without_a_loop_turn(broker: Any) -> None:
    import time

    from hyperhive.store.models import Message

    sends = SendBatcher(broker)
    coro = sends.send("a", "b", "at once")
    waiting = coro.send(None)  # up to its await: the loop has not turned since
    deadline = time.monotonic() + 5
    while not Message.select().where(Message.body == "at once").exists():  # blocking: the loop stays still
        assert time.monotonic() < deadline, "the send waited for a loop turn before it went to the Broker"
        time.sleep(0.001)
    waiting._asyncio_future_blocking = False  # taken, as a Task takes it
    mid = await waiting
    with pytest.raises(StopIteration) as stop:
        coro.send(None)
    assert stop.value.value == mid
