"""A JSON-lines request server over unix sockets: an asyncio Protocol per connection.

Each connection reads lines continuously and serves every request at once, so a parked recv and a send can share
one connection, and a closed peer is noticed at once (its in-flight requests are cancelled). Responses carry the
request id and may come back out of order. A request runs as its own asyncio Task, but for an ``Op.inline`` op,
which the connection drives itself: one that finishes without waiting is answered inside the read that brought it,
and one that waits on a future costs that future's callback, never a Task.

What one connection may hold in the daemon is bounded: at most ``MAX_IN_FLIGHT`` requests (``MAX_IN_FLIGHT_BYTES``
of request lines) are being served at once; past that the lines already read wait, the next read is held and
reading stops (``pause_reading``) until some finish: the peer's writes then wait in its own kernel buffer (a
hang-up is heard until that next read comes). A connection starts at most ``MAX_IN_FLIGHT`` requests per loop turn,
so answers that need no wait neither hold the loop nor outrun a peer that reads them. Responses the peer has not
taken yet wait in the transport's buffer up to ``MAX_UNFLUSHED`` bytes; a peer that does not read past that is
disconnected, and the results it never got that must not be lost (a recv's messages) are put back by their
``Op.unsent``. An accept that fails (EMFILE: the daemon is out of file descriptors) pauses that socket's accepting
with a back-off (`net.add_accept_handler`); `adopt` takes one accepted elsewhere (TLS, issue 18).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from tornado.netutil import bind_unix_socket

import hyperhive.logs as logs
from hyperhive.errors import HiveError, Internal, LineTooLong
from hyperhive.net import add_accept_handler
from hyperhive.web.rpc.inline_run import InlineRun
from hyperhive.wire import LineSplitter, decode_request, encode, error_response, ok_response

__all__ = ["MAX_IN_FLIGHT", "MAX_IN_FLIGHT_BYTES", "MAX_UNFLUSHED", "JsonLineServer", "Op", "bind_socket"]

_log = logs.get("hyperhive.socket")

MAX_IN_FLIGHT = 64  # requests served at once per connection
MAX_IN_FLIGHT_BYTES = 8 << 20  # their request lines, together
MAX_UNFLUSHED = 4 << 20  # response bytes the peer has not taken yet; past it the peer is cut off
_REFUSALS_LOGGED = 10  # per connection; then only the 2^n-th
_READ_SIZE = 1 << 16  # one read, at most
_READS_AHEAD = 4  # at accept, before the connection is set up: a peer already gone costs no more
_PER_TURN = MAX_IN_FLIGHT  # lines one connection starts per loop turn; then the others' turn


@dataclass(frozen=True)
class Op:
    """One op a socket serves: ``run(request)`` returns the response fields.

    ``unsent(fields)`` runs when the result could not be written back (the peer went away, or was cut
    off for not reading): the recv op puts its messages back with it. ``serial`` ops (big replies:
    recent) run one at a time per connection, so a peer pipelining them never has more than one reply
    being built beyond what its write buffer admits. ``inline`` ops need no asyncio Task of their own
    (no ``asyncio.timeout``, no ``current_task``): they may await futures, and the connection drives them.
    """

    run: Callable[[Any], Awaitable[dict[str, Any]]]
    unsent: Callable[[dict[str, Any]], None] | None = None
    serial: bool = False
    inline: bool = False


class _Conn(asyncio.BufferedProtocol):
    """One connection: its requests in flight and what it has not taken yet.

    Responses go to the transport as they come; its buffer holds what the kernel did not take, so the
    bytes the peer has not taken yet are known exactly (``get_write_buffer_size``), and so is where each
    response that must not be lost ends: those past what was flushed when the connection ends are put
    back. Reads land in the server's one buffer (``recv_into``: asyncio's own ``recv(256 KiB)`` costs a
    fresh 256 KiB allocation per read) and are copied out at once.
    """

    def __init__(self, server: JsonLineServer, first: list[bytes]) -> None:
        self._server = server
        self._first = first  # read at accept, served once connected
        self.context = server.context
        self.made = False
        self._counted = True  # in the server's connections
        self.transport: asyncio.Transport | None = None
        self.running: dict[asyncio.Task[None] | InlineRun, int] = {}  # each with its line's size
        self.in_flight_bytes = 0
        self.serial = asyncio.Lock()
        self.cut = False
        self.refused = 0
        self._gone = False
        self._ctx = contextvars.copy_context()
        self._splitter = LineSplitter()
        self._lines: Iterator[bytes | LineTooLong] | None = None  # a read's lines not started yet (at the cap)
        self._held: deque[bytes] = deque()  # reads that came meanwhile (one at most: reading pauses)
        self._pumping = False
        self._soon = False  # a pump is scheduled for the next loop turn
        self._written = 0  # bytes ever handed to the transport
        self._flushed = 0  # of those, taken by the kernel (known at each look)
        # (end offset, callback) of responses that must be put back if never written
        self._watchers: deque[tuple[int, Callable[[], None]]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.made = True
        self.transport = transport
        transport.set_write_buffer_limits(high=0)  # resume_writing: the buffer is empty (all flushed)
        self._ctx.run(structlog.contextvars.bind_contextvars, **self.context)
        first, self._first = self._first, []
        for data in first:
            self.data_received(data)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._server.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._server.read_buffer[:nbytes]))

    def data_received(self, data: bytes) -> None:
        if self._lines is not None:  # at the cap: keep it, read no more until one finishes
            self._held.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        self._lines = self._splitter.feed(data)
        self._ctx.run(self._pump)

    def eof_received(self) -> bool:
        self._hang_up()  # the peer went away: what it did not take is not written either
        return False

    def resume_writing(self) -> None:
        self._flushed = self._written
        self._watchers.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone = True
        self._lines = None
        self._held.clear()
        self.uncount()
        for run in list(self.running):
            run.cancel()
        watchers, self._watchers = self._watchers, deque()
        for end, lost in watchers:
            if end > self._flushed:
                try:
                    lost()
                except Exception:  # noqa: BLE001 - one callback never skips the others
                    _log.exception("socket.unsent_failed", **self.context)

    def _full(self) -> bool:
        return len(self.running) >= MAX_IN_FLIGHT or self.in_flight_bytes >= MAX_IN_FLIGHT_BYTES

    def _pump(self) -> None:
        """Start the pending lines' requests until the cap, ``_PER_TURN`` of them
        at most (answers that need no wait must not hold the loop, nor outrun a
        peer that reads them); in the connection's context."""
        if self._pumping:  # a request that finished inline, inside this very loop
            return
        self._pumping = True
        try:
            budget = _PER_TURN
            while self._lines is not None:
                if self._full() or self._gone:
                    return
                if budget == 0:
                    if not self._soon:
                        self._soon = True
                        asyncio.get_running_loop().call_soon(self._next_turn)
                    return
                budget -= 1
                item = next(self._lines, None)
                if item is None:
                    self._lines = self._splitter.feed(self._held.popleft()) if self._held else None
                elif isinstance(item, HiveError):
                    self.send(encode(error_response(None, item)))
                else:
                    self._start(item)
            if self.transport is not None and not self._gone:
                self.transport.resume_reading()
        finally:
            self._pumping = False

    def _next_turn(self) -> None:
        self._soon = False
        self._ctx.run(self._pump)

    def _start(self, line: bytes) -> None:
        try:
            req_id, req = decode_request(line, self._server.names)
        except HiveError as err:
            if n := self.log_refusal():
                _log.info("socket.refused", **self.context, request=err.request_id, code=err.code,
                          error=err.message, refused=n)
            self.send(encode(error_response(err.request_id, err)))
            return
        op = self._server.ops[req.op]
        coro = self._serve(op, req_id, req)
        self.in_flight_bytes += len(line)
        if op.inline:
            run = InlineRun(coro, self.finished)
            self.running[run] = len(line)
            run.start()
        else:
            task = asyncio.get_running_loop().create_task(coro)  # a copy of this context: the connection's
            self.running[task] = len(line)
            task.add_done_callback(self.finished)

    def finished(self, run: asyncio.Task[None] | InlineRun) -> None:
        """A request is over: its place is free; the reader goes on if it was held."""
        self.in_flight_bytes -= self.running.pop(run, 0)
        if self._lines is not None and not self._pumping:
            self._ctx.run(self._pump)

    async def _serve(self, op: Op, req_id: Any, req: Any) -> None:
        # Each request runs in its own copy of the connection's context (its
        # Task's, or InlineRun's), so binding here tags only its log lines.
        structlog.contextvars.bind_contextvars(request=req_id, op=req.op)
        lock = self.serial if op.serial else None
        if lock is not None:
            await lock.acquire()
        try:
            try:
                response = ok_response(req_id, **await op.run(req))
            except HiveError as err:
                if n := self.log_refusal():
                    _log.info("socket.refused", code=err.code, error=err.message, refused=n)
                response = error_response(req_id, err)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one request never takes the connection down
                _log.exception("socket.request_failed")
                response = error_response(req_id, Internal(f"{type(exc).__name__}: {exc}"))
            # Queued before the next serial op builds its reply.
            unsent = op.unsent
            if response["ok"] and unsent is not None:
                self.send(encode(response), lambda: unsent(response))
            else:
                self.send(encode(response))
        finally:
            if lock is not None:
                lock.release()

    def log_refusal(self) -> int:
        """Count a refused request; non-zero (the count) when it should be
        logged: the first ``_REFUSALS_LOGGED``, then the 2^n-th, so a peer
        flooding bad requests cannot flood the log."""
        self.refused += 1
        n = self.refused
        return n if n <= _REFUSALS_LOGGED or n & (n - 1) == 0 else 0

    def send(self, data: bytes, lost: Callable[[], None] | None = None) -> bool:
        """Write one response; False (and ``lost()``) when it will never be
        written: the connection is gone, or the peer is not reading and is cut
        off now. One response is always taken when nothing is pending (replies
        are capped elsewhere: recent and recv at about 1 MiB)."""
        t = self.transport
        if t is None or self._gone or t.is_closing():
            if lost is not None:
                lost()
            return False
        unflushed = t.get_write_buffer_size()
        if unflushed and unflushed + len(data) > MAX_UNFLUSHED:
            if not self.cut:
                self.cut = True
                _log.warning("socket.slow_reader", unflushed=unflushed, cap=MAX_UNFLUSHED, **self.context)
            self._hang_up()
            if lost is not None:
                lost()
            return False
        t.write(data)
        self._written += len(data)
        if lost is not None:
            self._watchers.append((self._written, lost))
            self._look()
        return True

    def _look(self) -> None:
        """What the kernel took so far; the responses wholly in it are the peer's."""
        t = self.transport
        if t is None or t.is_closing():  # a failed write empties the buffer: nothing to learn from it
            return
        self._flushed = self._written - t.get_write_buffer_size()
        while self._watchers and self._watchers[0][0] <= self._flushed:
            self._watchers.popleft()

    def _hang_up(self) -> None:
        """Drop the connection now, and what it has not taken yet (that is put back)."""
        self._look()
        self._gone = True
        self.uncount()  # now, not when the transport is done with it: churn must not fill the cap
        if self.transport is not None:
            self.transport.abort()

    def uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._server.connections -= 1


