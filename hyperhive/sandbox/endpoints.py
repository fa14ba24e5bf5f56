"""The daemon's other servers for each agent, beside its JSON-lines socket.

In ``agents/<name>/run/`` (bound read-only into the sandbox; each socket is
the agent's own, mode 0600, see `accounts.own_sockets`):
- ``api.sock``: the model-API gateway (`gateway.ApiGateway`), which holds the
  daemon's credential;
- ``proxy.sock``: the egress proxy (`proxy.start_proxy`) with the agent's
  allowlist from its applied agent.json (read per request, so a rebuild's
  new list applies at once).
And on the host's loopback, the agent's sticky port (F20) serves the web UI
its harness binds on a socket in its state dir (`web_relay.start_web_relay`),
reached without following a link and only if the agent's uid owns it. The
sandbox has no network of its own the host could reach, and the daemon, not a
file the agent writes, knows the port (`web_port`: None when it could not bind
it).

``open`` binds the unix sockets at once (any thread, like `AgentSockets`);
the servers are attached on the IOLoop thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from tornado.ioloop import IOLoop

import hyperhive.logs as logs
from hyperhive.actors.events import Hub, ProxyRefused
from hyperhive.actors.ports import read_port_file
from hyperhive.names import AgentName
from hyperhive.paths import WEB_SOCKET, StatePaths
from hyperhive.sandbox.allowlist import Allowlist
from hyperhive.sandbox.gateway import ApiGateway
from hyperhive.sandbox.proxy import start_proxy
from hyperhive.sandbox.relay import nofollow_unix_connector, stop_server
from hyperhive.sandbox.web_asleep import Asleep
from hyperhive.sandbox.web_relay import Forward, WebRefused, judge_web_request, start_web_relay
from hyperhive.web.dashboard.access import Access
from hyperhive.web.rpc.jsonlines import bind_socket

__all__ = ["AgentEndpoints", "WebRefused", "Forward", "judge_web_request", "start_web_relay"]

_log = logs.get("hyperhive.endpoints")


class AgentEndpoints:
    def __init__(self, io_loop: IOLoop, paths: StatePaths, gateway: ApiGateway, resolve: Mapping[str, str],
                 hub: Hub, owner_uid: Callable[[AgentName], int | None], web_host: str = "127.0.0.1", *,
                 access: Access, asleep: Callable[[AgentName], Asleep | None] | None = None) -> None:
        self._loop = io_loop
        self._asleep = asleep  # a hibernating agent's UI, answered by the daemon (issue 17)
        self._access = access
        self._paths = paths
        self._gateway = gateway
        self._resolve = dict(resolve)
        self._hub = hub
        self._owner_uid = owner_uid
        self._web_host = web_host
        self._lock = threading.Lock()
        self._servers: dict[str, list[asyncio.Server]] = {}
        self._web_ports: dict[str, int] = {}
        # Set when the agents run on other nodes (the Ray backend): their web UIs come through there.
        self.web_link: Callable[[str], Callable[[], Awaitable[Any]]] | None = None

    def open(self, name: AgentName, manager: bool = False) -> None:
        with self._lock:
            if name in self._servers:
                return
            self._servers[name] = []
            api = bind_socket(self._paths.api_socket(name))
            proxy = bind_socket(self._paths.proxy_socket(name))
        self._loop.add_callback(self._attach, name, api, proxy)

    async def _attach(self, name: AgentName, api: Any, proxy: Any) -> None:
        self._gateway.open(name, api)
        servers: list[asyncio.Server] = []
        try:
            servers.append(await start_proxy(name, proxy, lambda: self._allow(name), self._resolve,
                                             on_refused=self._refused))
        except Exception:  # noqa: BLE001 - the agent works on without egress
            _log.exception("endpoints.proxy_failed", agent=name)
        port = read_port_file(self._paths.agent(name) / "port")
        if port is not None:
            try:
                servers.append(await start_web_relay(
                    self._web_host, port, self._web_connector(name), name, self._access,
                    asleep=None if self._asleep is None else partial(self._asleep, name)))
                self._web_ports[name] = port
            except OSError as exc:  # reported; the dashboard row shows no link (web_port is None)
                _log.error("endpoints.web_bind_failed", agent=name, port=port, error=str(exc))
        with self._lock:
            if name in self._servers:
                self._servers[name] = servers
                return
        for s in servers:  # closed while we were attaching
            await stop_server(s)

    def _web_connector(self, name: AgentName) -> Any:
        state = str(self._paths.state(name))

        async def connect() -> Any:
            if self.web_link is not None:  # the agent's node serves it (issue 18: `web_dock`)
                return await self.web_link(name)()
            return await nofollow_unix_connector(state, WEB_SOCKET, self._owner_uid(name))()

        return connect

    def _allow(self, name: AgentName) -> Allowlist:
        return Allowlist(self._paths.load_applied(name).network_allow)

    def _refused(self, agent: str, host: str, port: int, reason: str) -> None:
        self._hub.publish(ProxyRefused(agent, host, port, reason))

    def web_port(self, name: str) -> int | None:
        """The port the daemon relays to the agent's web UI (None: not bound)."""
        return self._web_ports.get(name)

    def close(self, name: AgentName) -> None:
        with self._lock:
            servers = self._servers.pop(name, None)
        if servers is None:
            return
        self._web_ports.pop(name, None)

        async def stop() -> None:
            self._gateway.close(name)
            for s in servers:
                await stop_server(s)

        self._loop.add_callback(stop)
        for path in (self._paths.api_socket(name), self._paths.proxy_socket(name)):
            try:
                if path.is_socket():
                    path.unlink()
            except OSError:
                pass

    def close_all(self) -> None:
        """On the loop thread at shutdown."""
        with self._lock:
            servers, self._servers = self._servers, {}
        self._gateway.close_all()
        for group in servers.values():
            for s in group:
                s.close()  # the loop stops right after: live connections end with it


def own_uid() -> int | None:
    """The owner a web UI socket must have when the daemon is not root: ours."""
    return None if os.geteuid() == 0 else os.geteuid()
