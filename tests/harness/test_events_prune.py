"""F22 for an agent's events db: its own harness trims it (the daemon never
opens a file in the agent's state dir)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hyperhive.harness.loop import EVENT_KEEP, _prune_events
from hyperhive.store.events_db import EventLog


async def test_the_harness_trims_its_events_at_start_and_on_schedule(tmp_path: Path) -> None:
    log = EventLog.in_state_dir(tmp_path)
    now = time.time()
    log.append([("old", {})] * 100, ts=now - 8 * 86400)
    log.append([("new", {})] * (EVENT_KEEP + 500), ts=now)
    stop = asyncio.Event()
    task = asyncio.create_task(_prune_events(log, stop, every=0.01))
    deadline = time.monotonic() + 10
    while log.count() != EVENT_KEEP and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
    assert log.count() == EVENT_KEEP and {r.kind for r in log.tail(EVENT_KEEP)} == {"new"}
    log.append([("new", {})] * 10, ts=now)  # the next round trims again
    while log.count() != EVENT_KEEP and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
    assert log.count() == EVENT_KEEP
    stop.set()
    await asyncio.wait_for(task, 5)
    log.close()