class JsonLineServer:
    """``max_connections``: an agent's socket takes this many at once (its
    harness and MCP servers need a handful); more are closed at accept, so an
    agent cannot spend the daemon's file descriptors. None: no cap (admin)."""

    def __init__(self, ops: dict[str, Op], context: dict[str, Any], max_connections: int | None = None) -> None:
        self.ops = ops
        self.names = frozenset(ops)
        self.context = context  # bound to every log line (agent=…, socket=…)
        self._max = max_connections
        self.connections = 0  # counted at accept, until the hang-up
        self._refused = 0
        self._listening: dict[int, tuple[socket.socket, Callable[[], None]]] = {}
        # Every connection's reads, each copied out before the next (all on one loop).
        self.read_buffer = memoryview(bytearray(_READ_SIZE))

    def add_socket(self, sock: socket.socket) -> None:
        self.add_sockets([sock])

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """Accept on these listening sockets, backing off on EMFILE."""
        for sock in sockets:
            self._listening[sock.fileno()] = (sock, add_accept_handler(sock, self._accepted, self.context))

    def stop(self) -> None:
        """Stop accepting and close the listening sockets; connections go on."""
        listening, self._listening = self._listening, {}
        for sock, remove in listening.values():
            remove()
            sock.close()

    def _accepted(self, sock: socket.socket, _address: Any) -> None:
        sock.setblocking(False)
        first, gone = _read_ahead(sock, self.read_buffer)
        if gone:  # it came and went before its turn (churn): nothing to serve, nothing to count
            sock.close()
            return
        if self.full():
            self._refused += 1
            if self._refused & (self._refused - 1) == 0:  # 1st, 2nd, 4th, 8th…: the log stays small
                _log.warning("socket.too_many_connections", max=self._max, refused=self._refused, **self.context)
            sock.close()
            return
        self.connections += 1  # at accept: a burst of accepts cannot pass the cap
        conn = _Conn(self, first)
        made = asyncio.ensure_future(asyncio.get_running_loop().connect_accepted_socket(lambda: conn, sock))
        made.add_done_callback(lambda f: self._made(f, conn, sock))

    def full(self) -> bool:
        return self._max is not None and self.connections >= self._max

    def adopt(self, transport: asyncio.BaseTransport, first: bytes = b"") -> bool:
        """Serve a connection set up elsewhere, ``first`` its bytes read already; False at the cap."""
        if self.full():
            return False
        self.connections += 1
        conn = _Conn(self, [first] if first else [])
        transport.set_protocol(conn)
        conn.connection_made(transport)
        return True

    def _made(self, fut: asyncio.Future[Any], conn: _Conn, sock: socket.socket) -> None:
        if fut.cancelled() or fut.exception() is not None:
            if not conn.made:  # no transport: connection_lost will never come
                conn.uncount()
                sock.close()
            _log.warning("socket.connect_failed", error=repr(None if fut.cancelled() else fut.exception()),
                         **self.context)


def _read_ahead(sock: socket.socket, buf: memoryview) -> tuple[list[bytes], bool]:
    """What a peer just accepted has sent already, and whether it is gone
    already (EOF or an error: its requests would be cancelled at once)."""
    first: list[bytes] = []
    for _ in range(_READS_AHEAD):
        try:
            n = sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return first, False
        except OSError:
            return first, True
        if not n:
            return first, True
        first.append(bytes(buf[:n]))
    return first, False


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
