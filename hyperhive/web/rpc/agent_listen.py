"""The daemon's end of the agents' TCP channel (issue 18): ``--agent-listen HOST:PORT``, TLS 1.3.

An agent on another node reaches the daemon through the relay there (`hyperhive.agent_link`). Each
connection is TLS (the daemon's CA, `agent_tls`) and its first line must authenticate it (`agent_wire`):
the agent's name, its secret (`agent_secrets`) and a channel. Then the stream is that channel, as that agent:

- hive: the agent's own JSON-lines server (`JsonLineServer.adopt`), whose ops are bound to its name, so
  whatever a request says, it speaks as that agent (identity is the socket, here the authenticated stream);
- mcp: the agent's MCP endpoint (`McpEndpoint.accepted`);
- api, proxy: bytes spliced to the daemon's own unix socket of the agent's gateway or egress proxy
  (``target``): the model API's key stays on this host;
- web: parked in ``web`` (`WebDock`) until a page asks for the agent's web UI (the other way round).

Refused with one error line, then closed: a first line that is not the auth line (bad JSON, a lone
surrogate, a key too many or missing, an unknown channel), longer than ``MAX_AUTH_LINE`` or not whole
within ``auth_timeout`` (bad_request); a wrong agent or secret (unauthorized, in the same words whatever
was wrong: nothing tells whether the agent exists). Logged as ``agent_link.refused``: the first ten, then
every 2^n-th.

Bounds: a TLS handshake not done within ``handshake_timeout`` is dropped; connections not authenticated
yet are capped (``max_pending``, ``max_pending_per_host`` per peer address); authenticated ones count in
the agent's own caps (its hive.sock's 32 connections, its mcp.sock's 8, ``max_spliced`` per agent and
channel); accepting backs off on EMFILE (`net.add_accept_handler`).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hyperhive.logs as logs
from hyperhive.agent_secrets import AgentSecrets
from hyperhive.agent_wire import AUTH_TIMEOUT, LINK_CHANNELS, MAX_AUTH_LINE, OK_LINE, error_line, keep_alive
from hyperhive.errors import HiveError
from hyperhive.names import is_valid_name
from hyperhive.net import add_accept_handler
from hyperhive.sandbox.relay import nofollow_unix_connector, splice
from hyperhive.web.rpc.jsonlines import JsonLineServer
from hyperhive.web.rpc.mcp_sockets import MAX_LINE as MCP_MAX_LINE
from hyperhive.web.rpc.mcp_sockets import McpEndpoint
from hyperhive.web.rpc.web_dock import WebDock
from hyperhive.wire import loads

__all__ = ["MAX_PENDING", "MAX_PENDING_PER_HOST", "MAX_SPLICED", "UNAUTHORIZED", "AgentListen", "AuthLine",
           "Refused", "parse_auth"]

_log = logs.get("hyperhive.agent_link")

Lookup = Callable[[str], "tuple[JsonLineServer, McpEndpoint] | None"]
Target = Callable[[str, str], Path | None]  # (agent, "api"|"proxy") → the daemon's unix socket, None: none

HANDSHAKE_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 5.0  # a refused peer that never answers the TLS close is dropped after this
CONNECT_TIMEOUT = 5.0  # to the gateway's or proxy's unix socket
MAX_PENDING = 256  # connections in the handshake or before their auth line, in all
MAX_PENDING_PER_HOST = 64  # of those, from one peer address
MAX_SPLICED = 32  # per agent and channel (api, proxy)
_LOGGED = 10  # refusals logged in full; then only the 2^n-th
UNAUTHORIZED = "not authenticated: unknown agent or wrong secret"
_KEYS = frozenset({"op", "agent", "secret", "channel"})


@dataclass(frozen=True)
class AuthLine:
    agent: str
    secret: str
    channel: str


class Refused(Exception):
    """A connection answered with one error line and closed: ``code`` and ``message`` go to the peer,
    ``reason`` to the log only."""

    def __init__(self, code: str, message: str, reason: str) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


def parse_auth(line: bytes) -> AuthLine:
    """The first line of a connection, checked (pure); `Refused` (bad_request) unless it is an auth line."""
    try:
        obj = loads(line)
    except HiveError as exc:  # not JSON, not UTF-8, a lone surrogate, too deep
        raise Refused("bad_request", f"the first line must be the auth line: {exc.message}", "bad_json") from None
    if not isinstance(obj, dict) or obj.get("op") != "auth":
        raise Refused("bad_request", 'the first line must be {"op":"auth","agent":…,"secret":…,"channel":…}',
                      "not_auth")
    if set(obj) != _KEYS:
        raise Refused("bad_request", "the auth line has op, agent, secret and channel, and nothing else", "keys")
    agent, secret, channel = obj["agent"], obj["secret"], obj["channel"]
    if not isinstance(channel, str) or channel not in LINK_CHANNELS:
        raise Refused("bad_request", f"channel must be one of {', '.join(LINK_CHANNELS)}", "channel")
    if not isinstance(agent, str) or not isinstance(secret, str):
        raise Refused("bad_request", "agent and secret must be strings", "types")
    return AuthLine(agent, secret, channel)


def _streams(transport: asyncio.BaseTransport, rest: bytes, limit: int,
             ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The connection as asyncio streams from now on, ``rest`` (read already) first."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if rest:
        reader.feed_data(rest)
    assert isinstance(transport, asyncio.WriteTransport)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class _Auth(asyncio.Protocol):
    """A connection from its handshake to its auth line: counted as pending, under a deadline."""

    def __init__(self, listen: AgentListen, host: str) -> None:
        self.listen = listen
        self.host = host
        self.made = False
        self.counted = True
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.made, self.transport = True, transport
        self._timer = asyncio.get_running_loop().call_later(self.listen.auth_timeout, self._late)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._buf += data
        nl = self._buf.find(b"\n", 0, MAX_AUTH_LINE + 1)
        if nl < 0:
            if len(self._buf) > MAX_AUTH_LINE:
                self._refuse(Refused("bad_request", f"the auth line is longer than {MAX_AUTH_LINE} bytes", "long"))
            return
        line, rest = bytes(self._buf[:nl]), bytes(self._buf[nl + 1:])
        self._buf = bytearray()
        self._finish()
        assert self.transport is not None
        try:
            handed = self.listen.authenticate(self.transport, line, rest, self.host)
        except Exception:  # noqa: BLE001 - a bug here drops this connection, never the server
            _log.exception("agent_link.auth_failed", peer=self.host)
            self.transport.abort()
            return
        if handed:
            self.release()  # now counted in the agent's caps

    def eof_received(self) -> bool:
        self._finish()  # gone before a whole line: nothing to answer
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        self.release()

    def _late(self) -> None:
        if not self._done:
            self._refuse(Refused("bad_request", f"no auth line within {self.listen.auth_timeout:g} s", "timeout"))

    def _refuse(self, r: Refused) -> None:
        self._finish()
        if self.transport is not None:
            self.listen.refuse(self.transport, r, self.host)

    def _finish(self) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def release(self) -> None:
        if self.counted:
            self.counted = False
            self.listen.unpend(self)


class AgentListen:
    """The server, on the daemon's loop. ``lookup(agent)``: the agent's JSON-lines server and MCP
    endpoint (`AgentSockets.servers_of`); ``target(agent, channel)``: its gateway's or proxy's socket."""

    def __init__(self, ctx: ssl.SSLContext, secrets: AgentSecrets, lookup: Lookup, target: Target, *,
                 auth_timeout: float = AUTH_TIMEOUT, handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 max_pending: int = MAX_PENDING, max_pending_per_host: int = MAX_PENDING_PER_HOST,
                 max_spliced: int = MAX_SPLICED) -> None:
        self._ctx = ctx
        self.secrets = secrets
        self._lookup = lookup
        self._target = target
        self.auth_timeout = auth_timeout
        self._handshake_timeout = handshake_timeout
        self._max_pending, self._max_per_host, self._max_spliced = max_pending, max_pending_per_host, max_spliced
        self._pending: set[_Auth] = set()
        self._per_host: dict[str, int] = {}
        self._spliced: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening: list[tuple[socket.socket, Callable[[], None]]] = []
        self._counts: dict[str, int] = {}
        self.port = 0
        self.address = ""  # what a relay connects to, HOST:PORT (set by whoever binds it)
        self.ca_pem = ""  # what a relay pins
        self.port_file: Path | None = None  # removed at stop
        self.web = WebDock()  # the agents' web UIs on their nodes

    def credentials(self, agent: str) -> dict[str, str]:
        """What a relay for ``agent`` needs: a new secret (the old one stops working), the address, the
        CA. Writes a file: not on the loop."""
        return {"agent": agent, "secret": self.secrets.issue(agent), "address": self.address, "ca_pem": self.ca_pem}

    # --- accepting ---------------------------------------------------------------

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self.port = self.port or int(sock.getsockname()[1])
            self._listening.append((sock, add_accept_handler(sock, self._accepted, {"socket": "agent-listen"})))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _accepted(self, sock: socket.socket, address: Any) -> None:
        host = str(address[0]) if isinstance(address, tuple) and address else "?"
        if len(self._pending) >= self._max_pending or self._per_host.get(host, 0) >= self._max_per_host:
            self._note("agent_link.too_many_pending", peer=host, max=self._max_pending)
            sock.close()
            return
        sock.setblocking(False)
        proto = _Auth(self, host)
        self._pending.add(proto)
        self._per_host[host] = self._per_host.get(host, 0) + 1
        made = asyncio.ensure_future(asyncio.get_running_loop().connect_accepted_socket(
            lambda: proto, sock, ssl=self._ctx, ssl_handshake_timeout=self._handshake_timeout,
            ssl_shutdown_timeout=SHUTDOWN_TIMEOUT))
        made.add_done_callback(lambda f: self._made(f, proto, sock))

    def _made(self, fut: asyncio.Future[Any], proto: _Auth, sock: socket.socket) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled() or exc is not None:
            if not proto.made:  # no transport: connection_lost never comes
                proto.release()
                sock.close()
            self._note("agent_link.handshake_failed", peer=proto.host, error=repr(exc)[:200])

    def unpend(self, proto: _Auth) -> None:
        self._pending.discard(proto)
        n = self._per_host.get(proto.host, 0) - 1
        if n > 0:
            self._per_host[proto.host] = n
        else:
            self._per_host.pop(proto.host, None)

    def _note(self, event: str, **fields: Any) -> None:
        """Log ``event``: its first ``_LOGGED``, then every 2^n-th (a flood never floods the log)."""
        n = self._counts[event] = self._counts.get(event, 0) + 1
        if n <= _LOGGED or n & (n - 1) == 0:
            _log.warning(event, count=n, **fields)

    # --- the auth line --------------------------------------------------------------

    def refuse(self, transport: asyncio.Transport, r: Refused, host: str, agent: str | None = None) -> None:
        self._note("agent_link.refused", code=r.code, reason=r.reason, peer=host,
                   **({"agent": agent} if agent is not None and is_valid_name(agent) else {}))
        if not transport.is_closing():
            transport.write(error_line(r.code, r.message))
            transport.close()

    def authenticate(self, transport: asyncio.Transport, line: bytes, rest: bytes, host: str) -> bool:
        """The first line came: the connection handed to its channel (True), or refused."""
        agent = None
        try:
            auth = parse_auth(line)
            agent = auth.agent
            if not self.secrets.check(auth.agent, auth.secret):
                raise Refused("unauthorized", UNAUTHORIZED, "secret")
            servers = self._lookup(auth.agent)
            if servers is None:  # only one who holds the secret learns this
                raise Refused("unavailable", f"{auth.agent} is not served by this daemon now", "not_served")
            self._serve(transport, auth, rest, *servers)
            keep_alive(transport)  # a parked recv or web connection may be silent for hours
        except Refused as r:
            self.refuse(transport, r, host, agent)
            return False
        _log.debug("agent_link.connected", agent=auth.agent, channel=auth.channel, peer=host)
        return True

    def _serve(self, transport: asyncio.Transport, auth: AuthLine, rest: bytes, hive: JsonLineServer,
               mcp: McpEndpoint) -> None:
        full = Refused("unavailable", f"too many {auth.channel} connections for this agent", "cap")
        if auth.channel == "hive":
            if hive.full():
                raise full
            transport.write(OK_LINE)
            hive.adopt(transport, rest)
        elif auth.channel == "web":
            if self.web.full(auth.agent):
                raise full
            reader, writer = _streams(transport, rest, 1 << 16)
            writer.write(OK_LINE)
            self.web.park(auth.agent, reader, writer)
        elif auth.channel == "mcp":
            if mcp.full():
                raise full
            reader, writer = _streams(transport, rest, MCP_MAX_LINE)
            writer.write(OK_LINE)
            self._track(mcp.accepted(reader, writer))
        else:
            key = (auth.agent, auth.channel)
            if self._spliced.get(key, 0) >= self._max_spliced:
                raise full
            self._spliced[key] = self._spliced.get(key, 0) + 1
            reader, writer = _streams(transport, rest, 1 << 16)
            self._track(self._splice(key, reader, writer))

    def _track(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _splice(self, key: tuple[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      ) -> None:
        agent, channel = key
        try:
            path = self._target(agent, channel)
            try:
                if path is None:
                    raise ConnectionRefusedError("no such socket")
                up_reader, up_writer = await asyncio.wait_for(
                    nofollow_unix_connector(str(path.parent), path.name, None)(), CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                _log.warning("agent_link.target_failed", agent=agent, channel=channel, error=repr(exc)[:200])
                writer.write(error_line("unavailable", f"the agent's {channel} socket is not reachable now"))
                return
            writer.write(OK_LINE)
            await splice(up_reader, up_writer, reader, writer, abort_on_cancel=True)  # a TLS side
        except asyncio.CancelledError:
            writer.transport.abort()  # the daemon stops
        except Exception as exc:  # noqa: BLE001 - one connection never takes the server down
            _log.warning("agent_link.splice_failed", agent=agent, channel=channel, error=repr(exc)[:200])
            writer.transport.abort()
        finally:
            n = self._spliced.get(key, 1) - 1
            if n > 0:
                self._spliced[key] = n
            else:
                self._spliced.pop(key, None)
            writer.close()

    def stop(self) -> None:
        """Stop accepting; drop what is not authenticated yet and the spliced streams (hive
        connections are their JSON-lines server's, as its unix socket's are)."""
        listening, self._listening = self._listening, []
        for sock, remove in listening:
            remove()
            sock.close()
        for proto in list(self._pending):
            if proto.transport is not None:
                proto.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        self.web.stop()
        if self.port_file is not None:
            self.port_file.unlink(missing_ok=True)
