"""The agents' web UIs on the host's loopback: each agent's sticky port
relays to the web UI its harness serves on a unix socket (`start_web_relay`),
to the operator only; `judge_web_request` is the verdict on one request (pure).

The relay reads each request head (`http_head`, as the proxy does) and lets
through only the operator (issue 12): ``Host`` is ``127.0.0.1:<port>`` or
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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import hyperhive.logs as logs
from hyperhive.sandbox.http_head import HEAD_LIMIT, Refusal, parse_head, read_head
from hyperhive.sandbox.relay import Connect, capped_handler, register_server, splice
from hyperhive.sandbox.web_asleep import Asleep, answer_asleep, send_and_linger
from hyperhive.web.dashboard.access import SESSION_COOKIE, Access, fetch_allowed, origin_ok, strip_cookie

__all__ = ["WEB_MAX_CONNECTIONS", "Forward", "WebRefused", "judge_web_request", "start_web_relay"]

_log = logs.get("hyperhive.endpoints")

WEB_MAX_CONNECTIONS = 64  # per agent: a browser's parallel fetches, a few tabs' live streams
WEB_HEAD_TIMEOUT = 30.0
WEB_MAX_BODY = 1 << 20  # the UI posts small JSON bodies
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
    if not (raw_length.isascii() and raw_length.isdigit()):  # isdigit() takes "²" (a Latin-1 byte), int() not
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
    await send_and_linger(reader, writer, (
        f"HTTP/1.1 {status} {_TEXTS[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
        f"Connection: close\r\n\r\n".encode() + body))


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
                          max_connections: int = WEB_MAX_CONNECTIONS,
                          asleep: Callable[[], Asleep | None] | None = None) -> asyncio.Server:
    """Serve ``agent``'s web UI on ``host:port`` to the operator only (see the module doc).
    ``asleep()``: the agent, when it hibernates (its UI is then answered here: `web_asleep`)."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(WEB_HEAD_TIMEOUT):
                got = await read_head(reader)
            if got is None:
                return
            head, rest = got
            req = parse_head(head)
            fwd = judge_web_request(req.method, req.target, req.minor, req.headers, port, access)
        except TimeoutError:
            return await _answer(reader, writer, 408)
        except Refusal as r:
            _log.info("web.refused", agent=agent, status=r.status, why=r.reason)
            return await _answer(reader, writer, 431 if r.status == 431 else 400)
        except WebRefused as r:
            _log.info("web.refused", agent=agent, status=r.status, why=r.why)
            return await _answer(reader, writer, r.status)
        try:
            up_reader, up_writer = await connect()
        except Exception as err:  # noqa: BLE001 - not running, or a socket we refuse to follow
            if asleep is not None and (sleeping := asleep()) is not None:  # issue 17
                return await answer_asleep(reader, writer, req.method, req.target, fwd.upgrade, sleeping)
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
                answer = await read_head(up_reader)
            if answer is None:
                raise ConnectionResetError("the UI closed without an answer")
            writer.write(_without_cookies(answer[0]) + answer[1])
            if fwd.upgrade:
                await splice(reader, writer, up_reader, up_writer)
                return
            await _copy(up_reader, writer, None)  # until the UI closes (Connection: close)
        except (OSError, RuntimeError, TimeoutError, Refusal) as err:
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
