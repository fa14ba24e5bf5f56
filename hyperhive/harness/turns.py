"""The turn loop (F26): wait for work, run one turn of the driver, record
every event on the bus, repeat.

Work comes from three places, taken in this order:
1. a compaction asked for on the web UI (`/compact`),
2. notes posted to the web UI's prompt row (`note`),
3. the inbox, through the system-level recv (wait None: the daemon's default).
The pending recv is never cancelled while the harness lives: a message the
daemon hands to a recv nobody reads would be lost, so a note's turn runs while
the recv stays parked and its messages are taken on the next round.

Every turn and compaction first enters ``slot(kind)`` (kind "turn" or
"compact"), an async context manager: the host-wide turn cap (F44) plugs in
there (acquire on enter, release on exit; publish a "queued" event while
waiting if the UI should say so). By default it admits at once. `cancel()`
also drops a turn still waiting for its slot.

A note is a `Note`: an InboxRow with id 0 (it is in no inbox) and a
``verified`` flag the harness sets. Anything that reaches the web UI's socket
can post one (a local process, the agent's own tools), so a note is
unverified unless its caller vouches that the operator wrote it
(``note(body, verified=True)``, once the daemon authenticates the operator).
Its ``from_`` is always the operator: whom a reply goes to, not who wrote it;
the drivers frame a note by ``verified`` (see `claude_prompt.format_prompt`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import hyperhive.logs as logs
from hyperhive.errors import BadRequest, Conflict, ConnectFailed, ConnectionLost, HiveError
from hyperhive.harness.bus import Bus
from hyperhive.harness.driver import Driver
from hyperhive.names import OPERATOR
from hyperhive.wire import InboxRow

__all__ = ["CANCEL_GRACE", "ERROR_PAUSE", "LOST_PAUSE", "Note", "Slot", "TurnLoop", "no_slot"]

_log = logs.get("hyperhive.harness")

CANCEL_GRACE = 1.5  # the driver's own cancel gets this long before the task is cancelled
LOST_PAUSE = 0.5  # seconds between a recv whose connection was lost and the reconnect
ERROR_PAUSE = 1.0  # seconds after a recv the daemon refused, before the next
PREVIEW = 500
NOTE_MAX = 100_000

Slot = Callable[[str], AbstractAsyncContextManager[Any]]


def no_slot(kind: str) -> AbstractAsyncContextManager[Any]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Note(InboxRow):
    """A note posted to the agent's web UI, for its next turn (id 0: not an
    inbox message). ``verified``: the operator is known to have written it;
    False for a note any local process could have posted."""

    verified: bool = False

    @classmethod
    def make(cls, me: str, body: str, at: float, verified: bool = False) -> Note:
        return cls(id=0, from_=OPERATOR, to=me, body=body, sent_at=at, delivered_at=at, verified=verified)


def _preview(m: InboxRow) -> dict[str, Any]:
    body = m.body if len(m.body) <= PREVIEW else m.body[:PREVIEW] + "…"
    return {"id": m.id, "from": m.from_, "body": body}


class TurnLoop:
    def __init__(self, name: str, client: Any, driver: Driver, bus: Bus, slot: Slot = no_slot, *,
                 lost_pause: float = LOST_PAUSE, error_pause: float = ERROR_PAUSE) -> None:
        self.name = name
        self.client = client
        self.driver = driver
        self.bus = bus
        self.slot = slot
        self.lost_pause, self.error_pause = lost_pause, error_pause
        self._notes: list[InboxRow] = []  # Notes
        self._compact = False
        self._wake = asyncio.Event()
        self._current: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self._current is not None and not self._current.done()

    # --- requests from the web UI --------------------------------------------

    def note(self, body: str, *, verified: bool = False) -> None:
        """Queue a note for the agent's next turn. ``verified=True`` only when
        the caller knows the operator wrote it; by default it is framed as
        posted by a local process whose author is not verified."""
        if not isinstance(body, str) or not body.strip():
            raise BadRequest("the note is empty")
        if len(body) > NOTE_MAX:
            raise BadRequest(f"the note is over {NOTE_MAX} characters")
        self._notes.append(Note.make(self.name, body, time.time(), verified=verified is True))
        self.bus.publish("note", body=body)
        self._wake.set()

    def request_compact(self) -> None:
        reason = self.driver.compact_refusal()
        if reason:
            raise Conflict(reason)
        if not self._compact:
            self._compact = True
            self.bus.publish("compact_requested")
            self._wake.set()

    async def cancel(self) -> bool:
        """Stop the running turn (or compaction); False when none runs."""
        task = self._current
        if task is None or task.done():
            return False
        self.bus.publish("cancel_requested")
        if await self.driver.cancel():  # the driver ends its own turn cleanly
            await asyncio.wait({task}, timeout=CANCEL_GRACE)
        if not task.done():  # no driver cancel, still waiting for a slot, or stuck
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_GRACE)
        return True

    # --- the loop -------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        recv: asyncio.Task[dict[str, Any]] | None = None
        try:
            while not stop.is_set():
                if recv is None:
                    recv = asyncio.create_task(self.client.request("recv", system=True))
                if not (self._compact or self._notes or recv.done()):
                    self._wake.clear()
                    wake = asyncio.create_task(self._wake.wait())
                    await asyncio.wait({recv, wake, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    wake.cancel()
                    continue
                if self._compact:
                    self._compact = False
                    await self._execute("compact_start", "compact_end", self.driver.compact, stopping)
                elif self._notes:
                    notes, self._notes = self._notes, []
                    await self._turn(notes, stopping)
                else:
                    done, recv = recv, None
                    messages = await self._take(done, stopping)
                    if messages:
                        await self._turn(messages, stopping)
        finally:
            stopping.cancel()
            if recv is not None:
                recv.cancel()

    async def _take(self, recv: asyncio.Task[dict[str, Any]], stopping: asyncio.Task[Any]) -> list[InboxRow]:
        try:
            return [InboxRow.from_wire(m) for m in recv.result()["messages"]]
        except (ConnectionLost, ConnectFailed):
            self.bus.publish("error", error="lost the daemon connection; reconnecting")
            await asyncio.wait({stopping}, timeout=self.lost_pause)
            if not stopping.done():
                await self.client.connect(deadline=60)
        except HiveError as exc:  # the daemon's answer (unavailable: shutting down, no reply in time…)
            self.bus.publish("error", error=f"recv failed: {exc.code}: {exc.message}")
            await asyncio.wait({stopping}, timeout=self.error_pause)
        return []

    async def _turn(self, messages: list[InboxRow], stopping: asyncio.Task[Any]) -> None:
        async def work(emit: Callable[..., Any]) -> None:
            await self.driver.turn(messages, emit)

        await self._execute("turn_start", "turn_end", work, stopping,
                            messages=[_preview(m) for m in messages])

    async def _execute(self, start: str, end: str, work: Callable[[Callable[..., Any]], Coroutine[Any, Any, None]],
                       stopping: asyncio.Task[Any], **start_data: Any) -> None:
        """Run ``work`` inside a turn slot, bracketed by ``start``/``end`` events.

        Waiting for the slot is part of the task, so `/cancel` (or a stopping
        harness) also drops a turn that is still queued; ``end`` is published
        only for a turn that started.
        """
        started = False

        async def body() -> None:
            nonlocal started
            async with self.slot(start.removesuffix("_start")) as report:
                started = True
                self.bus.publish(start, **start_data)

                def emit(kind: str, **data: Any) -> None:
                    if kind == "result" and isinstance(report, dict):  # the CLI's cost, for turn_done
                        cost = data.get("total_cost_usd")
                        if isinstance(cost, int | float) and not isinstance(cost, bool):
                            report["cost_usd"] = report.get("cost_usd", 0.0) + float(cost)
                    self.bus.publish(kind, **data)

                await work(emit)

        task = asyncio.create_task(body())
        self._current = task
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():  # the harness is stopping mid-turn
                await self.cancel()
            if task.cancelled():
                self.bus.publish("cancelled")
            elif (exc := task.exception()) is not None:
                _log.error("harness.turn_failed", exc_info=exc)
                self.bus.publish("error", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._current = None
            if started:
                self.bus.publish(end)
