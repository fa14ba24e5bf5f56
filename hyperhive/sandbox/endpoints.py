"""The daemon's other servers for each agent, beside its JSON-lines socket.

In ``agents/<name>/run/`` (bound read-only into the sandbox; each socket is
the agent's own, mode 0600, see `accounts.own_sockets`):
- ``api.sock``: the model-API gateway (`gateway.ApiGateway`), which holds the
  daemon's credential;
- ``proxy.sock``: the egress proxy (`proxy.start_proxy`) with the agent's
  allowlist from its applied agent.json (read per request, so a rebuild's
  new list applies at once).
And on the host's loopback, the agent's sticky port (F20) serves the web UI
its harness binds on a socket in its state dir (`WebRelay`), reached without
following a link and only if the agent's uid owns it. The sandbox has no
network of its own the host could reach, and the daemon, not a file the agent
writes, knows the port (`web_port`: None when it could not bind it).

The web relay reads each request head (the proxy's parser) and lets through
only the operator (issue 12): ``Host`` is ``127.0.0.1:<port>`` or
``localhost:<port>`` (421), fetch metadata shows no other site or port started
it (403), the operator's session cookie (the dashboard's: a browser sends it to
every 127.0.0.1 port, so the dashboard's link just works) or ``Authorization:
Bearer <token>`` (401), and with a session, a websocket upgrade or any method
but GET/HEAD comes from the agent's own origin (403). The agent never sees the
operator's secret: the session cookie and ``Authorization`` are taken out
before the head goes on, and the UI's ``Set-Cookie`` out of its answer (an
agent sets no cookie for 127.0.0.1, whose cookies every port shares: it could
overwrite the operator's session). One request per connection (``Connection:
close``), its body exactly ``Content-Length`` long (no chunked bodies); a
websocket upgrade is spliced both ways after the answer's head. Refusals name
nothing.

``open`` binds the unix sockets at once (any thread, like `AgentSockets`);
the servers are attached on the IOLoop thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tornado.ioloop import IOLoop

import hyperhive.logs as logs
from hyperhive.actors.events import Hub, ProxyRefused
from hyperhive.actors.ports import read_port_file
from hyperhive.names import AgentName
from hyperhive.paths import WEB_SOCKET, StatePaths
from hyperhive.sandbox.allowlist import Allowlist
from hyperhive.sandbox.gateway import ApiGateway
from hyperhive.sandbox.proxy import HEAD_LIMIT, _parse, _read_head, _Refusal, start_proxy
from hyperhive.sandbox.relay import (
    Connect,
    capped_handler,
    nofollow_unix_connector,
    register_server,
    splice,
    stop_server,
)
from hyperhive.web.dashboard.access import (
    SESSION_COOKIE,
    Access,
    fetch_allowed,
    origin_ok,
    strip_cookie,
)
from hyperhive.web.rpc.jsonlines import bind_socket

__all__ = ["AgentEndpoints", "WebRefused", "Forward", "judge_web_request", "start_web_relay"]

_log = logs.get("hyperhive.endpoints")


class AgentEndpoints:
    def __init__(self, io_loop: IOLoop, paths: StatePaths, gateway: ApiGateway, resolve: Mapping[str, str],
                 hub: Hub, owner_uid: Callable[[AgentName], int | None], web_host: str = "127.0.0.1", *,
                 access: Access) -> None:
        self._loop = io_loop
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
                servers.append(await start_web_relay(self._web_host, port, self._web_connector(name), name,
                                                     self._access))
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


# --- the agents' web UIs -----------------------------------------------------------------

WEB_MAX_CONNECTIONS = 64  # per agent: a browser's parallel fetches, a few tabs' live streams
WEB_HEAD_TIMEOUT = 30.0
WEB_MAX_BODY = 1 << 20  # the UI posts small JSON bodies
_LINGER_SECONDS = 2.0
# Never passed on: hop-by-hop headers (re-made below), the operator's credentials.
_WEB_DROP = frozenset({"connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection", "expect",
                       "authorization", "proxy-authorization", "cookie"})
# Headers the verdict depends on: more than one of any is refused, not guessed at.
_SINGLE = frozenset({"host", "authorization", "origin", "content-length", "transfer-encoding", "upgrade",
                     "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest"})
_TEXTS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 408: "Request Timeout",
          413: "Payload Too Large", 421: "Misdirected Request", 431: "Request Header Fields Too Large"}


class WebRefused(Exception):
    """A refused request: ``status`` goes to the caller with a fixed text, ``why`` to the log."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


