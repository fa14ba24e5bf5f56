"""The builtin driver's MCP client, without the ``mcp`` package (issue 17).

Importing the SDK cost every harness start 0.4-0.7 s of CPU and ~60 MB, most
of a hibernated agent's wake. The builtin driver needs four messages of the
protocol: ``initialize``, ``notifications/initialized`` and ``tools/call``,
and their answers; this speaks them as JSON-RPC lines to `hive mcp` (the pipe
to the daemon's MCP server, which also waits out a daemon restart), started as
a subprocess as the SDK's stdio client would. Tool results keep the SDK's
shape where the driver reads them: ``content`` (items with ``text``) and
``is_error``. The real SDK client still drives `hive mcp` in the tests
(``tests/mcp_support.py``), so the tools are proven against it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import hyperhive.logs as logs
from hyperhive.errors import Unavailable
from hyperhive.mcp_pipe import pipe_argv

__all__ = ["PROTOCOL_VERSION", "LiteSession", "Text", "ToolResult"]

_log = logs.get("hyperhive.harness.mcp")

PROTOCOL_VERSION = "2025-06-18"
LINE_LIMIT = 16 << 20


@dataclass(frozen=True)
class Text:
    text: str
    type: str = "text"


@dataclass(frozen=True)
class ToolResult:
    content: list[Text] = field(default_factory=list)
    is_error: bool = False


class LiteSession:
    """``open()``, ``call_tool(name, arguments)``, ``close()``: one `hive mcp` process."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    async def open(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *pipe_argv(sys.executable, self.socket_path),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=LINE_LIMIT)
        self._reader = asyncio.ensure_future(self._read())
        await self._request("initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                                           "clientInfo": {"name": "hyperhive-builtin", "version": "0.1.0"}})
        self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        result = await self._request("tools/call", {"name": name, "arguments": arguments})
        content = [Text(str(c.get("text", ""))) for c in result.get("content") or [] if isinstance(c, dict)]
        return ToolResult(content, bool(result.get("isError")))

    async def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()  # the pipe ends at EOF
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
        self._fail(Unavailable("the MCP session is closed"))

    # --- the lines
    def _write(self, msg: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(msg, ensure_ascii=False).encode() + b"\n")

    async def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        try:
            self._write({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})
            return await fut
        finally:
            self._waiting.pop(req_id, None)

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        out = self._proc.stdout
        try:
            while line := await out.readline():
                self._heard(json.loads(line))
        except (ValueError, asyncio.LimitOverrunError) as exc:
            _log.warning("mcp_lite.bad_line", error=str(exc))
        finally:
            self._fail(Unavailable("hive mcp ended"))

    def _heard(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        if "method" in msg:  # the server asks: only ping is answered (nothing else is offered)
            if "id" in msg:
                answer = ({"result": {}} if msg["method"] == "ping"
                          else {"error": {"code": -32601, "message": "not supported"}})
                self._write({"jsonrpc": "2.0", "id": msg["id"], **answer})
            return
        fut = self._waiting.get(msg.get("id"))  # type: ignore[arg-type]
        if fut is None or fut.done():
            return
        if "error" in msg:
            err = msg["error"] if isinstance(msg["error"], dict) else {}
            fut.set_exception(Unavailable(f"MCP error {err.get('code')}: {err.get('message')}"))
        else:
            result = msg.get("result")
            fut.set_result(result if isinstance(result, dict) else {})

    def _fail(self, exc: Exception) -> None:
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(exc)
