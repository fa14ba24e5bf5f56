"""One MCP connection on an agent's ``mcp.sock``: the SDK's server over the
socket's lines, as the agent (``mcp_tools.CALLER``). See ``mcp_sockets``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import mcp_types as types
from mcp.server.mcpserver import MCPServer
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

import hyperhive.logs as logs
from hyperhive.web.rpc.mcp_sockets import MAX_IN_FLIGHT, _read_line
from hyperhive.web.rpc.mcp_tools import CALLER, Caller

__all__ = ["refusal", "rehearse", "serve_connection"]

_log = logs.get("hyperhive.mcp")


class _InFlight:
    """The requests of one connection not answered yet, by id; the reader waits for room."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self._room = asyncio.Event()
        self._room.set()

    def add(self, req_id: Any) -> None:
        self.ids.add(str(req_id))
        if len(self.ids) >= MAX_IN_FLIGHT:
            self._room.clear()

    def done(self, req_id: Any) -> None:
        self.ids.discard(str(req_id))
        if len(self.ids) < MAX_IN_FLIGHT:
            self._room.set()

    async def room(self) -> None:
        await self._room.wait()


async def serve_connection(server: MCPServer, caller: Caller, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter, first: bytes | None) -> None:
    """Serve until the peer closes; then put back what was never written."""
    CALLER.set(caller)  # this task's context: the reader, the server and every handler copy it
    in_flight = _InFlight()
    to_server, from_peer = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    to_peer, from_server = anyio.create_memory_object_stream[SessionMessage](0)

    async def read() -> None:
        async with to_server:
            line = first
            while True:
                if line is None:
                    await in_flight.room()
                    line = await _read_line(reader, writer)
                    if line is None:  # the peer is gone: what it asked for is cancelled (a parked recv)
                        tg.cancel_scope.cancel()
                        return
                try:
                    message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                except ValueError as exc:  # pydantic's ValidationError: the SDK would say nothing
                    writer.write(refusal(line, exc))
                else:
                    _heard(message, in_flight)
                    await to_server.send(SessionMessage(message))
                line = None

    async def write() -> None:
        async with from_server:
            async for out in from_server:
                msg = out.message
                try:
                    data = msg.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
                except Exception:  # noqa: BLE001 - a reply that cannot be written is not written
                    _log.exception("mcp.reply_unwritable", agent=caller.agent)
                    continue
                if writer.is_closing():  # the peer is gone: nothing more is written (put back instead)
                    tg.cancel_scope.cancel()
                    return
                writer.write(data)
                try:
                    await writer.drain()
                except ConnectionError:
                    tg.cancel_scope.cancel()
                    return
                req_id = getattr(msg, "id", None)
                if isinstance(msg, types.JSONRPCResponse | types.JSONRPCError) and req_id is not None:
                    in_flight.done(req_id)
                    caller.unsent.pop(str(req_id), None)  # written: nothing to put back

    lowlevel = server._lowlevel_server  # noqa: SLF001 - the SDK's one way to serve given streams
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            tg.start_soon(write)
            await lowlevel.run(from_peer, to_peer, lowlevel.create_initialization_options())
            tg.cancel_scope.cancel()
    finally:
        _put_back(caller)


def rehearse(server: MCPServer) -> None:
    """One session in memory on a loop of its own (a worker thread's): initialize and
    tools/list, so that what the SDK imports on first use is imported there."""

    async def session() -> None:
        to_server, from_peer = anyio.create_memory_object_stream[SessionMessage | Exception](4)
        to_peer, from_server = anyio.create_memory_object_stream[SessionMessage](4)
        lowlevel = server._lowlevel_server  # noqa: SLF001 - as serve_connection
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "rehearsal", "version": "0"}}}
        for msg in (init, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}):
            await to_server.send(SessionMessage(types.jsonrpc_message_adapter.validate_python(msg)))
        async with anyio.create_task_group() as tg:
            tg.start_soon(lowlevel.run, from_peer, to_peer, lowlevel.create_initialization_options())
            for _ in range(2):
                out = await from_server.receive()
                out.message.model_dump_json(by_alias=True, exclude_unset=True)
            await to_server.aclose()

    asyncio.run(session())


def refusal(line: bytes, exc: ValueError) -> bytes:
    """JSON-RPC's answer to a line that is no message: a parse error (not JSON; a
    lone surrogate) or an invalid request, with its id when one can be read (pure)."""
    errors = exc.errors() if isinstance(exc, ValidationError) else []
    parse = not errors or any(e["type"] == "json_invalid" for e in errors)
    code, what = (-32700, "not JSON") if parse else (-32600, "not a JSON-RPC 2.0 message")
    detail = errors[0]["msg"] if errors else str(exc)
    try:
        obj = json.loads(line)
    except ValueError:
        obj = None
    req_id = obj.get("id") if isinstance(obj, dict) else None
    if not isinstance(req_id, int | str) or isinstance(req_id, bool):
        req_id = None
    return json.dumps({"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": f"{what}: {detail[:200]}"}},
                      ensure_ascii=True).encode() + b"\n"


def _heard(message: Any, in_flight: _InFlight) -> None:
    if isinstance(message, types.JSONRPCRequest):
        in_flight.add(message.id)
    elif isinstance(message, types.JSONRPCNotification) and message.method == "notifications/cancelled":
        params = message.params or {}
        if "requestId" in params:  # a cancelled request is never answered
            in_flight.done(params["requestId"])


def _put_back(caller: Caller) -> None:
    unsent, caller.unsent = caller.unsent, {}
    for put_back in unsent.values():
        try:
            put_back()
        except Exception:  # noqa: BLE001 - one never skips the others
            _log.exception("mcp.put_back_failed", agent=caller.agent)
