"""F44: a host-wide cap on turns running at once (``max_active_turns``).

A harness asks for a slot (``turn_slot``) before each turn or compaction and
gives it back (``turn_done``) after; the rest wait in order and show as
``queued``. The table lives on the IOLoop thread. A slot held by a harness
that died is given back when its container stops or crashes.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

import hyperhive.logs as logs

__all__ = ["TurnSlots"]

_log = logs.get("hyperhive.turns")


class TurnSlots:
    def __init__(self, capacity: int, on_change: Callable[[str], None] | None = None) -> None:
        self.capacity = capacity  # 0: no cap
        self._on_change = on_change  # an agent got queued, or left the queue
        self.holders: set[str] = set()
        self._queue: OrderedDict[str, asyncio.Future[None]] = OrderedDict()

    @property
    def queued(self) -> list[str]:
        return list(self._queue)

    async def acquire(self, agent: str) -> None:
        """Return once ``agent`` holds a slot (at once when it already does)."""
        if agent in self.holders:
            return
        if self.capacity <= 0 or (len(self.holders) < self.capacity and not self._queue):
            self.holders.add(agent)
            return
        fut = self._queue.get(agent)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._queue[agent] = fut
            _log.info("turns.queued", agent=agent, position=len(self._queue))
            self._changed(agent)
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            if self._queue.get(agent) is fut:  # the caller gave up while waiting
                del self._queue[agent]
                self._changed(agent)
            raise

    def release(self, agent: str) -> None:
        """Give back ``agent``'s slot, or withdraw it from the queue."""
        fut = self._queue.pop(agent, None)
        if fut is not None and not fut.done():
            fut.cancel()
            self._changed(agent)
        if agent in self.holders:
            self.holders.discard(agent)
            self._grant()

    def _grant(self) -> None:
        while self._queue and (self.capacity <= 0 or len(self.holders) < self.capacity):
            agent, fut = self._queue.popitem(last=False)
            if fut.done():
                continue
            self.holders.add(agent)
            fut.set_result(None)
            _log.info("turns.granted", agent=agent)
            self._changed(agent)

    def _changed(self, agent: str) -> None:
        if self._on_change is not None:
            try:
                self._on_change(agent)
            except Exception:  # noqa: BLE001 - a listener never breaks the queue
                _log.exception("turns.listener_failed")
