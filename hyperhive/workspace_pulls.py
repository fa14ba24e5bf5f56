"""The daemon's pulls (issue 14): after every turn and on ``hive pull NAME``,
the agent's branch goes back into the operator's repository
(`workspace_pull.pull`), on threads of its own, never on the IOLoop.

One pull at a time per agent: a request while one runs is served by one more
pull after it (all the requests that came meanwhile share it), so a burst of
turns costs at most two pulls and the last one sees the latest commit. And an
agent cannot pull at will (``turn_done`` is its to send): a pull it asks for
starts ``interval`` seconds after its last one at the earliest, every request
meanwhile sharing it; the operator's ``hive pull`` never waits for that. A
loop-thread table, like `web.tables.turn_slots`.

A hostile agent cannot take the pulls from the others:
- a pull of an agent whose last pull failed (a bound hit, a refusal) runs on
  a lane of its own, one worker: the agents in good standing keep theirs; and
  it stays there for ``SUSPECT_SECONDS`` after its last failure, whatever
  went through meanwhile (review 14c: else a held pull, a good one, a held
  one… would keep coming back to the shared lane);
- its next automatic pull waits ``interval`` × 2 per failure in a row (at most
  ``MAX_BACKOFF`` seconds); a pull that goes through resets both;
- what it brings over is bounded per agent: ``hourly_bytes`` of bundles in
  the last hour (a branch rewritten over and over would fill the operator's
  disk with garbage otherwise); past it, pulls are refused until the hour
  has room again. A refused pull's bundle counts too (review 14c: a branch
  that points at a tree, say, is streamed, indexed and only then refused, a
  gigabyte of the operator's disk each time).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hyperhive.logs as logs
from hyperhive.errors import BadRequest, Conflict, HiveError
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.workspace import read_workspace
from hyperhive.workspace_pull import MAX_BUNDLE_BYTES, PULL_IDLE, PULL_TIMEOUT, PullResult, carried_by, pull

__all__ = ["Pulls"]

_log = logs.get("hyperhive.workspace")

WORKERS = 2  # pulls at once, host-wide (git is mostly I/O; the machine has other work)
INTERVAL = 2.0  # seconds from one agent's pull to the next one a turn_done starts
MAX_BACKOFF = 600.0  # seconds at most between the automatic pulls of an agent whose pulls fail
HOURLY_BYTES = 4 << 30  # bundle bytes one agent may bring over in an hour
SUSPECT_SECONDS = 600.0  # an agent's pulls stay on the suspect lane this long after its last failure


@dataclass
class _Pending:
    """The next pull of one agent: who waits for it, whether the operator asked, its timer."""

    future: asyncio.Future[PullResult | None]
    urgent: bool = False
    timer: asyncio.TimerHandle | None = None


class Pulls:
    def __init__(self, paths: StatePaths, account: Callable[[AgentName], Any] = lambda _n: None, *,
                 max_bytes: int = MAX_BUNDLE_BYTES, timeout: float = PULL_TIMEOUT, workers: int = WORKERS,
                 interval: float = INTERVAL, idle: float = PULL_IDLE, hourly_bytes: int = HOURLY_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._paths = paths
        self._account = account  # the backend's: who reads the agent's clone
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._idle = idle
        self._interval = interval
        self._hourly_bytes = hourly_bytes
        self._clock = clock
        self._executor = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull")
        self._suspects = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pull-suspect")
        self._failures: dict[str, int] = {}  # failed pulls in a row, per agent (loop thread)
        self._failed_at: dict[str, float] = {}  # clock of each agent's last failed pull
        self._carried: dict[str, deque[tuple[float, int]]] = {}  # (clock, bytes) of each pull in the hour
        self._running: dict[str, asyncio.Future[PullResult | None]] = {}
        self._pending: dict[str, _Pending] = {}
        self._last: dict[str, float] = {}  # loop time of each agent's last pull's start

    def after_turn(self, name: AgentName) -> None:
        """A turn ended (the agent socket's ``turn_done``): pull (not sooner than
        ``interval`` after the last), and log what fails."""
        self._request(name, urgent=False).add_done_callback(lambda f: self._log_outcome(name, f))

    async def pull(self, name: AgentName) -> PullResult:
        """Pull now (after the one running, if any); BadRequest without an operator repo."""
        out = await asyncio.shield(self._request(name, urgent=True))
        if out is None:
            raise BadRequest(f"{name} has no workspace with an operator repository to pull into")
        return out

    def busy(self, name: str) -> bool:
        return name in self._running

    def close(self) -> None:
        for p in self._pending.values():
            if p.timer is not None:
                p.timer.cancel()
            if not p.future.done():
                p.future.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._suspects.shutdown(wait=False, cancel_futures=True)

    def failures(self, name: str) -> int:
        """Failed pulls of ``name`` in a row (0 once one goes through)."""
        return self._failures.get(name, 0)

    # --- internals (loop thread) ---------------------------------------------------------
    def _request(self, name: AgentName, urgent: bool) -> asyncio.Future[PullResult | None]:
        p = self._pending.get(name)
        if p is None:
            p = self._pending[name] = _Pending(asyncio.get_running_loop().create_future())
        p.urgent |= urgent
        self._kick(name)
        return p.future

    def _kick(self, name: AgentName) -> None:
        """Start ``name``'s pending pull if it may start now, else arm its timer."""
        p = self._pending.get(name)
        if p is None or name in self._running:
            return
        loop = asyncio.get_running_loop()
        wait = min(self._interval * 2 ** self._failures.get(name, 0), max(self._interval, MAX_BACKOFF))
        left = 0.0 if p.urgent else self._last.get(name, -math.inf) + wait - loop.time()
        if left > 0:
            if p.timer is None:
                p.timer = loop.call_later(left, self._timer_fired, name)
            return
        if p.timer is not None:
            p.timer.cancel()
        del self._pending[name]
        self._start(name, p.future)

    def _timer_fired(self, name: AgentName) -> None:
        p = self._pending.get(name)
        if p is not None:
            p.timer = None
            self._kick(name)

    def _start(self, name: AgentName, out: asyncio.Future[PullResult | None]) -> None:
        loop = asyncio.get_running_loop()
        self._running[name] = out
        self._last[name] = loop.time()
        suspect = self._failures.get(name) or self._clock() - self._failed_at.get(name, -math.inf) < SUSPECT_SECONDS
        lane = self._suspects if suspect else self._executor
        try:
            job = loop.run_in_executor(lane, self._job, name, self._room(name))
        except RuntimeError as exc:  # the executor is shut down: the daemon is stopping
            self._running.pop(name, None)
            out.set_exception(exc)
            return
        job.add_done_callback(lambda f: self._finished(name, out, f))

    def _finished(self, name: AgentName, out: asyncio.Future[PullResult | None],
                  job: asyncio.Future[PullResult | None]) -> None:
        self._running.pop(name, None)
        self._last[name] = asyncio.get_running_loop().time()  # the interval (and back-off) run from the end too
        self._account_for(name, job)
        if not out.done():
            if job.cancelled():
                out.cancel()
            elif (exc := job.exception()) is not None:
                out.set_exception(exc)
            else:
                out.set_result(job.result())
        self._kick(name)

    def _room(self, name: str) -> int:
        """Bundle bytes ``name`` may still bring over this hour (loop thread)."""
        log = self._carried.setdefault(name, deque())
        hour_ago = self._clock() - 3600.0
        while log and log[0][0] <= hour_ago:
            log.popleft()
        return self._hourly_bytes - sum(n for _t, n in log)

    def _account_for(self, name: str, job: asyncio.Future[PullResult | None]) -> None:
        if job.cancelled():
            return
        exc = job.exception()
        if exc is not None:
            self._failures[name] = self._failures.get(name, 0) + 1
            self._failed_at[name] = self._clock()
            if carried_by(exc):
                self._carried.setdefault(name, deque()).append((self._clock(), carried_by(exc)))
            return
        self._failures.pop(name, None)
        result = job.result()
        if result is not None and result.carried:
            self._carried.setdefault(name, deque()).append((self._clock(), result.carried))

    def _job(self, name: AgentName, room: int) -> PullResult | None:  # a pull thread
        record = read_workspace(self._paths, name)
        if record is None or record.repo is None:
            return None
        if room <= 0:
            raise Conflict(f"{name} brought {self._hourly_bytes} bytes into the operator's repository in the last "
                           f"hour: its next pull waits until the hour has room")
        return pull(self._paths, name, self._account(name), max_bytes=min(self._max_bytes, room),
                    timeout=self._timeout, idle=self._idle)

    @staticmethod
    def _log_outcome(name: AgentName, f: asyncio.Future[PullResult | None]) -> None:
        if f.cancelled():
            return
        exc = f.exception()
        if isinstance(exc, HiveError):
            _log.warning("workspace.pull_failed", agent=name, error=str(exc))
        elif exc is not None:
            _log.error("workspace.pull_crashed", agent=name, error=repr(exc))
