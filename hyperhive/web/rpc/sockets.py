"""One unix socket server per agent, at agents/<name>/run/hive.sock.

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

__all__ = ["AgentSockets"]

_log = logs.get("hyperhive.socket")

OpsFactory = Callable[[AgentName, bool], dict[str, Op]]
MAX_CONNECTIONS = 32  # per agent socket: its harness, heartbeats and MCP servers need a handful


class AgentSockets:
    def __init__(self, io_loop: IOLoop, paths: StatePaths, ops_for: OpsFactory) -> None:
        self._loop = io_loop
        self._paths = paths
        self._ops_for = ops_for
        self._lock = threading.Lock()
        self._servers: dict[str, JsonLineServer] = {}

    def open(self, name: AgentName, manager: bool) -> None:
        with self._lock:
            if name in self._servers:
                return
            path = self._paths.socket(name)
            sock = bind_socket(path)
            server = JsonLineServer(self._ops_for(name, manager), {"agent": name}, max_connections=MAX_CONNECTIONS)
            self._servers[name] = server
        self._loop.add_callback(server.add_socket, sock)
        _log.info("socket.open", agent=name, path=str(path))

    def close(self, name: AgentName) -> None:
        with self._lock:
            server = self._servers.pop(name, None)
        if server is not None:
            self._loop.add_callback(server.stop)
            self._paths.socket(name).unlink(missing_ok=True)

    def close_all(self) -> None:
        """On the loop thread at shutdown."""
        with self._lock:
            servers, self._servers = self._servers, {}
        for server in servers.values():
            server.stop()

    def names(self) -> list[str]:
        with self._lock:
            return list(self._servers)

    def __contains__(self, name: Any) -> bool:
        return name in self._servers
