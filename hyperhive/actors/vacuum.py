"""VacuumSweeper actor (F22): retention is the host's job, not the agents'.

Once at start, then every ``interval`` seconds on the IOLoop clock, the
Broker drops messages delivered more than 30 days ago (never undelivered
ones); a non-zero count is logged (``vacuum.messages``). The Ledger folds
model calls older than ``usage_max_age`` (90 days) into per-agent totals.

Each agent's events db is trimmed by its own harness (7 days, then the newest
2000: `hyperhive.harness.loop`), never by the daemon: it lives in the agent's
state dir, where the agent may have swapped it (or its -wal) for a link to a
host file, and sqlite follows links.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pykka

import hyperhive.logs as logs
from hyperhive.actors.bridge import Handle, Reply, claim, parks, resolve
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import Hub, VacuumSwept
from hyperhive.actors.ledger import Ledger
from hyperhive.errors import Unavailable
from hyperhive.paths import StatePaths

__all__ = ["DAY", "VacuumSweeper"]

Swept = dict[str, Any]

_log = logs.get("hyperhive.vacuum")

DAY = 86400.0
MESSAGE_MAX_AGE = 30 * DAY
USAGE_MAX_AGE = 90 * DAY


class VacuumSweeper(pykka.ThreadingActor):
    def __init__(
        self, paths: StatePaths, broker: pykka.ActorProxy[Broker], clock: LoopClock, interval: float,
        message_max_age: float = MESSAGE_MAX_AGE, now: Callable[[], float] = time.time, hub: Hub | None = None,
        ledger: pykka.ActorProxy[Ledger] | None = None, usage_max_age: float = USAGE_MAX_AGE,
    ) -> None:
        super().__init__()
        self._paths = paths
        self._broker = Handle(broker)
        self._clock = clock
        self._interval = interval
        self._message_max_age = message_max_age
        self._now = now
        self._hub = hub
        self._ledger = None if ledger is None else Handle(ledger)
        self._usage_max_age = usage_max_age
        self.sweeps = 0  # completed sweeps, for `ls`-style reporting and tests
        self._me: Handle[VacuumSweeper] | None = None

    def on_start(self) -> None:
        self._me = Handle(self.actor_ref.proxy())
        logs.bind_thread(actor="vacuum")
        self._me.tell(VacuumSweeper.tick)

    def tick(self) -> None:
        """The scheduled sweep: book the next one first, so a failure keeps the cadence."""
        assert self._me is not None
        if self._interval > 0:
            self._clock.call_later(self._interval, self._me.tell, VacuumSweeper.tick)
        self.sweep()

    @parks
    def sweep(self, reply: Reply[Swept] | None) -> None:
        """Sweep now; ``reply`` gets ``{"messages": n}``."""
        if not claim(reply):
            return
        me = self._me
        assert me is not None
        if self._ledger is not None:  # model calls past their retention: folded into per-agent totals
            self._ledger.tell(Ledger.sweep, self._now() - self._usage_max_age)
        done = self._broker.future(Broker.vacuum, self._now(), self._message_max_age)
        # Runs on the Broker's thread (or here, when it is already gone): hand back.
        done.add_done_callback(lambda f: me.tell(VacuumSweeper.finish, f, reply))

    def finish(self, done: Reply[int], reply: Reply[Swept] | None) -> None:
        messages = 0
        if done.cancelled() or isinstance(done.exception(), Unavailable):
            _log.warning("vacuum.broker_gone")
        elif done.exception() is not None:
            _log.error("vacuum.messages_failed", error=str(done.exception()))
        else:
            messages = int(done.result())
        if messages:
            _log.info("vacuum.messages", count=messages, max_age_days=self._message_max_age / DAY)
        self.sweeps += 1
        _log.info("vacuum.swept", sweeps=self.sweeps, messages=messages)
        if self._hub is not None:
            self._hub.publish(VacuumSwept(messages))
        resolve(reply, {"messages": messages})
