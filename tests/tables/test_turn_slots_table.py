"""hyperhive.web.tables.turn_slots (F44), the table itself on a real asyncio
loop: the cap, FIFO grants, what ``queued`` shows, release and withdrawal,
and who hears ``on_change``. (tests/web/test_turn_cap.py has the basic grant
order and the daemon-level behaviour.)"""

from __future__ import annotations

import asyncio

import pytest

from hyperhive.web.tables.turn_slots import TurnSlots


async def settle() -> None:
    """Let the tasks started so far run up to their first wait."""
    for _ in range(3):
        await asyncio.sleep(0)


class Changes:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, agent: str) -> None:
        self.seen.append(agent)


@pytest.mark.parametrize(("capacity", "asking", "granted", "queued"), [
    (1, "abc", {"a"}, ["b", "c"]),
    (2, "abcd", {"a", "b"}, ["c", "d"]),
    (3, "ab", {"a", "b"}, []),
    (0, "abcdef", set("abcdef"), []),  # 0: no cap
    (-1, "abc", set("abc"), []),  # below 0 is no cap too
])
async def test_the_cap_grants_that_many_and_queues_the_rest_in_order(
        capacity: int, asking: str, granted: set[str], queued: list[str]) -> None:
    slots = TurnSlots(capacity)
    tasks = {n: asyncio.ensure_future(slots.acquire(n)) for n in asking}
    await settle()
    assert slots.holders == granted
    assert slots.queued == queued
    assert {n for n, t in tasks.items() if t.done()} == granted
    for t in tasks.values():
        t.cancel()


async def test_each_release_grants_the_longest_waiting_first() -> None:
    slots = TurnSlots(2)
    await slots.acquire("a")
    await slots.acquire("b")
    waiting = {n: asyncio.ensure_future(slots.acquire(n)) for n in "cdef"}
    await settle()
    order = []
    for leaving in ("b", "a", "c", "d"):
        slots.release(leaving)
        await settle()
        order.append(sorted(n for n, t in waiting.items() if t.done()))
    assert order == [["c"], ["c", "d"], ["c", "d", "e"], ["c", "d", "e", "f"]]
    assert slots.holders == {"e", "f"} and slots.queued == []


async def test_release_hands_the_slot_over_at_once() -> None:
    """The next holder is chosen inside release, before any other task runs:
    nobody can take the freed slot in between."""
    slots = TurnSlots(1)
    await slots.acquire("a")
    b = asyncio.ensure_future(slots.acquire("b"))
    await settle()
    slots.release("a")
    assert slots.holders == {"b"} and slots.queued == []
    newcomer = asyncio.ensure_future(slots.acquire("c"))
    await settle()
    assert b.done() and not newcomer.done() and slots.queued == ["c"]
    newcomer.cancel()


async def test_a_newcomer_never_jumps_the_queue() -> None:
    """Even with a slot free (the cap was raised), a newcomer waits behind
    the queue; the next release grants as many as now fit."""
    slots = TurnSlots(1)
    await slots.acquire("a")
    b = asyncio.ensure_future(slots.acquire("b"))
    await settle()
    slots.capacity = 3
    c = asyncio.ensure_future(slots.acquire("c"))
    await settle()
    assert slots.queued == ["b", "c"] and not c.done()
    slots.release("a")
    await settle()
    assert b.done() and c.done() and slots.holders == {"b", "c"}


async def test_the_same_agent_asking_twice_waits_once_and_is_granted_once() -> None:
    slots = TurnSlots(1)
    await slots.acquire("a")
    first = asyncio.ensure_future(slots.acquire("b"))
    second = asyncio.ensure_future(slots.acquire("b"))
    await settle()
    assert slots.queued == ["b"]
    slots.release("a")
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert slots.holders == {"b"}
    await asyncio.wait_for(slots.acquire("b"), 5)  # a holder asking again gets it at once


async def test_release_withdraws_a_queued_agent_and_its_waiter_is_cancelled() -> None:
    slots = TurnSlots(1)
    await slots.acquire("a")
    b = asyncio.ensure_future(slots.acquire("b"))
    c = asyncio.ensure_future(slots.acquire("c"))
    await settle()
    slots.release("b")  # its harness went away while queued
    await settle()
    assert b.cancelled() and slots.queued == ["c"] and slots.holders == {"a"}
    slots.release("a")
    await settle()
    assert c.done() and not c.cancelled() and slots.holders == {"c"}


async def test_releasing_what_is_neither_held_nor_queued_changes_nothing() -> None:
    changes = Changes()
    slots = TurnSlots(1, changes)
    await slots.acquire("a")
    slots.release("nobody")
    slots.release("nobody")
    assert slots.holders == {"a"} and slots.queued == [] and changes.seen == []


async def test_on_change_hears_every_entry_to_and_exit_from_the_queue() -> None:
    changes = Changes()
    slots = TurnSlots(1, changes)
    await slots.acquire("a")  # granted at once: not queued, no change
    assert changes.seen == []
    b = asyncio.ensure_future(slots.acquire("b"))
    c = asyncio.ensure_future(slots.acquire("c"))
    d = asyncio.ensure_future(slots.acquire("d"))
    await settle()
    assert changes.seen == ["b", "c", "d"]  # queued
    c.cancel()  # its caller gave up
    await settle()
    assert slots.queued == ["b", "d"]
    slots.release("d")  # withdrawn
    slots.release("a")  # b is granted
    await settle()
    assert changes.seen == ["b", "c", "d", "c", "d", "b"]
    assert b.done() and d.cancelled() and slots.holders == {"b"}


async def test_a_listener_that_raises_never_breaks_the_queue() -> None:
    def broken(agent: str) -> None:
        raise RuntimeError(f"listener failed on {agent}")

    slots = TurnSlots(1, broken)
    await slots.acquire("a")
    b = asyncio.ensure_future(slots.acquire("b"))
    await settle()
    assert slots.queued == ["b"] and not b.done()
    slots.release("a")
    await asyncio.wait_for(b, 5)
    assert slots.holders == {"b"}


async def test_a_waiter_cancelled_after_its_grant_still_holds_the_slot() -> None:
    """The grant is decided in release; the caller's own cancel that comes
    later does not undo it: the slot stays held until it is released."""
    slots = TurnSlots(1)
    await slots.acquire("a")
    b = asyncio.ensure_future(slots.acquire("b"))
    await settle()
    slots.release("a")
    b.cancel()
    await settle()
    assert slots.holders == {"b"} and slots.queued == []
    slots.release("b")
    assert slots.holders == set()
