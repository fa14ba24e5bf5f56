"""Binding a TCP listener that may still be held by its predecessor (F21).

A restarted harness or dashboard can race the old socket's release; on
EADDRINUSE we back off (250 ms doubling, capped at 2 s, 12 tries, 17.75 s of
waiting in all) before giving up. Any other bind error (permission, an
address not on this host, fd exhaustion) fails at once: waiting cannot fix it.

The result is a list of bound, listening sockets for Tornado's
``HTTPServer.add_sockets``.

Accepting survives fd exhaustion too: `add_accept_handler` (every JSON-lines
server) and `BackoffHTTPServer` (the dashboard, the gateway, the agent UIs)
pause a socket whose accept fails (EMFILE) instead of spinning the loop.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets

import hyperhive.logs as logs

__all__ = ["ACCEPT_BACKOFF", "FIRST_DELAY", "MAX_DELAY", "TRIES", "BackoffHTTPServer", "add_accept_handler",
           "bind_once", "bind_with_retry", "bind_with_retry_async", "retry_delays"]

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


# --- accepting ----------------------------------------------------------------

ACCEPT_BACKOFF = (0.02, 0.5)  # first and longest pause after a failed accept (seconds)
_ACCEPT_LOG_EVERY = 1.0
_accept_log_to = logs.get("hyperhive.socket")


class BackoffHTTPServer(HTTPServer):
    """Tornado's HTTPServer with `add_accept_handler`'s EMFILE back-off (the
    dashboard, the gateway, the agent UIs): out of descriptors, it pauses
    accepting instead of spinning the loop and logging a traceback per turn."""

    accept_context: dict[str, Any] = {}

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = add_accept_handler(sock, self._handle_connection, self.accept_context)


def add_accept_handler(
    sock: socket.socket, callback: Callable[[socket.socket, Any], None], context: dict[str, Any] | None = None,
) -> Callable[[], None]:
    """``tornado.netutil.add_accept_handler`` that survives a failing accept.

    Tornado lets the OSError of ``accept`` (EMFILE when the daemon is out of
    file descriptors) escape; the listening socket stays readable, so the loop
    calls the handler again at once: 100% CPU and a traceback per turn. Here
    the socket stops being watched for a pause (doubling from
    ``ACCEPT_BACKOFF[0]`` to ``[1]``, reset by the next accept that works) and
    the failure is logged at most once a second for the whole process.
    Returns the remover, as tornado's does.
    """
    io_loop = IOLoop.current()
    ctx = context or {}
    state: dict[str, Any] = {"removed": False, "watching": True, "timer": None, "delay": ACCEPT_BACKOFF[0]}

    def handler(fd: Any, events: int) -> None:
        for _ in range(128):  # tornado's _DEFAULT_BACKLOG: fairness to other work
            if state["removed"]:
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                _accept_failed(exc, state["delay"], ctx)
                io_loop.remove_handler(sock)
                state["watching"] = False
                state["timer"] = io_loop.call_later(state["delay"], resume)
                state["delay"] = min(state["delay"] * 2, ACCEPT_BACKOFF[1])
                return
            state["delay"] = ACCEPT_BACKOFF[0]
            callback(connection, address)

    def resume() -> None:
        state["timer"] = None
        if state["removed"]:
            return
        io_loop.add_handler(sock, handler, IOLoop.READ)
        state["watching"] = True

    def remove() -> None:
        if state["removed"]:
            return
        state["removed"] = True
        if state["timer"] is not None:
            io_loop.remove_timeout(state["timer"])
        if state["watching"]:
            io_loop.remove_handler(sock)

    io_loop.add_handler(sock, handler, IOLoop.READ)
    return remove


_accept_log = {"at": 0.0, "failed": 0}


def _accept_failed(exc: OSError, pause: float, context: dict[str, Any]) -> None:
    """Count the failure; log (with the count since the last line) at most once a second."""
    _accept_log["failed"] += 1
    now = time.monotonic()
    if now - _accept_log["at"] < _ACCEPT_LOG_EVERY:
        return
    _accept_log["at"] = now
    failed, _accept_log["failed"] = _accept_log["failed"], 0
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    _accept_log_to.warning("socket.accept_failed", errno=code, error=str(exc), pause=pause, failed=failed, **context)
