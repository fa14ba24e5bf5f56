"""Each agent's MCP endpoint, ``agents/<n>/run/mcp.sock`` (issue 17).

The daemon speaks MCP here itself (the tools: ``mcp_tools``), so what a turn
starts is only `hive mcp`, a pipe (``hyperhive/mcp_pipe.py``). The framing is
MCP's stdio one: one JSON-RPC message per line. A connection may begin with
one line of options, ``{"hyperhive": {"permission_tool": true}}`` (the pipe of
an "ask" mode CLI); any other first line is its first message.

The ``mcp`` package is imported, and the four servers built, on a worker
thread once the daemon is ready (``ServersOnce.warm``) or at the first
connection if that comes first; never in the daemon's start, never on the loop.

What one connection may hold is bounded as on the JSON-lines sockets: lines of
at most ``MAX_LINE`` bytes (a longer one ends the connection with an error
line), ``MAX_IN_FLIGHT`` requests being served (the reader stops reading until
one is answered), ``MAX_CONNECTIONS`` connections per agent. A recv's reply
that is never written (the pipe went away) has its messages put back.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import TYPE_CHECKING, Any

import hyperhive.logs as logs
from hyperhive.names import AgentName
from hyperhive.web.rpc.jsonlines import Op

if TYPE_CHECKING:
    from hyperhive.web.rpc.mcp_tools import Caller, Servers

__all__ = ["MAX_CONNECTIONS", "MAX_IN_FLIGHT", "MAX_LINE", "McpEndpoint", "ServersOnce"]

_log = logs.get("hyperhive.mcp")

MAX_CONNECTIONS = 8  # per agent: a CLI's pipe per turn, the builtin driver's, a few spare
MAX_LINE = 8 << 20
MAX_IN_FLIGHT = 64


class ServersOnce:
    """The daemon's four MCP servers, built at the first connection on a worker thread."""

    def __init__(self, recv_cap: float) -> None:
        self.recv_cap = recv_cap
        self._built: asyncio.Future[Servers] | None = None

    def warm(self) -> None:
        """Begin building now (on the loop, once the daemon is up): a CLI waits for its MCP
        server before its first request, and the first turn should not wait for the import."""
        if self._built is None:
            self._built = asyncio.get_running_loop().run_in_executor(None, _build, self.recv_cap)

    async def get(self) -> Servers:
        self.warm()
        assert self._built is not None
        return await asyncio.shield(self._built)


def _build(recv_cap: float) -> Servers:
    """On a worker thread: the mcp package imported (about 0.6 s of CPU, once), the
    servers built, and one session rehearsed, so that nothing the first real
    connection runs imports anything on the loop."""
    from hyperhive.web.rpc.mcp_conn import rehearse
    from hyperhive.web.rpc.mcp_tools import Servers

    servers = Servers.build(recv_cap)
    rehearse(servers.get(False, False))
    return servers


def options_of(line: bytes) -> dict[str, Any] | None:
    """The options of a first line ``{"hyperhive": {...}}``, or None: it is a message (pure)."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if isinstance(obj, dict) and set(obj) == {"hyperhive"} and isinstance(obj["hyperhive"], dict):
        return obj["hyperhive"]
    return None


class McpEndpoint:
    """One agent's ``mcp.sock``: created on any thread, served on the loop's."""

    def __init__(self, agent: AgentName, ops: dict[str, Op], manager: bool, servers: ServersOnce) -> None:
        self.agent = agent
        self.ops = ops
        self.manager = manager
        self._servers = servers
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self._refused = 0

    async def serve(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_unix_server(self.accepted, sock=sock, limit=MAX_LINE)

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()

    def full(self) -> bool:
        return len(self._conns) >= MAX_CONNECTIONS

    async def accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection (also one accepted elsewhere: TLS, issue 18), in a Task of its own."""
        if self.full():
            self._refused += 1
            if self._refused & (self._refused - 1) == 0:
                _log.warning("mcp.too_many_connections", agent=self.agent, max=MAX_CONNECTIONS,
                             refused=self._refused)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve_one(reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - one connection never takes the endpoint down
            _log.exception("mcp.connection_failed", agent=self.agent)
        finally:
            self._conns.discard(task)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await _read_line(reader, writer)
        if first is None:
            return
        options = options_of(first)
        servers = await self._servers.get()
        from hyperhive.web.rpc.mcp_conn import serve_connection  # loaded by now, off the loop (_build)

        server = servers.get(self.manager, bool(options and options.get("permission_tool") is True))
        caller = _caller(self.agent, self.ops)
        await serve_connection(server, caller, reader, writer, None if options is not None else first)


def _caller(agent: str, ops: dict[str, Op]) -> Caller:
    from hyperhive.web.rpc.mcp_tools import Caller  # loaded by now (_build)

    return Caller(agent, ops)


async def _read_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
    """One line, or None at EOF or past ``MAX_LINE`` (then an error line is written)."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        writer.write(_too_long())
        return None
    return line


def _too_long() -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": None, "error": {
        "code": -32600, "message": f"a line longer than {MAX_LINE} bytes: the connection is closed"}}).encode() + b"\n"

