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
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hyperhive.logs as logs
from hyperhive.errors import BadRequest, HiveError
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.workspace import read_workspace
from hyperhive.workspace_pull import MAX_BUNDLE_BYTES, PULL_TIMEOUT, PullResult, pull

__all__ = ["Pulls"]

_log = logs.get("hyperhive.workspace")

WORKERS = 2  # pulls at once, host-wide (git is mostly I/O; the machine has other work)
INTERVAL = 2.0  # seconds from one agent's pull to the next one a turn_done starts


@dataclass
class _Pending:
    """The next pull of one agent: who waits for it, whether the operator asked, its timer."""

    future: asyncio.Future[PullResult | None]
    urgent: bool = False
    timer: asyncio.TimerHandle | None = None


class Pulls:
    def __init__(self, paths: StatePaths, account: Callable[[AgentName], Any] = lambda _n: None, *,
                 max_bytes: int = MAX_BUNDLE_BYTES, timeout: float = PULL_TIMEOUT, workers: int = WORKERS,
                 interval: float = INTERVAL) -> None:
        self._paths = paths
        self._account = account  # the backend's: who reads the agent's clone
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._interval = interval
        self._executor = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull")
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
        left = 0.0 if p.urgent else self._last.get(name, -math.inf) + self._interval - loop.time()
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
        try:
            job = loop.run_in_executor(self._executor, self._job, name)
        except RuntimeError as exc:  # the executor is shut down: the daemon is stopping
            self._running.pop(name, None)
            out.set_exception(exc)
            return
        job.add_done_callback(lambda f: self._finished(name, out, f))

    def _finished(self, name: AgentName, out: asyncio.Future[PullResult | None],
                  job: asyncio.Future[PullResult | None]) -> None:
        self._running.pop(name, None)
        if not out.done():
            if job.cancelled():
                out.cancel()
            elif (exc := job.exception()) is not None:
                out.set_exception(exc)
            else:
                out.set_result(job.result())
        self._kick(name)

    def _job(self, name: AgentName) -> PullResult | None:  # a pull thread
        record = read_workspace(self._paths, name)
        if record is None or record.repo is None:
            return None
        return pull(self._paths, name, self._account(name), max_bytes=self._max_bytes, timeout=self._timeout)

    @staticmethod
    def _log_outcome(name: AgentName, f: asyncio.Future[PullResult | None]) -> None:
        if f.cancelled():
            return
        exc = f.exception()
        if isinstance(exc, HiveError):
            _log.warning("workspace.pull_failed", agent=name, error=str(exc))
        elif exc is not None:
            _log.error("workspace.pull_crashed", agent=name, error=repr(exc))
