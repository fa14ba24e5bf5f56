"""F42: the operator's notifications. A configured command runs once per event
that waits for the operator (a question, an approval, a crash), with the event
as one JSON object on stdin.

The Notifier is an actor, so commands run one after another on its own thread:
a slow or failing command is logged and never holds up the actor that
published the event.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pykka

import hyperhive.logs as logs
from hyperhive.actors.bridge import Handle
from hyperhive.actors.events import ApprovalQueued, BudgetWarning, ContainerCrash, Event, Hub, QuestionAsked

__all__ = ["NOTIFY_EVENTS", "Notifier", "notification"]

_log = logs.get("hyperhive.notify")
# The events that wait for the operator.
NOTIFY_EVENTS: tuple[type[Event], ...] = (QuestionAsked, ApprovalQueued, ContainerCrash, BudgetWarning)
TIMEOUT = 30.0


def notification(name: str, payload: dict[str, Any], now: float) -> dict[str, Any]:
    """What the command reads on stdin (pure)."""
    return {"event": name, "at": now, "payload": payload}


class Notifier(pykka.ThreadingActor):
    def __init__(self, command: str, hub: Hub) -> None:
        super().__init__()
        self._argv = shlex.split(command)
        self._hub = hub
        self._unsubscribe: Callable[[], None] | None = None

    def on_start(self) -> None:
        logs.bind_thread(actor="notifier")
        me = Handle(self.actor_ref.proxy())

        def listen(event: Event) -> None:  # on the publisher's thread: hand over
            if isinstance(event, NOTIFY_EVENTS):
                me.tell(Notifier.run, event.name, event.payload())

        self._unsubscribe = self._hub.subscribe(listen)

    def on_stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def run(self, name: str, payload: dict[str, Any]) -> None:
        data = json.dumps(notification(name, payload, time.time()), ensure_ascii=False) + "\n"
        try:
            r = subprocess.run(self._argv, input=data.encode(), capture_output=True, timeout=TIMEOUT)
        except (OSError, subprocess.SubprocessError) as exc:
            _log.warning("notify.failed", notify_event=name, error=f"{type(exc).__name__}: {exc}")
            return
        except Exception:  # noqa: BLE001 - a tell must never kill the actor
            _log.exception("notify.failed", notify_event=name)
            return
        if r.returncode != 0:
            _log.warning("notify.failed", notify_event=name, returncode=r.returncode,
                         stderr=r.stderr.decode(errors="replace")[-2000:])
        else:
            _log.info("notify.sent", notify_event=name)
