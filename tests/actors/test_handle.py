"""The one reply helper (``@answers``/``@parks``) and ``Handle``, on real pykka actors."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading

import pykka
import pytest

from hyperhive.actors.bridge import Handle, Reply, answers, parks, resolve
from hyperhive.errors import Conflict, Unavailable


class Acc(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.parked: list[Reply[int] | None] = []
        self.ran = 0

    @answers
    def add(self, k: int, label: str = "n") -> str:
        self.ran += 1
        self.n += k
        return f"{label}{self.n}"

    @answers
    def refuse(self) -> None:
        raise Conflict("no")

    @answers
    def count(self) -> int:
        return self.ran

    @parks
    def later(self, reply: Reply[int] | None, k: int) -> None:
        self.parked.append(reply)
        if k >= 0:
            resolve(reply, k * 2)

    def plain(self, k: int) -> None:
        self.n += k


@pytest.fixture
def acc():
    ref = Acc.start()
    yield Handle(ref.proxy())
    ref.stop()


async def test_ask_returns_the_body_value_and_keeps_keyword_arguments(acc):
    assert await acc.ask(Acc.add, 2) == "n2"
    assert await acc.ask(Acc.add, 3, label="x") == "x5"


async def test_an_error_in_the_body_reaches_the_caller_and_the_actor_lives(acc):
    with pytest.raises(Conflict):
        await acc.ask(Acc.refuse)
    assert await acc.ask(Acc.add, 1) == "n1"


async def test_parking_method_gets_the_future_first_and_completes_it(acc):
    assert await acc.ask(Acc.later, 4) == 8


async def test_a_parked_call_that_never_completes_times_out_as_unavailable(acc):
    with pytest.raises(Unavailable):
        await acc.within(0.05).ask(Acc.later, -1)


async def test_tell_runs_without_a_reply_for_answering_and_plain_methods(acc):
    acc.tell(Acc.add, 5)
    acc.tell(Acc.plain, 10)
    acc.tell(Acc.refuse)  # no caller: nothing raised here
    assert await acc.ask(Acc.add, 0) == "n15"


async def test_future_gives_the_reply_for_a_done_callback(acc):
    fut = acc.future(Acc.add, 7)
    got = threading.Event()
    fut.add_done_callback(lambda f: got.set())
    assert await asyncio.wrap_future(fut) == "n7"
    assert got.is_set()


async def test_a_caller_that_gave_up_gets_no_work_done():
    ref = Acc.start()
    try:
        fut: cf.Future[str] = cf.Future()
        fut.cancel()
        ref.proxy().add.defer(1, reply=fut)
        assert await Handle(ref.proxy()).ask(Acc.count) == 0
    finally:
        ref.stop()


async def test_a_stopped_actor_is_unavailable_to_ask_and_ignored_by_tell():
    ref = Acc.start()
    h = Handle(ref.proxy())
    ref.stop()
    with pytest.raises(Unavailable):
        await h.ask(Acc.add, 1)
    h.tell(Acc.add, 1)
    with pytest.raises(Unavailable):
        await asyncio.wrap_future(h.future(Acc.add, 1))


def test_direct_calls_on_the_actor_object_still_take_reply_keyword():
    a = Acc()
    fut: cf.Future[str] = cf.Future()
    a.add(4, reply=fut)
    assert fut.result(timeout=1) == "n4"
    a.add(1)  # told without a reply
    assert a.n == 5
