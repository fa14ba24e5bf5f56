"""Requests that outlive the daemon: reconnect with backoff and re-issue (issue 16).

A harness's connection to its agent socket breaks whenever the daemon stops or
crashes; the next daemon binds the socket at the same path and adopts the
harness. `Reconnecting` wraps the `AsyncClient` of the harness and of
`hive mcp` so that their requests carry on across that gap:

- a request that finds no daemon (``ConnectFailed``: it was never sent) waits
  and is tried again, 250 ms doubling to 5 s (`DELAYS`), for as long as the
  process lives (or ``limit`` seconds);
- one whose connection broke on the way (``ConnectionLost``: whether it ran is
  unknown), or that a stopping daemon refused (``Unavailable``: shutting down),
  is re-issued once connected only when running it twice is harmless: the ops
  in `REISSUE` (reads, waits, the harness's own bookkeeping) and any request
  that carries an ``idempotency_key`` (the daemon stores such a send once).
  Any other is raised: its caller hears that the outcome is unknown.

Retrying ends when the socket's directory is gone (deleted: missing, or a
directory with no links left as a bind mount shows it): the agent was purged,
or its state dir removed; no daemon will ever bind that socket again, and the
harness ends instead of waiting for ever.

So a parked recv parks again on the next daemon, heartbeats resume, and a
tool call's request goes out once the daemon is back. ``AsyncClient`` itself
is left as it is: this only calls its ``connect`` (one attempt) and
``request``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hyperhive.logs as logs
from hyperhive import client as blocking
from hyperhive.client import AsyncClient
from hyperhive.errors import ConnectFailed, ConnectionLost, HiveError, TimedOut, TransportError, Unavailable
from hyperhive.mcp_pipe import FIRST_DELAY, MAX_DELAY, socket_dir_gone  # `hive mcp`'s backoff and test, shared

__all__ = ["DELAYS", "REISSUE", "Reconnecting", "delays", "may_reissue", "ping_until_up", "socket_dir_gone"]

_log = logs.get("hyperhive.harness.reconnect")

DELAYS = (FIRST_DELAY, MAX_DELAY)
# Ops whose second run does no harm after a first whose outcome is unknown: reads and
# waits (a recv's taken messages are the daemon's to put back), a turn slot asked for
# again, a heartbeat, a turn's report, a permission question asked again.
REISSUE = frozenset({"recv", "recent", "ping", "heartbeat", "turn_slot", "turn_done", "grants", "permission",
                     "usage"})
SHUTTING_DOWN = "shutting down"


def delays(first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> Iterator[float]:
    """250 ms, 500 ms, 1 s, 2 s, 4 s, then 5 s for ever."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


def may_reissue(op: str, fields: dict[str, Any], exc: HiveError) -> bool:
    """Whether ``op`` may go out again after ``exc`` (pure)."""
    if isinstance(exc, ConnectFailed):
        return True  # never sent
    if isinstance(exc, ConnectionLost | TimedOut) or (isinstance(exc, Unavailable) and SHUTTING_DOWN in exc.message):
        return op in REISSUE or bool(fields.get("idempotency_key"))
    return False


class Reconnecting:
    """An ``AsyncClient`` whose requests wait out a daemon restart (see the module)."""

    def __init__(self, inner: AsyncClient, *, limit: float | None = None,
                 on_retry: Callable[[str, HiveError, float], None] | None = None,
                 first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> None:
        self.inner = inner
        self.limit = limit  # seconds a request may keep retrying; None: as long as the process lives
        self._on_retry = on_retry
        self._first, self._cap = first, cap
        self._closed = asyncio.Event()

    @property
    def path(self) -> str:
        return self.inner.path

    async def connect(self, deadline: float | None = None) -> None:
        """Connect, retrying with backoff for ``deadline`` seconds (None: the client's ``limit``)."""
        await self._retrying("connect", {}, self._connect_once, self.limit if deadline is None else deadline)

    async def _connect_once(self) -> dict[str, Any]:
        await self.inner.connect(deadline=0)  # one attempt; the backoff is ours
        return {}

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """``AsyncClient.request``, re-issued after a lost daemon where that is harmless."""

        async def once() -> dict[str, Any]:
            await self.inner.connect(deadline=0)
            return await self.inner.request(op, **fields)

        return await self._retrying(op, fields, once, self.limit)

    async def _retrying(self, op: str, fields: dict[str, Any], once: Callable[[], Any],
                        limit: float | None) -> dict[str, Any]:
        end = None if limit is None else time.monotonic() + limit
        waits = delays(self._first, self._cap)
        while True:
            if self._closed.is_set():
                raise ConnectFailed(f"the client of {self.path} is closed")
            try:
                result: dict[str, Any] = await once()
                return result
            except HiveError as exc:
                if not may_reissue(op, fields, exc):
                    raise
                if isinstance(exc, ConnectFailed) and socket_dir_gone(self.path):
                    raise ConnectFailed(f"{os.path.dirname(self.path)} is gone: no daemon will bind "
                                        f"{self.path} again") from None
                delay = next(waits)
                if end is not None and time.monotonic() + delay > end:
                    raise
                self._retry(op, exc, delay)
            try:
                await asyncio.wait_for(self._closed.wait(), delay)
            except TimeoutError:
                pass

    def _retry(self, op: str, exc: HiveError, delay: float) -> None:
        if delay >= self._cap or delay == self._first:  # the first and then every capped retry: not every one
            _log.info("reconnect.retry", op=op, code=exc.code, error=exc.message, retry_in=delay)
        if self._on_retry is not None:
            self._on_retry(op, exc, delay)

    async def close(self) -> None:
        self._closed.set()
        await self.inner.close()


def ping_until_up(path: Path, limit: float, timeout: float = 30.0,
                  sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """The blocking ``ping`` of `hive mcp`'s start, tried with the same backoff for up to
    ``limit`` seconds while no daemon answers (a daemon restart under a running turn)."""
    end = time.monotonic() + limit
    waits = delays()
    while True:
        try:
            return blocking.request(path, "ping", timeout=timeout)
        except TransportError as exc:
            delay = next(waits)
            if time.monotonic() + delay > end:
                raise
            _log.info("reconnect.retry", op="ping", code=exc.code, error=exc.message, retry_in=delay)
            sleep(delay)
