"""The harness's side of F41: report the bus state over the agent's socket at
once when it changes, and at least every interval the daemon asks for."""

from __future__ import annotations

import asyncio
from typing import Any

import hyperhive.logs as logs
from hyperhive.errors import HiveError

__all__ = ["beat_forever"]

_log = logs.get("hyperhive.harness.heartbeat")
FALLBACK_INTERVAL = 5.0


async def beat_forever(client: Any, bus: Any, stop: asyncio.Event) -> None:
    changed = asyncio.Event()
    last_sent: list[str] = [""]

    def on_event(_row: Any) -> None:
        if bus.state != last_sent[0]:
            changed.set()

    unsubscribe = bus.subscribe(on_event)
    interval = FALLBACK_INTERVAL
    try:
        while not stop.is_set():
            changed.clear()
            state = bus.state
            try:
                resp = await client.request("heartbeat", state=state)
                last_sent[0] = state
                interval = float(resp.get("next_in", interval))
            except HiveError as exc:  # the daemon is restarting: keep beating
                _log.warning("heartbeat.failed", code=exc.code, error=exc.message)
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(changed.wait())]
            try:
                await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
    finally:
        unsubscribe()
