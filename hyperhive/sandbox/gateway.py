"""The model API gateway: each agent's requests to the Anthropic API, forwarded
with the daemon's credential (Tornado, one HTTP server per agent on a unix
socket in its run dir).

The agent holds only a placeholder key; its harness relays 127.0.0.1 to this
socket and points ``ANTHROPIC_BASE_URL`` there. Here every request goes to one
fixed upstream (the daemon's own ``ANTHROPIC_BASE_URL``, else the public API):
whatever the request line or Host header says, only its path and query are
kept, so an agent can never pick the host its request (and the daemon's
credential) goes to. The agent's ``x-api-key``/``Authorization`` are replaced
by the daemon's; when the daemon holds no credential they pass through (an
agent logged in on its own).

Responses stream back as they arrive (an SSE event reaches the agent before
the upstream has finished), and the gateway reads the usage out of them on
the way (`sse_usage`): ``on_usage`` and the ``gateway.request`` log line get
the tokens of every request. Neither bodies nor credentials are ever logged.

The pieces: `upstream` (where requests go, pure), `gateway_forward` (the
request handler), and here the per-agent servers and body budgets.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import tornado.httpserver
import tornado.iostream
import tornado.web
from tornado.simple_httpclient import SimpleAsyncHTTPClient

import hyperhive.logs as logs
from hyperhive.net import BackoffHTTPServer
from hyperhive.sandbox.gateway_forward import AGENT_BODY_BUDGET, MAX_IN_FLIGHT, Forward, describe
from hyperhive.sandbox.upstream import Upstream, upstream_from_env

# Upstream and upstream_from_env are re-exported for daemon.py and bench/gateway.py.
__all__ = ["MAX_CONNECTIONS", "ApiGateway", "Guard", "OnUsage", "Upstream", "upstream_from_env"]

_log = logs.get("hyperhive.gateway")

MAX_CLIENTS = 200
MAX_CONNECTIONS = 16  # per agent: a CLI keeps a few; more are closed at accept (the daemon's fds)
IDLE_TIMEOUT = 300.0  # a keep-alive connection with no request
BODY_TIMEOUT = 120.0  # between the head and the last byte of a request body

OnUsage = Callable[[str, dict[str, Any]], None]  # (agent, usage + status, path, ms)


class Guard(Protocol):
    """The budget gate at the gateway (issue 15; `web.tables.spend.Spend`)."""

    def refusal(self, agent: str) -> str | None:
        """Why ``agent`` may make no model call now (None: it may)."""

    def cut(self, agent: str, usage: Mapping[str, Any], call: object = None) -> str | None:
        """Why the call streaming ``usage`` so far must stop now (None: it goes on); ``call``
        (the request) counts in flight with that usage until `done`."""

    def done(self, agent: str, call: object) -> None:
        """The request ``call`` has ended (its usage is reported next)."""


class _CappedServer(BackoffHTTPServer):
    """At most MAX_CONNECTIONS at once per agent: more are closed at accept."""

    def handle_stream(self, stream: tornado.iostream.IOStream, address: Any) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            _log.warning("gateway.too_many_connections", max=MAX_CONNECTIONS)
            stream.close()
            return
        super().handle_stream(stream, address)


class ApiGateway:
    """One HTTP server per agent, all forwarding to one `Upstream`. Every
    method runs on the IOLoop thread."""

    def __init__(self, upstream: Upstream, on_usage: OnUsage | None = None, guard: Guard | None = None) -> None:
        self.upstream = upstream
        self._on_usage = on_usage
        self.guard = guard
        self._servers: dict[str, tornado.httpserver.HTTPServer] = {}
        self._buffered: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._client: SimpleAsyncHTTPClient | None = None
        self._closing: set[asyncio.Future[None]] = set()

    def client(self) -> SimpleAsyncHTTPClient:
        if self._client is None:
            self._client = SimpleAsyncHTTPClient(
                force_instance=True, max_clients=MAX_CLIENTS, max_body_size=1 << 40)
        return self._client

    def open(self, agent: str, sock: socket.socket) -> None:
        """Serve ``agent`` on ``sock`` (bound, listening AF_UNIX); an agent
        already open is closed first."""
        self.close(agent)
        self.client()
        app = tornado.web.Application([(r".*", Forward, {"gateway": self, "agent": agent})],
                                      log_function=lambda handler: None)
        # The body limit is the handler's (413); tornado's own would answer 400.
        server = _CappedServer(app, max_body_size=1 << 62, decompress_request=False,
                               idle_connection_timeout=IDLE_TIMEOUT, body_timeout=BODY_TIMEOUT)
        server.add_socket(sock)
        self._servers[agent] = server

    def close(self, agent: str) -> None:
        """Stop serving ``agent`` and drop its open connections."""
        server = self._servers.pop(agent, None)
        if server is None:
            return
        server.stop()
        fut = asyncio.ensure_future(server.close_all_connections())
        self._closing.add(fut)
        fut.add_done_callback(self._closing.discard)

    def close_all(self) -> None:
        for agent in list(self._servers):
            self.close(agent)
        if self._client is not None:
            self._client.close()
            self._client = None

    async def wait_closed(self) -> None:
        """Wait until the connections of every closed agent are gone."""
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    def serving(self) -> list[str]:
        return sorted(self._servers)

    def reserve(self, agent: str, n: int) -> bool:
        """Count ``n`` more body bytes against the agent's budget; False if over."""
        held = self._buffered.get(agent, 0) + n
        if held > AGENT_BODY_BUDGET:
            return False
        self._buffered[agent] = held
        return True

    def release(self, agent: str, n: int) -> None:
        if n:
            self._buffered[agent] = max(0, self._buffered.get(agent, 0) - n)

    def buffered(self, agent: str) -> int:
        return self._buffered.get(agent, 0)

    def enter(self, agent: str) -> bool:
        """One more upstream request of ``agent``'s (until `leave`); False past MAX_IN_FLIGHT."""
        n = self._in_flight.get(agent, 0)
        if n >= MAX_IN_FLIGHT:
            return False
        self._in_flight[agent] = n + 1
        return True

    def leave(self, agent: str) -> None:
        n = self._in_flight.get(agent, 0) - 1
        if n > 0:
            self._in_flight[agent] = n
        else:
            self._in_flight.pop(agent, None)

    def report(self, agent: str, record: dict[str, Any]) -> None:
        if self._on_usage is None:
            return
        try:
            self._on_usage(agent, record)
        except Exception as err:  # noqa: BLE001 - a listener's bug must not break a response
            _log.warning("gateway.on_usage_failed", agent=agent, error=describe(err))
