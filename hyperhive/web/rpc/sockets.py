"""Each agent's two sockets: agents/<name>/run/hive.sock (the JSON-lines ops)
and run/mcp.sock (the same ops as MCP tools, ``mcp_sockets``), one op table.

``open`` may be called from any thread (the Coordinator's): the socket file is
bound at once, so a harness can connect before the loop starts accepting, and
the server is attached on the IOLoop thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop

import hyperhive.logs as logs
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.web.rpc.jsonlines import JsonLineServer, Op, bind_socket
from hyperhive.web.rpc.mcp_sockets import McpEndpoint, ServersOnce

__all__ = ["AgentSockets"]

_log = logs.get("hyperhive.socket")

OpsFactory = Callable[[AgentName, bool], dict[str, Op]]
MAX_CONNECTIONS = 32  # per agent socket: its harness, heartbeats and MCP servers need a handful


class AgentSockets:
    def __init__(self, io_loop: IOLoop, paths: StatePaths, ops_for: OpsFactory, recv_cap: float) -> None:
        self._loop = io_loop
        self._paths = paths
        self._ops_for = ops_for
        self._lock = threading.Lock()
        self._servers: dict[str, tuple[JsonLineServer, McpEndpoint]] = {}
        self._mcp = ServersOnce(recv_cap)

    def open(self, name: AgentName, manager: bool) -> None:
        with self._lock:
            if name in self._servers:
                return
            path = self._paths.socket(name)
            sock = bind_socket(path)
            mcp_sock = bind_socket(self._paths.mcp_socket(name))
            ops = self._ops_for(name, manager)
            server = JsonLineServer(ops, {"agent": name}, max_connections=MAX_CONNECTIONS)
            mcp = McpEndpoint(name, ops, manager, self._mcp)
            self._servers[name] = (server, mcp)
        self._loop.add_callback(server.add_socket, sock)
        self._loop.add_callback(mcp.serve, mcp_sock)
        _log.info("socket.open", agent=name, path=str(path))

    def warm(self) -> None:
        """On the loop, once the daemon is ready: the MCP servers are built meanwhile."""
        self._mcp.warm()

    def close(self, name: AgentName) -> None:
        with self._lock:
            servers = self._servers.pop(name, None)
        if servers is not None:
            for server in servers:
                self._loop.add_callback(server.stop)
            self._paths.socket(name).unlink(missing_ok=True)
            self._paths.mcp_socket(name).unlink(missing_ok=True)

    def close_all(self) -> None:
        """On the loop thread at shutdown."""
        with self._lock:
            servers, self._servers = self._servers, {}
        for pair in servers.values():
            for server in pair:
                server.stop()

    def servers_of(self, name: str) -> tuple[JsonLineServer, McpEndpoint] | None:
        """The agent's two servers, None when it has none (issue 18: a TLS connection
        authenticated as the agent is served by them)."""
        with self._lock:
            return self._servers.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._servers)

    def __contains__(self, name: Any) -> bool:
        return name in self._servers
