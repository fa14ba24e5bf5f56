"""Clients of the JSON-lines sockets: a blocking one for the CLI and an async
one (concurrent requests on one connection) for the harness and `hive mcp`.

Both raise the same two kinds of error (hyperhive.errors): what the daemon
answered, rebuilt with ``from_wire`` (Unavailable included: the daemon said
so), and the transport family when no answer came at all: ConnectFailed
(nothing listening, or the socket cannot be opened), ConnectionLost (the
connection closed or broke mid-request: whether the op ran is unknown),
TimedOut (the blocking client's own timeout).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from pathlib import Path
from typing import Any

from hyperhive.errors import ConnectFailed, ConnectionLost, TimedOut, from_wire
from hyperhive.wire import encode

__all__ = ["AsyncClient", "request"]

_NOT_LISTENING = (FileNotFoundError, ConnectionRefusedError)  # no socket file, or nobody accepting on it
_LOST = "connection to the daemon lost"


def _result(resp: dict[str, Any]) -> dict[str, Any]:
    """The response itself, or the error the daemon sent in it, raised."""
    if not resp.get("ok"):
        raise from_wire(resp.get("error") or {}, request_id=resp.get("id"))
    return resp


def _connect_failed(path: object, exc: OSError) -> ConnectFailed:
    if isinstance(exc, _NOT_LISTENING):
        return ConnectFailed(f"no daemon is listening on {path}")
    return ConnectFailed(f"cannot connect to {path}: {exc.strerror or exc}")


def _connect(s: socket.socket, path: Path) -> None:
    try:
        s.connect(str(path))
    except TimeoutError:
        raise
    except OSError as exc:
        raise _connect_failed(path, exc) from None


def request(path: Path, op: str, timeout: float = 90.0, **fields: Any) -> dict[str, Any]:
    """One request over a fresh connection; raises the error the daemon sent,
    or a TransportError when none came within ``timeout`` seconds."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            _connect(s, path)
            s.sendall(encode({"id": 1, "op": op, **fields}))
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    raise ConnectionLost("the daemon closed the connection")
                buf += chunk
        except TimeoutError:  # before OSError: it is one
            raise TimedOut(f"no answer from {path} within {timeout:g}s") from None
        except OSError as exc:
            raise ConnectionLost(f"the connection to {path} broke: {exc.strerror or exc}") from None
    resp: dict[str, Any] = json.loads(buf)
    return _result(resp)


class AsyncClient:
    """Concurrent requests over one unix socket connection, matched by id."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connect_lock = asyncio.Lock()

    async def connect(self, deadline: float = 30.0, *, retry_delay: float = 0.05) -> None:
        """Connect, retrying while the socket is not there yet (daemon
        starting; ``retry_delay`` seconds first, doubling to 1 s); ConnectFailed
        after ``deadline`` seconds, or at once for a socket that cannot be opened
        (permissions)."""
        async with self._connect_lock:
            if self._writer is not None:
                return
            end = time.monotonic() + deadline
            delay = retry_delay
            while True:
                try:
                    reader, writer = await asyncio.open_unix_connection(self.path, limit=1 << 22)
                    break
                except _NOT_LISTENING:
                    if time.monotonic() > end:
                        raise ConnectFailed(f"could not reach {self.path} within {deadline:g}s") from None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                except OSError as exc:
                    raise _connect_failed(self.path, exc) from None
            self._writer = writer
            self._reader_task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                resp = json.loads(line)
                fut = self._waiting.pop(resp.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(resp)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._writer = None
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost(_LOST))
            self._waiting.clear()

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its answer; raises the error the
        daemon sent, ConnectFailed or ConnectionLost."""
        if self._writer is None:
            await self.connect()
        assert self._writer is not None
        req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        try:
            self._writer.write(encode({"id": req_id, "op": op, **fields}))
            await self._writer.drain()
            resp = await fut
        except (ConnectionError, OSError):
            raise ConnectionLost(_LOST) from None
        finally:
            self._waiting.pop(req_id, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: a lost connection is reported once, here
        return _result(resp)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)
