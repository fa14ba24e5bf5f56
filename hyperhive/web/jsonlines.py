"""A JSON-lines request server over unix sockets, on the Tornado IOLoop.

Each connection reads lines continuously and runs every request as its own
task, so a parked recv and a send can share one connection and a closed peer
is noticed at once (its in-flight requests are cancelled). Responses carry
the request id and may come back out of order.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import bind_unix_socket
from tornado.tcpserver import TCPServer

import hyperhive.logs as logs
from hyperhive.errors import HiveError, Internal
from hyperhive.wire import LineSplitter, decode_request, encode, error_response, ok_response

__all__ = ["Op", "JsonLineServer", "bind_socket"]

_log = logs.get("hyperhive.socket")


@dataclass(frozen=True)
class Op:
    """One op a socket serves: ``run(request)`` returns the response fields.

    ``unsent(fields)`` runs when the result could not be written back (the
    peer went away): the recv op puts its messages back with it.
    """

    run: Callable[[Any], Awaitable[dict[str, Any]]]
    unsent: Callable[[dict[str, Any]], None] | None = None


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
        splitter = LineSplitter()
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                data = await stream.read_bytes(1 << 16, partial=True)
                for item in splitter.feed(data):
                    if isinstance(item, HiveError):
                        await _write(stream, error_response(None, item))
                        continue
                    task = asyncio.ensure_future(self._handle(stream, item))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except StreamClosedError:
            pass
        finally:
            self._open -= 1
            for t in list(tasks):
                t.cancel()

    async def _handle(self, stream: IOStream, line: bytes) -> None:
        try:
            req_id, req = decode_request(line, self._names)
        except HiveError as err:
            req_id = getattr(err, "request_id", None)
            _log.info("socket.refused", **self._context, request=req_id, code=err.code, error=err.message)
            await _write(stream, error_response(req_id, err))
            return
        op = self._ops[req.op]
        # Each request is its own task with its own copy of the context, so
        # binding here tags only this request's log lines; nothing to unbind.
        structlog.contextvars.bind_contextvars(request=req_id, op=req.op)
        try:
            fields = await op.run(req)
            response = ok_response(req_id, **fields)
        except HiveError as err:
            _log.info("socket.refused", code=err.code, error=err.message)
            response = error_response(req_id, err)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one request never takes the connection down
            _log.exception("socket.request_failed")
            response = error_response(req_id, Internal(f"{type(exc).__name__}: {exc}"))
        if not await _write(stream, response) and response["ok"] and op.unsent is not None:
            op.unsent(response)


async def _write(stream: IOStream, response: dict[str, Any]) -> bool:
    try:
        await stream.write(encode(response))
        return True
    except StreamClosedError:
        return False


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

