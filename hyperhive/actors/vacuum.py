"""VacuumSweeper actor (F22): retention is the host's job, not the agents'.

Once at start, then every ``interval`` seconds on the IOLoop clock:
- the Broker drops messages delivered more than 30 days ago (never undelivered ones);
- every agent's events db (live or kept state) drops events older than 7 days,
  then all but the newest 2000.
Non-zero counts are logged (``vacuum.messages``, ``vacuum.events``).
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka

import hyperhive.logs as logs
from hyperhive.actors.bridge import Reply, claim, resolve
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import Hub
from hyperhive.errors import BadName
from hyperhive.names import AgentName, is_valid_name
from hyperhive.paths import StatePaths
from hyperhive.store.events_db import EVENTS_FILE, EventLog
from hyperhive.store.retention import incremental_vacuum

__all__ = ["DAY", "VacuumSweeper", "VacuumSweeperProxy"]

_log = logs.get("hyperhive.vacuum")

DAY = 86400.0
MESSAGE_MAX_AGE = 30 * DAY
EVENT_MAX_AGE = 7 * DAY
EVENT_KEEP = 2000


class VacuumSweeper(pykka.ThreadingActor):
    def __init__(
        self, paths: StatePaths, broker: Any, clock: LoopClock, interval: float,
        message_max_age: float = MESSAGE_MAX_AGE, event_max_age: float = EVENT_MAX_AGE,
        event_keep: int = EVENT_KEEP, now: Callable[[], float] = time.time, hub: Hub | None = None,
    ) -> None:
        super().__init__()
        self._paths = paths
        self._broker = broker
        self._clock = clock
        self._interval = interval
        self._message_max_age = message_max_age
        self._event_max_age = event_max_age
        self._event_keep = event_keep
        self._now = now
        self._hub = hub
        self.sweeps = 0  # completed sweeps, for `ls`-style reporting and tests
        self._me: Any = None

    def on_start(self) -> None:
        self._me = self.actor_ref.proxy()
        logs.bind_thread(actor="vacuum")
        self._me.tick.defer()

    def tick(self) -> None:
        """The scheduled sweep: book the next one first, so a failure keeps the cadence."""
        if self._interval > 0:
            self._clock.call_later(self._interval, self._me.tick.defer)
        self.sweep()

    def sweep(self, reply: Reply | None = None) -> None:
        """Sweep now; ``reply`` gets ``{"messages": n, "events": m}``."""
        if not claim(reply):
            return
        now = self._now()
        try:
            events = self._sweep_events(now)
        except Exception:  # noqa: BLE001 - reachable by tell: log, never die
            _log.exception("vacuum.events_failed")
            events = 0
        done: Reply = cf.Future()

        def messages_swept(f: Reply) -> None:  # runs on the Broker's thread: hand back
            try:
                self._me.finish.defer(f, events, reply)
            except pykka.ActorDeadError:
                pass

        done.add_done_callback(messages_swept)
        try:
            self._broker.vacuum.defer(now, self._message_max_age, reply=done)
        except pykka.ActorDeadError:
            done.cancel()
            self.finish(done, events, reply)

    def finish(self, done: Reply, events: int, reply: Reply | None) -> None:
        messages = 0
        if done.cancelled():
            _log.warning("vacuum.broker_gone")
        elif done.exception() is not None:
            _log.error("vacuum.messages_failed", error=str(done.exception()))
        else:
            messages = int(done.result())
        if messages:
            _log.info("vacuum.messages", count=messages, max_age_days=self._message_max_age / DAY)
        self.sweeps += 1
        if self._hub is not None:
            self._hub.publish("vacuum.swept", {"messages": messages, "events": events})
        resolve(reply, {"messages": messages, "events": events})

    def _sweep_events(self, now: float) -> int:
        total = 0
        root = self._paths.agents
        for entry in sorted(root.iterdir()) if root.is_dir() else []:
            if not is_valid_name(entry.name):
                continue
            try:
                db_file = self._paths.state(AgentName(entry.name)) / EVENTS_FILE
            except BadName:  # a symlink out of the state dir: not ours to touch
                _log.warning("vacuum.skipped", agent=entry.name, reason="escapes the state dir")
                continue
            if not db_file.is_file():
                continue
            try:
                removed = self._prune(db_file, now)
            except Exception:  # noqa: BLE001 - one bad db must not stop the sweep
                _log.exception("vacuum.events_failed", agent=entry.name)
                continue
            if removed:
                _log.info("vacuum.events", agent=entry.name, count=removed)
            total += removed
        return total

    def _prune(self, db_file: Path, now: float) -> int:
        log = EventLog(db_file)
        try:
            removed = log.prune(now, self._event_max_age, self._event_keep)
            if removed:
                incremental_vacuum(log.db)
            return removed
        finally:
            log.close()


class VacuumSweeperProxy(pykka.ActorProxy[VacuumSweeper]):
    """Typed proxy for the VacuumSweeper."""
