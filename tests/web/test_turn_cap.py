"""F44: the host-wide cap on turns running at once, from the table itself to
real harnesses under a daemon with max_active_turns=1."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from support import Hive, async_wait_for, wait_for

from hyperhive.client import AsyncClient
from hyperhive.store.events_db import EventLog
from hyperhive.web.tables.turn_slots import TurnSlots


async def test_the_cap_grants_in_order_and_a_withdrawn_waiter_is_skipped() -> None:
    slots = TurnSlots(1)
    await slots.acquire("a")
    await slots.acquire("a")  # holding already: at once
    b = asyncio.ensure_future(slots.acquire("b"))
    c = asyncio.ensure_future(slots.acquire("c"))
    d = asyncio.ensure_future(slots.acquire("d"))
    await asyncio.sleep(0)
    assert slots.queued == ["b", "c", "d"] and slots.holders == {"a"}
    c.cancel()  # its caller gave up
    await asyncio.sleep(0)
    slots.release("d")  # withdrawn by its harness
    assert slots.queued == ["b"]
    slots.release("a")
    await b
    assert slots.holders == {"b"}
    await asyncio.sleep(0)
    assert d.cancelled() and c.cancelled()
    slots.release("b")
    assert slots.holders == set() and slots.queued == []


async def test_no_cap_grants_everyone() -> None:
    slots = TurnSlots(0)
    await asyncio.gather(*(slots.acquire(n) for n in "abcde"))
    assert slots.holders == set("abcde")


def _hive(tmp_path: Path) -> Hive:
    return Hive(tmp_path / "state", ["--max-active-turns", "1", "--heartbeat-seconds", "0.5"]).start()


@pytest.mark.e2e  # starts a daemon
def test_a_waiting_agent_shows_queued_and_gets_the_slot_when_it_frees(tmp_path: Path) -> None:
    hive = _hive(tmp_path)
    try:
        for n in ("a", "b"):
            hive.spawn(n)
            hive.admin("stop", name=n)  # the test holds their sockets' turn slots itself

        async def run() -> None:
            a, b = AsyncClient(hive.socket("a")), AsyncClient(hive.socket("b"))
            try:
                assert (await a.request("turn_slot", kind="turn"))["granted"]
                waiting = asyncio.ensure_future(b.request("turn_slot", kind="turn"))
                await async_wait_for(lambda: hive.ls()["b"]["activity"] == "queued", what="b queued")
                assert not waiting.done()
                await a.request("turn_done")
                assert (await asyncio.wait_for(waiting, 5))["granted"]
                assert hive.ls()["b"]["activity"] != "queued"
                await b.request("turn_done")
            finally:
                await a.close()
                await b.close()

        asyncio.run(run())
    finally:
        hive.stop()


def _turns(state: Path) -> list[tuple[float, float]]:
    """(turn_start, last event inside the turn) of every turn in an events db."""
    log = EventLog.in_state_dir(state)
    try:
        rows = log.tail(5000)
    finally:
        log.close()
    out: list[tuple[float, float]] = []
    start: float | None = None
    last = 0.0
    for r in rows:
        if r.kind == "turn_start":
            start = r.ts
        elif r.kind == "turn_end" and start is not None:
            out.append((start, last))
            start = None
        elif start is not None:
            last = r.ts
    return out


@pytest.mark.e2e  # a daemon and real harnesses
@pytest.mark.skipif(sys.platform != "linux", reason="real harnesses")
def test_with_one_slot_two_busy_agents_never_overlap(tmp_path: Path) -> None:
    hive = _hive(tmp_path)
    try:
        hive.spawn("a")
        hive.spawn("b")

        async def flood() -> None:
            op = AsyncClient(hive.paths.admin_socket)
            try:
                for i in range(12):
                    for n in ("a", "b"):
                        await op.request("send", to=n, body=f"job {i} for {n}")
                    await asyncio.sleep(0.01)
            finally:
                await op.close()

        asyncio.run(flood())

        def replies() -> list[dict[str, Any]]:
            return [m for m in hive.admin("inbox", limit=200)["messages"] if m["body"].startswith("[builtin reply")]

        wait_for(lambda: len(replies()) >= 24, timeout=60, what="24 replies")
        a_turns = _turns(hive.paths.state("a"))  # type: ignore[arg-type]
        b_turns = _turns(hive.paths.state("b"))  # type: ignore[arg-type]
        assert a_turns and b_turns
        for s1, e1 in a_turns:
            for s2, e2 in b_turns:
                assert e1 < s2 or e2 < s1, f"a's turn {s1}-{e1} overlaps b's {s2}-{e2}"
    finally:
        hive.stop()
