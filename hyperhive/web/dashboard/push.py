"""Live push to open dashboards (F33).

Actors publish on the Hub from their own threads; the listener only hands
the event to the IOLoop (``add_callback``). Events gathered in one loop turn
become one patch: container state changes as single rows, the other
sections rebuilt whole. With no page open the listener does not wake the loop
at all (issue 17: a send then costs the loop nothing here): the events wait
in a deque, taken in once a second (``IDLE_DRAIN``), when a page opens, and
before ``/metrics`` or ``/api/state`` answer. A patch carries ``at``, the time the first of its
events was published, so a client can measure push latency.

Costs (issue 15) change with every model call (a gateway.usage event each):
those repaint the calling agents' rows and the fleet's total at most once
per ``cost_interval`` seconds (the first at once, then the calls since
together), so a busy agent does not flood the websockets. A budget event
repaints its agent's row, or every row when it is the fleet's (each agent's
``over budget`` follows the fleet's).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import tornado.websocket
from tornado.ioloop import IOLoop, PeriodicCallback

import hyperhive.logs as logs
from hyperhive.actors.events import (
    BudgetExceeded,
    BudgetRaised,
    BudgetWarning,
    ContainerActivity,
    ContainerState,
    Event,
    GatewayUsage,
    MessageSent,
)
from hyperhive.actors.handoff import to_loop
from hyperhive.names import OPERATOR
from hyperhive.web.dashboard.handlers import Gate, gate_request, security_headers, write_refusal
from hyperhive.web.dashboard.state import StateSource

__all__ = ["COST_INTERVAL", "PushSocket", "Pusher", "cost_delay", "sections_for"]

_log = logs.get("hyperhive.push")

COST_INTERVAL = 2.0  # seconds between two repaints of the cost cells
IDLE_DRAIN = 1.0  # seconds between takes of the events while no page is open

# Which sections an event makes stale (container.state is sent as a row).
_SECTIONS: dict[str, tuple[str, ...]] = {
    "container.added": ("containers", "tombstones"),
    "container.removed": ("containers", "tombstones"),
    "tombstone.purged": ("tombstones",),
    "question.asked": ("questions",),
    "question.resolved": ("questions",),
    "approval.queued": ("approvals",),
    "approval.resolved": ("approvals", "tombstones"),
}


def sections_for(name: str, payload: dict[str, Any]) -> tuple[str, ...]:
    """The sections an event makes stale (pure)."""
    if name == "message.sent":
        return ("flow", "inbox") if payload.get("to") == OPERATOR else ("flow",)
    return _SECTIONS.get(name, ())


def cost_delay(last: float | None, now: float, interval: float) -> float:
    """How long a cost repaint waits (pure): none after a quiet ``interval``, else until it has passed."""
    return 0.0 if last is None else max(0.0, last + interval - now)


class Pusher:
    """Lives on the IOLoop thread except ``on_event``, which any thread may call."""

    def __init__(self, io_loop: IOLoop, source: StateSource,
                 on_event: Callable[[Event], None] | None = None, cost_interval: float = COST_INTERVAL,
                 idle_drain: float = IDLE_DRAIN) -> None:
        self._io_loop = io_loop
        self._loop: asyncio.AbstractEventLoop = io_loop.asyncio_loop  # type: ignore[attr-defined]
        self._source = source
        self._extra = on_event
        self._inbox: deque[tuple[Event, float]] = deque()
        self._wake_pending = False
        self.clients: set[PushSocket] = set()
        self._stale: set[str] = set()
        self._rows: dict[str, dict[str, Any]] = {}
        self._first_at: float | None = None
        self._scheduled = False
        self._running = False
        self.cost_interval = cost_interval
        self._cost_agents: dict[str, float] = {}  # agent → when its first call since the last repaint came
        self._cost_rows: dict[str, dict[str, Any]] = {}  # rows to repaint for their cost only (files not re-read)
        self._cost_timer: object | None = None
        self._cost_last: float | None = None  # the last cost repaint (loop time)
        self._idle: PeriodicCallback | None = None
        self.idle_drain = idle_drain

    def on_event(self, event: Event) -> None:
        """Hub listener: runs on an actor thread, so it only hands over. A burst
        (a group commit publishes one event per message) costs one wake-up of
        the loop, not one per event; from the Broker's commit, the same wake-up
        as the commit's replies (`handoff`)."""
        self._inbox.append((event, time.time()))  # deque.append is thread-safe
        if self.clients and not self._wake_pending:  # no page open: the idle drain takes it
            self._wake_pending = True
            to_loop(self._loop, self._drain)

    def start(self) -> None:
        """On the loop: the idle drain (events while no page is open)."""
        self._idle = PeriodicCallback(self._drain_idle, self.idle_drain * 1000)
        self._idle.start()

    def _drain_idle(self) -> None:
        if self._inbox:
            self._drain()

    def drain(self) -> None:
        """On the loop: take in every event published so far."""
        self._drain()

    def _drain(self) -> None:
        self._wake_pending = False  # before draining: an event appended from now on is drained or wakes us
        while self._inbox:
            event, at = self._inbox.popleft()
            if self._extra is not None:
                self._extra(event)
            self._note(event, at)

    def _note(self, event: Event, at: float) -> None:
        payload = event.payload()
        match event:
            case MessageSent():
                self._source.note_message(payload)
            case ContainerState(snapshot=snap):
                self._rows[snap.name] = payload  # the newest snapshot wins
            case ContainerActivity(agent=agent):
                row = self._source.snapshot_of(agent)
                if row is not None:
                    self._rows[agent] = row
            case GatewayUsage(agent=agent):
                self._cost_call(agent, at)
            case BudgetWarning(agent=who) | BudgetExceeded(agent=who) | BudgetRaised(agent=who):
                if who:
                    row = self._source.snapshot_of(who)
                    if row is not None:
                        self._rows[who] = row
                self._mark(("fleet",) if who else ("fleet", "containers"), at)
        self._source.note_container(event.name, payload)
        self._mark(sections_for(event.name, payload), at)

    def _cost_call(self, agent: str, at: float) -> None:
        """A model call was counted: its row and the fleet's total repaint soon (throttled)."""
        if self._source.costs is None:
            return
        self._cost_agents.setdefault(agent, at)
        if self._cost_timer is None:
            delay = cost_delay(self._cost_last, self._io_loop.time(), self.cost_interval)
            self._cost_timer = self._io_loop.call_later(delay, self._cost_due)

    def _cost_due(self) -> None:
        self._cost_timer = None
        self._cost_last = self._io_loop.time()
        agents, self._cost_agents = self._cost_agents, {}
        for agent in agents:
            row = self._source.snapshot_of(agent)
            if row is not None:
                self._cost_rows[agent] = row
        if agents:
            self._mark(("fleet",), min(agents.values()))

    def close(self) -> None:
        """At the dashboard's stop: no cost repaint or idle drain left pending."""
        if self._idle is not None:
            self._idle.stop()
        if self._cost_timer is not None:
            self._io_loop.remove_timeout(self._cost_timer)
            self._cost_timer = None

    def touch(self, *sections: str) -> None:
        """A change no actor publishes (the operator read the inbox): push these sections."""
        self._mark(sections, time.time())

    def _mark(self, sections: Iterable[str], at: float) -> None:
        self._stale.update(sections)
        if self._first_at is None:
            self._first_at = at
        self._schedule()

    def _schedule(self) -> None:
        # Next loop turn: every event already queued in this one joins the patch.
        if not self._scheduled and not self._running:
            self._scheduled = True
            self._io_loop.add_callback(self._flush)

    async def _flush(self) -> None:
        self._scheduled = False
        stale, rows, at = self._stale, self._rows, self._first_at
        # A row that changed state is rebuilt whole; one whose costs alone changed keeps its observed files.
        costs = {n: r for n, r in self._cost_rows.items() if n not in rows}
        self._stale, self._rows, self._cost_rows, self._first_at = set(), {}, {}, None
        if not self.clients or (not stale and not rows and not costs):
            return
        self._running = True
        try:
            patch: dict[str, Any] = {"type": "patch", "at": at, "sections": await self._source.sections(stale)}
            if (rows or costs) and "containers" not in stale:
                patch["rows"] = [*(await self._source.container_rows(list(rows.values())) if rows else []),
                                 *(await self._source.container_rows(list(costs.values()), cached=True)
                                   if costs else [])]
            self.broadcast(patch)
        except Exception:  # noqa: BLE001 - the heartbeat refetch covers a missed patch
            _log.exception("push.flush_failed", sections=sorted(stale))
        finally:
            self._running = False
            if self._stale or self._rows or self._cost_rows:
                self._schedule()

    def broadcast(self, message: dict[str, Any]) -> None:
        data = json.dumps(message)
        for client in list(self.clients):
            try:
                client.write_message(data)
            except tornado.websocket.WebSocketClosedError:
                self.clients.discard(client)


