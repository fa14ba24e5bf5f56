"""A JSON-lines request server over unix sockets, on the Tornado IOLoop.

Each connection reads lines continuously and runs every request as its own
task, so a parked recv and a send can share one connection and a closed peer
is noticed at once (its in-flight requests are cancelled). Responses carry
the request id and may come back out of order.

What one connection may hold in the daemon is bounded: at most
``MAX_IN_FLIGHT`` requests (``MAX_IN_FLIGHT_BYTES`` of request lines) are
being served at once, and the reader stops reading until some finish (the
peer's writes then wait in its own kernel buffer). Responses the peer has not
taken yet are queued per connection up to ``MAX_UNFLUSHED`` bytes; a peer that
does not read past that is disconnected, and the results it never got that
must not be lost (a recv's messages) are put back by their ``Op.unsent``.
An accept that fails (EMFILE: the daemon is out of file descriptors) pauses
that socket's accepting with a back-off (`net.add_accept_handler`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import bind_unix_socket
from tornado.tcpserver import TCPServer

import hyperhive.logs as logs
from hyperhive.errors import HiveError, Internal
from hyperhive.net import add_accept_handler
from hyperhive.wire import LineSplitter, decode_request, encode, error_response, ok_response

__all__ = ["MAX_IN_FLIGHT", "MAX_IN_FLIGHT_BYTES", "MAX_UNFLUSHED", "JsonLineServer", "Op", "bind_socket"]

_log = logs.get("hyperhive.socket")

MAX_IN_FLIGHT = 64  # requests served at once per connection
MAX_IN_FLIGHT_BYTES = 8 << 20  # their request lines, together
MAX_UNFLUSHED = 4 << 20  # response bytes the peer has not taken yet; past it the peer is cut off
_REFUSALS_LOGGED = 10  # per connection; then only the 2^n-th


@dataclass(frozen=True)
class Op:
    """One op a socket serves: ``run(request)`` returns the response fields.

    ``unsent(fields)`` runs when the result could not be written back (the
    peer went away, or was cut off for not reading): the recv op puts its
    messages back with it. ``serial`` ops (big replies: recent) run one at a
    time per connection, so a peer pipelining them never has more than one
    reply being built beyond what its write buffer admits.
    """

    run: Callable[[Any], Awaitable[dict[str, Any]]]
    unsent: Callable[[dict[str, Any]], None] | None = None
    serial: bool = False


class _Conn:
    """One connection: its requests in flight and its write buffer.

    Responses are queued here and handed to the stream one write at a time
    (what piles up while a write is pending goes out as one), so the bytes the
    peer has not taken yet are known exactly and cost only themselves.
    """

    __slots__ = ("stream", "context", "tasks", "in_flight_bytes", "serial", "cut", "refused",
                 "_queue", "_pending", "_flushed", "_queued_total", "_watchers")

    def __init__(self, stream: IOStream, context: dict[str, Any]) -> None:
        self.stream = stream
        self.context = context
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight_bytes = 0
        self.serial = asyncio.Lock()
        self.cut = False
        self.refused = 0
        self._queue = bytearray()  # responses behind the pending write (no per-response object)
        self._pending = 0  # bytes of the write the stream is doing now
        self._flushed = 0  # bytes the stream has finished writing, since the start
        self._queued_total = 0  # bytes ever queued
        # (end offset, callback) of responses that must be put back if never written
        self._watchers: deque[tuple[int, Callable[[], None]]] = deque()

    def log_refusal(self) -> int:
        """Count a refused request; non-zero (the count) when it should be
        logged: the first ``_REFUSALS_LOGGED``, then the 2^n-th, so a peer
        flooding bad requests cannot flood the log."""
        self.refused += 1
        n = self.refused
        return n if n <= _REFUSALS_LOGGED or n & (n - 1) == 0 else 0

    def send(self, data: bytes, lost: Callable[[], None] | None = None) -> bool:
        """Queue one response; False (and ``lost()``) when it will never be
        written: the stream is closed, or the peer is not reading and is cut
        off now. One response is always taken when nothing is pending (replies
        are capped elsewhere: recent and recv at about 1 MiB)."""
        if self.stream.closed():
            if lost is not None:
                lost()
            return False
        unflushed = self._pending + len(self._queue)
        if unflushed and unflushed + len(data) > MAX_UNFLUSHED:
            if not self.cut:
                self.cut = True
                _log.warning("socket.slow_reader", unflushed=unflushed, cap=MAX_UNFLUSHED, **self.context)
            self.stream.close()  # pending writes fail: their watchers put their results back
            if lost is not None:
                lost()
            return False
        self._queued_total += len(data)
        if lost is not None:
            self._watchers.append((self._queued_total, lost))
        if self._pending:
            self._queue += data
        else:
            self._write(data)
        return True

    def _write(self, data: bytes | bytearray) -> None:
        self._pending = len(data)
        try:
            fut = self.stream.write(data if isinstance(data, bytes) else memoryview(data))
        except StreamClosedError:
            self._lost()
            return
        if fut.done():  # the kernel took it all at once (the usual case): no callback round
            self._written(fut)
        else:
            fut.add_done_callback(self._written)

    def _written(self, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._lost()
            return
        self._flushed += self._pending
        self._pending = 0
        while self._watchers and self._watchers[0][0] <= self._flushed:
            self._watchers.popleft()
        if self._queue:
            data, self._queue = self._queue, bytearray()  # the stream keeps a view of it: never reuse it
            self._write(data)

    def _lost(self) -> None:
        """The stream closed with responses not written: put back what must be."""
        self._pending = 0
        self._queue = bytearray()
        watchers, self._watchers = self._watchers, deque()
        for _, lost in watchers:
            try:
                lost()
            except Exception:  # noqa: BLE001 - one callback never skips the others
                _log.exception("socket.unsent_failed", **self.context)


class JsonLineServer(TCPServer):
    """``max_connections``: an agent's socket takes this many at once (its
    harness and MCP servers need a handful); more are closed at accept, so an
    agent cannot spend the daemon's file descriptors. None: no cap (admin)."""

    def __init__(self, ops: dict[str, Op], context: dict[str, Any], max_connections: int | None = None) -> None:
        super().__init__()
        self._ops = ops
        self._names = frozenset(ops)
        self._context = context  # bound to every log line (agent=…, socket=…)
        self._max = max_connections
        self._open = 0
        self._refused = 0

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """As TCPServer's, with an accept handler that backs off on EMFILE."""
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = add_accept_handler(sock, self._handle_connection, self._context)

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        if self._max is not None and self._open >= self._max:
            self._refused += 1
            if self._refused & (self._refused - 1) == 0:  # 1st, 2nd, 4th, 8th…: the log stays small
                _log.warning("socket.too_many_connections", max=self._max, refused=self._refused, **self._context)
            stream.close()
            return
        self._open += 1
        # This connection's task has its own context; its request tasks copy it.
        structlog.contextvars.bind_contextvars(**self._context)
        conn = _Conn(stream, self._context)
        tasks = conn.tasks
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stream.set_close_callback(functools.partial(_settle, closed))  # heard by a paused reader
        splitter = LineSplitter()
        try:
            while True:
                data = await stream.read_bytes(1 << 16, partial=True)
                for item in splitter.feed(data):
                    if isinstance(item, HiveError):
                        if not conn.send(encode(error_response(None, item))):
                            raise StreamClosedError()
                        continue
                    while len(tasks) >= MAX_IN_FLIGHT or conn.in_flight_bytes >= MAX_IN_FLIGHT_BYTES:
                        # Stop reading until a request finishes (or the peer goes).
                        await asyncio.wait([*tasks, closed], return_when=asyncio.FIRST_COMPLETED)
                        if stream.closed():
                            raise StreamClosedError()
                    conn.in_flight_bytes += len(item)  # given back by the task itself
                    task = asyncio.ensure_future(self._handle(conn, item))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except StreamClosedError:
            pass
        finally:
            self._open -= 1
            for t in list(tasks):
                t.cancel()

    async def _handle(self, conn: _Conn, line: bytes) -> None:
        try:
            try:
                req_id, req = decode_request(line, self._names)
            except HiveError as err:
                req_id = err.request_id
                if n := conn.log_refusal():
                    _log.info("socket.refused", **self._context, request=req_id, code=err.code, error=err.message,
                              refused=n)
                conn.send(encode(error_response(req_id, err)))
                return
            op = self._ops[req.op]
            # Each request is its own task with its own copy of the context, so
            # binding here tags only this request's log lines; nothing to unbind.
            structlog.contextvars.bind_contextvars(request=req_id, op=req.op)
            lock = conn.serial if op.serial else None
            if lock is not None:
                await lock.acquire()
            try:
                try:
                    response = ok_response(req_id, **await op.run(req))
                except HiveError as err:
                    if n := conn.log_refusal():
                        _log.info("socket.refused", code=err.code, error=err.message, refused=n)
                    response = error_response(req_id, err)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one request never takes the connection down
                    _log.exception("socket.request_failed")
                    response = error_response(req_id, Internal(f"{type(exc).__name__}: {exc}"))
                # Queued before the next serial op builds its reply.
                if response["ok"] and op.unsent is not None:
                    conn.send(encode(response), functools.partial(op.unsent, response))
                else:
                    conn.send(encode(response))
            finally:
                if lock is not None:
                    lock.release()
        finally:
            conn.in_flight_bytes -= len(line)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def bind_socket(path: Path) -> Any:
    """Bind a unix socket at ``path`` (mode 0600), replacing a stale socket file.

    A path that exists and is not a socket is refused rather than removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_socket():
        raise HiveError(f"{path} exists and is not a socket; refusing to replace it")
    sock = bind_unix_socket(str(path), mode=0o600)
    os.chmod(path, 0o600)
    return sock
