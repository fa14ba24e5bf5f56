"""Binding a TCP listener that may still be held by its predecessor (F21).

A restarted harness or dashboard can race the old socket's release; on
EADDRINUSE we back off (250 ms doubling, capped at 2 s, 12 tries, 17.75 s of
waiting in all) before giving up. Any other bind error (permission, an
address not on this host, fd exhaustion) fails at once: waiting cannot fix it.

The result is a list of bound, listening sockets for Tornado's
``HTTPServer.add_sockets``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable

from tornado.netutil import bind_sockets

import hyperhive.logs as logs

__all__ = ["FIRST_DELAY", "MAX_DELAY", "TRIES", "bind_once", "bind_with_retry", "bind_with_retry_async",
           "retry_delays"]

_log = logs.get("hyperhive.bind")

TRIES = 12
FIRST_DELAY = 0.25
MAX_DELAY = 2.0


def retry_delays(tries: int = TRIES, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> list[float]:
    """The wait before each retry: ``tries - 1`` delays, doubling up to ``cap``."""
    return [min(first * 2**i, cap) for i in range(max(0, tries - 1))]


def bind_once(port: int, address: str | None = None) -> list[socket.socket]:
    """Bind ``address:port`` on every address family it resolves to.

    Tornado's ``bind_sockets`` leaves the sockets it already bound open when a
    later family fails; here they are closed, so a retry does not collide
    with our own leftover socket.
    """
    host = address or None
    families = sorted({ai[0] for ai in socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)})
    bound: list[socket.socket] = []
    try:
        for family in families:
            # Port 0: every family listens on the port the first one got.
            want = bound[0].getsockname()[1] if bound and port == 0 else port
            bound += bind_sockets(want, host, family=family)
    except BaseException:
        for s in bound:
            s.close()
        raise
    return bound


def _retryable(exc: OSError) -> bool:
    return exc.errno == errno.EADDRINUSE


def bind_with_retry(
    port: int, address: str | None = None, *, delays: list[float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[socket.socket]:
    """Bind, retrying only while the address is in use. Blocks: not for the IOLoop."""
    waits = retry_delays() if delays is None else delays
    for attempt, wait in enumerate(waits):
        if (bound := _attempt(port, address, attempt, waits)) is not None:
            return bound
        sleep(wait)
    return _last_attempt(port, address, waits)


async def bind_with_retry_async(
    port: int, address: str | None = None, *, delays: list[float] | None = None,
) -> list[socket.socket]:
    """``bind_with_retry`` for a coroutine on the IOLoop: the waits do not block it."""
    waits = retry_delays() if delays is None else delays
    for attempt, wait in enumerate(waits):
        if (bound := _attempt(port, address, attempt, waits)) is not None:
            return bound
        await asyncio.sleep(wait)
    return _last_attempt(port, address, waits)


def _attempt(port: int, address: str | None, attempt: int, waits: list[float]) -> list[socket.socket] | None:
    """One bind; None when the caller should wait ``waits[attempt]`` and retry."""
    try:
        return bind_once(port, address)
    except OSError as exc:
        if not _give_up_or_log(exc, port, address, attempt, waits):
            raise
    return None


def _last_attempt(port: int, address: str | None, waits: list[float]) -> list[socket.socket]:
    bound = _attempt(port, address, len(waits), waits)
    if bound is None:  # _give_up_or_log never retries past the last wait
        raise AssertionError("unreachable")
    return bound


def _give_up_or_log(exc: OSError, port: int, address: str | None, attempt: int, waits: list[float]) -> bool:
    """True to retry after ``waits[attempt]``; False when the caller must raise."""
    where = f"{address or '*'}:{port}"
    if not _retryable(exc) or attempt >= len(waits):
        _log.error("bind.failed", address=where, attempts=attempt + 1, errno=exc.errno, error=str(exc))
        return False
    _log.warning("bind.retry", address=where, attempt=attempt + 1, delay=waits[attempt], error=str(exc))
    return True
