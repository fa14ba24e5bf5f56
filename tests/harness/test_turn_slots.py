"""The turn loop's slot hook (where F44's host-wide cap plugs in), on a real
daemon with the builtin driver over real MCP: a turn starts only once its
slot is granted, and `/cancel` drops a turn still waiting for one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from agent_harness import take_over
from support import Hive, async_wait_for

from hyperhive.client import AsyncClient
from hyperhive.harness.builtin import BuiltinDriver
from hyperhive.harness.bus import Bus
from hyperhive.harness.turns import TurnLoop

pytestmark = pytest.mark.e2e  # a daemon and a harness


async def test_turns_wait_for_their_slot_and_cancel_drops_a_queued_one(hive: Hive) -> None:
    await asyncio.to_thread(take_over, hive, "a")
    gate = asyncio.Event()
    entered: list[str] = []
    inside = 0

    @asynccontextmanager
    async def slot(kind: str) -> AsyncIterator[None]:
        nonlocal inside
        entered.append(kind)
        await gate.wait()
        inside += 1
        try:
            yield
        finally:
            inside -= 1

    client = AsyncClient(hive.socket("a"))
    await client.connect()
    driver = BuiltinDriver("a", str(hive.socket("a")))
    await driver.open()
    bus = Bus(None)
    turns = TurnLoop("a", client, driver, bus, slot)
    stop = asyncio.Event()
    runner = asyncio.create_task(turns.run(stop))
    kinds = lambda: [e.kind for e in bus.history()]  # noqa: E731
    try:
        turns.note("queued, then cancelled")
        await async_wait_for(lambda: entered == ["turn"], what="the slot asked for")
        assert turns.busy and bus.state == "idle" and "turn_start" not in kinds()
        assert await turns.cancel() is True
        assert kinds() == ["note", "cancel_requested", "cancelled"]
        assert not turns.busy

        turns.note("this one runs")
        await async_wait_for(lambda: len(entered) == 2, what="the second slot request")
        assert "turn_start" not in kinds()
        gate.set()
        await async_wait_for(lambda: "turn_end" in kinds(), timeout=20, what="the turn")
        assert kinds()[3:5] == ["note", "turn_start"] and kinds()[-1] == "turn_end"
        assert inside == 0  # released when the turn ended
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)
        await driver.close()
        await client.close()