@dataclass(frozen=True)
class Forward:
    head: bytes  # the request head to pass on, blank line included
    upgrade: bool  # a websocket: splice after the head
    body: int  # Content-Length: bytes of body to pass on after the head


def judge_web_request(method: str, target: str, minor: str, headers: list[tuple[str, str]], port: int,
                      access: Access) -> Forward:
    """What to pass on to the agent's web UI for this request head, or WebRefused (pure)."""
    seen: dict[str, str] = {}
    for k, v in headers:
        low = k.lower()
        if low in _SINGLE and low in seen:
            raise WebRefused(400, f"more than one {k} header")
        if low == "cookie" and low in seen:
            seen[low] += "; " + v
        else:
            seen[low] = v
    if not target.startswith("/"):
        raise WebRefused(400, "not an origin-form request target")
    host = seen.get("host", "").strip().lower()
    if host not in (f"127.0.0.1:{port}", f"localhost:{port}"):
        raise WebRefused(421, f"host {host!r} is not this agent's")
    view = {"Sec-Fetch-Site": seen.get("sec-fetch-site"), "Sec-Fetch-Mode": seen.get("sec-fetch-mode"),
            "Sec-Fetch-Dest": seen.get("sec-fetch-dest")}
    if not fetch_allowed({k: v for k, v in view.items() if v is not None}, method):
        raise WebRefused(403, f"sec-fetch-site {view['Sec-Fetch-Site']} {view['Sec-Fetch-Mode']}")
    auth = access.authenticate({"Authorization": seen.get("authorization", ""), "Cookie": seen.get("cookie", "")})
    if auth is None:
        raise WebRefused(401, "no valid session or bearer token")
    connection = {t.strip().lower() for t in seen.get("connection", "").split(",") if t.strip()}
    upgrade = seen.get("upgrade", "").strip().lower() == "websocket" and "upgrade" in connection
    origin = seen.get("origin")
    if origin is not None and not origin_ok(origin, host):
        raise WebRefused(403, f"origin {origin!r} is not the agent's own")
    if auth.is_session and (upgrade or method not in ("GET", "HEAD")) and origin is None:
        raise WebRefused(403, "no Origin on a websocket or a write with a session cookie")
    if "transfer-encoding" in seen:
        raise WebRefused(400, "a chunked (Transfer-Encoding) request body")
    raw_length = seen.get("content-length", "0").strip()
    if not raw_length.isdigit():
        raise WebRefused(400, "a malformed Content-Length")
    length = int(raw_length)
    if length > WEB_MAX_BODY:
        raise WebRefused(413, f"a body of {length} bytes")
    if upgrade and length:
        raise WebRefused(400, "a body on a websocket upgrade")
    out = [f"{method} {target} HTTP/1.{minor}"]
    for k, v in headers:
        low = k.lower()
        if low in _WEB_DROP or low in connection or low.startswith("proxy-"):
            continue
        out.append(f"{k}: {v}")
    kept = strip_cookie(seen.get("cookie", ""), SESSION_COOKIE)
    if kept:
        out.append(f"Cookie: {kept}")
    out += ["Connection: Upgrade", "Upgrade: websocket"] if upgrade else ["Connection: close"]
    return Forward(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"), upgrade, length)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int) -> None:
    """A refusal: a fixed text (nothing of the hive), then read and drop what the
    client still sends for a moment, so the answer is not lost to a reset."""
    body = f"{status} {_TEXTS[status]}\n".encode()
    writer.write(f"HTTP/1.1 {status} {_TEXTS[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                 f"Connection: close\r\n\r\n".encode() + body)
    try:
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(_LINGER_SECONDS):
            while await reader.read(1 << 16):
                pass
    except (OSError, TimeoutError):
        pass


def _without_cookies(head: bytes) -> bytes:
    """The UI's response head without ``Set-Cookie``: an agent sets no cookie for
    127.0.0.1 (every port shares them: it could overwrite the operator's session)."""
    lines = head.split(b"\r\n")
    kept = [lines[0], *(ln for ln in lines[1:] if ln.partition(b":")[0].strip().lower() != b"set-cookie")]
    return b"\r\n".join(kept) + b"\r\n\r\n"


async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter, n: int | None) -> None:
    """``n`` bytes (None: until EOF) from ``src`` to ``dst``."""
    while n is None or n > 0:
        data = await src.read(1 << 16 if n is None else min(n, 1 << 16))
        if not data:
            if n:
                raise ConnectionResetError("the client left before the end of its body")
            return
        dst.write(data)
        await dst.drain()
        if n is not None:
            n -= len(data)


async def start_web_relay(host: str, port: int, connect: Connect, agent: str, access: Access,
                          max_connections: int = WEB_MAX_CONNECTIONS) -> asyncio.Server:
    """Serve ``agent``'s web UI on ``host:port`` to the operator only (see the module doc)."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(WEB_HEAD_TIMEOUT):
                got = await _read_head(reader)
            if got is None:
                return
            head, rest = got
            req = _parse(head)
            fwd = judge_web_request(req.method, req.target, req.minor, req.headers, port, access)
        except TimeoutError:
            return await _answer(reader, writer, 408)
        except _Refusal as r:
            _log.info("web.refused", agent=agent, status=r.status, why=r.reason)
            return await _answer(reader, writer, 431 if r.status == 431 else 400)
        except WebRefused as r:
            _log.info("web.refused", agent=agent, status=r.status, why=r.why)
            return await _answer(reader, writer, r.status)
        try:
            up_reader, up_writer = await connect()
        except Exception as err:  # noqa: BLE001 - not running, or a socket we refuse to follow
            _log.warning("relay.connect_failed", name=f"web:{agent}", error=f"{type(err).__name__}: {err}")
            writer.transport.abort()  # as a plain relay would: nothing to answer for the agent
            return
        try:
            if fwd.upgrade:
                up_writer.write(fwd.head + rest)
            else:
                up_writer.write(fwd.head + rest[:fwd.body])
                await _copy(reader, up_writer, fwd.body - len(rest[:fwd.body]))
            async with asyncio.timeout(WEB_HEAD_TIMEOUT):
                answer = await _read_head(up_reader)
            if answer is None:
                raise ConnectionResetError("the UI closed without an answer")
            writer.write(_without_cookies(answer[0]) + answer[1])
            if fwd.upgrade:
                await splice(reader, writer, up_reader, up_writer)
                return
            await _copy(up_reader, writer, None)  # until the UI closes (Connection: close)
        except (OSError, RuntimeError, TimeoutError, _Refusal) as err:
            _log.info("web.upstream_failed", agent=agent, error=f"{type(err).__name__}: {err}")
            writer.transport.abort()
        finally:
            up_writer.close()

    def refuse(writer: asyncio.StreamWriter) -> None:  # a page cannot spend the daemon's file descriptors
        _log.info("web.refused", agent=agent, status=0, why="too many connections")
        writer.transport.abort()

    handle = capped_handler(serve, tasks, max_connections, refuse, "web.failed", abort_on_error=True, agent=agent)
    server = await asyncio.start_server(handle, host, port)
    register_server(server, tasks)
    return server


assert HEAD_LIMIT >= 8 * 1024  # the proxy's head limit covers a browser's cookies
