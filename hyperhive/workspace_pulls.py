"""The daemon's pulls (issue 14): after every turn and on ``hive pull NAME``,
the agent's branch goes back into the operator's repository
(`workspace_pull.pull`), on threads of its own, never on the IOLoop.

One pull at a time per agent: a request while one runs is served by one more
pull after it (all the requests that came meanwhile share it), so a burst of
turns costs at most two pulls and the last one sees the latest commit. A
loop-thread table, like `web.tables.turn_slots`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from collections.abc import Callable
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


class Pulls:
    def __init__(self, paths: StatePaths, account: Callable[[AgentName], Any] = lambda _n: None, *,
                 max_bytes: int = MAX_BUNDLE_BYTES, timeout: float = PULL_TIMEOUT, workers: int = WORKERS) -> None:
        self._paths = paths
        self._account = account  # the backend's: who reads the agent's clone
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._executor = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull")
        self._running: dict[str, asyncio.Future[PullResult | None]] = {}
        self._next: dict[str, asyncio.Future[PullResult | None]] = {}

    def after_turn(self, name: AgentName) -> None:
        """A turn ended (the agent socket's ``turn_done``): pull, and log what fails."""
        self._request(name).add_done_callback(lambda f: self._log_outcome(name, f))

    async def pull(self, name: AgentName) -> PullResult:
        """Pull now (after the one running, if any); BadRequest without an operator repo."""
        out = await asyncio.shield(self._request(name))
        if out is None:
            raise BadRequest(f"{name} has no workspace with an operator repository to pull into")
        return out

    def busy(self, name: str) -> bool:
        return name in self._running

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- internals (loop thread) ---------------------------------------------------------
    def _request(self, name: AgentName) -> asyncio.Future[PullResult | None]:
        if name not in self._running:
            return self._start(name, asyncio.get_running_loop().create_future())
        nxt = self._next.get(name)
        if nxt is None:
            nxt = self._next[name] = asyncio.get_running_loop().create_future()
        return nxt

    def _start(self, name: AgentName, out: asyncio.Future[PullResult | None]) -> asyncio.Future[PullResult | None]:
        self._running[name] = out
        try:
            job = asyncio.get_running_loop().run_in_executor(self._executor, self._job, name)
        except RuntimeError as exc:  # the executor is shut down: the daemon is stopping
            self._running.pop(name, None)
            out.set_exception(exc)
            return out
        job.add_done_callback(lambda f: self._finished(name, out, f))
        return out

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
        nxt = self._next.pop(name, None)
        if nxt is not None:
            self._start(name, nxt)

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
