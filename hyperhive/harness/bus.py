"""The harness's event bus (F27): every event goes to the agent's events
sqlite, a 500-event ring buffer (``GET /events/history``) and the live
subscribers (the web UI's streams).

The agent's state (idle / thinking / compacting) is derived from the events
themselves, so the badge, the history and the live stream can never disagree.
The ring is seeded from the sqlite tail at start, so a restarted harness
still shows what came before.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Literal

import hyperhive.logs as logs
from hyperhive.store.events_db import EventLog, EventRow

__all__ = ["RING_SIZE", "Bus", "State", "derive_state", "next_state", "turn_open"]

_log = logs.get("hyperhive.harness.bus")

RING_SIZE = 500
State = Literal["idle", "thinking", "compacting"]

# ready/stopped reset: a harness that died mid-turn left a turn_start with no
# turn_end, and the new process is not running that turn.
_TRANSITIONS: dict[str, State] = {
    "turn_start": "thinking",
    "turn_end": "idle",
    "compact_start": "compacting",
    "compact_end": "idle",
    "ready": "idle",
    "stopped": "idle",
}


def next_state(state: State, kind: str) -> State:
    return _TRANSITIONS.get(kind, state)


def derive_state(kinds: Iterable[str]) -> State:
    state: State = "idle"
    for kind in kinds:
        state = next_state(state, kind)
    return state


def turn_open(kinds: Iterable[str]) -> bool:
    """True when the last turn boundary in ``kinds`` opened a turn (the banner shimmers)."""
    return derive_state(kinds) != "idle"


Subscriber = Callable[[EventRow], None]


class Bus:
    """Single-threaded: publish from the harness's event loop only."""

    def __init__(self, log: EventLog | None, ring_size: int = RING_SIZE) -> None:
        self.log = log
        self.ring: deque[EventRow] = deque(log.tail(ring_size) if log else (), maxlen=ring_size)
        self.state: State = derive_state(e.kind for e in self.ring)
        self._last_id = self.ring[-1].id if self.ring else 0
        self._subs: list[Subscriber] = []

    def publish(self, kind: str, **data: Any) -> EventRow:
        row = self._store(kind, data)
        self.ring.append(row)
        self.state = next_state(self.state, kind)
        _log.info("harness.event", kind=kind, event_id=row.id, **_brief(data))
        for sub in list(self._subs):
            try:
                sub(row)
            except Exception:  # noqa: BLE001 - one broken viewer never stops the bus
                _log.exception("bus.subscriber_failed")
        return row

    def _store(self, kind: str, data: dict[str, Any]) -> EventRow:
        if self.log is not None:
            try:
                [row] = self.log.append([(kind, data)])
                self._last_id = row.id
                return row
            except Exception:  # noqa: BLE001 - a full disk must not stop the agent; the ring still has it
                _log.exception("bus.store_failed", kind=kind)
        self._last_id += 1
        return EventRow(self._last_id, time.time(), kind, data)

    def history(self) -> list[EventRow]:
        return list(self.ring)

    def since(self, after_id: int) -> list[EventRow]:
        return [e for e in self.ring if e.id > after_id]

    def subscribe(self, sub: Subscriber) -> Callable[[], None]:
        self._subs.append(sub)

        def unsubscribe() -> None:
            if sub in self._subs:
                self._subs.remove(sub)

        return unsubscribe

    def close(self) -> None:
        self._subs.clear()
        if self.log is not None:
            self.log.close()


_RESERVED = frozenset({"event", "kind", "event_id", "level", "logger", "timestamp"})


def _brief(data: dict[str, Any]) -> dict[str, Any]:
    """What of an event goes to the harness log line: short scalars only."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k in _RESERVED:
            continue
        if isinstance(v, str):
            out[k] = v if len(v) <= 200 else v[:200] + "…"
        elif isinstance(v, int | float | bool) or v is None:
            out[k] = v
    return out