class PushSocket(tornado.websocket.WebSocketHandler):
    """``GET /ws``: a full snapshot on open, then patches. Gated like every
    dashboard request (`dash_handlers.gate_request`); a browser's upgrade must
    come from the dashboard's own origin."""

    def initialize(self, pusher: Pusher, source: StateSource, gate: Gate) -> None:
        self._pusher = pusher
        self._source = source
        self._gate = gate

    def set_default_headers(self) -> None:
        security_headers(self)

    def prepare(self) -> None:
        gate_request(self, self._gate, websocket=True)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if not write_refusal(self, status_code, kwargs.get("exc_info", (None, None))[1]):
            self.finish(f"{status_code}")

    def check_origin(self, origin: str) -> bool:
        # Reached only for an origin other than this host's; the gate refused those already.
        return False

    async def open(self, *args: Any, **kwargs: Any) -> None:
        self._pusher.clients.add(self)
        self._pusher.drain()  # what came while no page was open, before the snapshot
        try:
            state = await self._source.snapshot()
        except Exception:  # noqa: BLE001 - the page's heartbeat refetch will retry
            _log.exception("push.snapshot_failed")
            return
        try:
            self.write_message(json.dumps({"type": "snapshot", "state": state}))
        except tornado.websocket.WebSocketClosedError:
            self._pusher.clients.discard(self)

    def on_message(self, message: str | bytes) -> None:
        pass  # the page only listens

    def on_close(self) -> None:
        self._pusher.clients.discard(self)
