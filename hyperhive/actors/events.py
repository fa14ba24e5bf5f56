"""One-way event publication from actors to whoever listens (the dashboard's
websocket fan-out, the notifier). Listeners must not block: they hand the
event to their own thread or loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal

import hyperhive.logs as logs

__all__ = ["EventName", "Hub"]

EventName = Literal[
    "message.sent",
    "message.delivered",
    "container.state",
    "container.crash",
    "container.killed",
    "container.activity",
    "container.added",
    "container.removed",
    "question.asked",
    "question.resolved",
    "approval.queued",
    "approval.resolved",
    "message.woke",
    "vacuum.swept",
    "proxy.refused",
    "gateway.usage",
]

Listener = Callable[[str, dict[str, Any]], None]
_log = logs.get("hyperhive.events")


class Hub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def subscribe(self, fn: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners = [*self._listeners, fn]

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = [f for f in self._listeners if f is not fn]

        return unsubscribe

    def publish(self, name: EventName, payload: dict[str, Any]) -> None:
        for fn in self._listeners:
            try:
                fn(name, payload)
            except Exception:  # noqa: BLE001 - one bad listener never stops the rest
                _log.exception("events.listener_failed", event_name=name)
