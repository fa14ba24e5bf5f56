"""Each agent's egress proxy: HTTP CONNECT and absolute-form plain HTTP,
through that agent's allowlist (asyncio, on a unix socket the daemon bound).

The sandbox has no network of its own; the harness relays 127.0.0.1:<port>
to this socket and points ``HTTPS_PROXY``/``HTTP_PROXY`` there, so every
outbound connection of the agent's tools comes here, one request per
connection. The socket is the agent's identity (one server per agent).

What is refused (403, or 400 for what cannot be read, always logged as
``proxy.refused`` and passed to ``on_refused``):
- a host that is not on the allowlist (asked for again on every request: it
  may change while the agent runs);
- ``https://`` in absolute form (TLS goes through CONNECT) and any other
  scheme, userinfo, origin-form requests;
- an address that is not globally routable (loopback, private, link-local,
  CGNAT, multicast, reserved, unspecified, and IPv6 forms wrapping those),
  whether given as a literal or resolved, unless the name comes from the
  operator's ``resolve`` mapping (like ``curl --resolve``), which is used as
  given.
The name is resolved once and the connection goes to an address that was
checked (never a second lookup: no DNS rebinding between check and connect).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable, Mapping

import hyperhive.logs as logs
from hyperhive.sandbox.allowlist import Allowlist, normalize_host
from hyperhive.sandbox.http_head import HEAD_LIMIT, Refusal, bad_request, parse_head, read_head
from hyperhive.sandbox.relay import capped_handler, register_server, splice

__all__ = ["HEAD_LIMIT", "Refused", "is_public_address", "start_proxy"]

_log = logs.get("hyperhive.proxy")

Refused = Callable[[str, str, int, str], None]  # (agent, host, port, reason)

MAX_CONNECTIONS = 32  # per agent: parallel downloads need a few
HEAD_TIMEOUT = 60.0
LINGER_SECONDS = 2.0  # after a refusal, how long the rest of a request is read and dropped
LINGER_BYTES = 1 << 20

_PORT = re.compile(r"[0-9]{1,5}")
# Hop-by-hop headers of the client's request; Host is rewritten from the URL.
_DROP = frozenset({"connection", "keep-alive", "te", "trailer", "upgrade", "host"})
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A globally routable unicast address. IPv6 forms that carry an IPv4
    address (v4-mapped, NAT64, 6to4) must carry a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = ip.ipv4_mapped
        if embedded is not None:
            return is_public_address(embedded)
        if any(ip in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None:
            embedded = ip.sixtofour
        if embedded is not None and not is_public_address(embedded):
            return False
    return bool(ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified
                                      or ip.is_loopback or ip.is_link_local or ip.is_private))


class _Failure(Exception):
    """Not a refusal: we tried and could not (502)."""


_REASONS = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout",
            431: "Request Header Fields Too Large", 502: "Bad Gateway"}


async def _respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, text: str) -> None:
    """Answer and half-close, then read what the client still sends (a body)
    until it closes: closing on unread data would reset the connection, and
    the client could lose the answer before reading it."""
    body = text.encode()
    writer.write(
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    )
    try:
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_SECONDS):
            left = LINGER_BYTES
            while left > 0 and (data := await reader.read(min(left, 1 << 16))):
                left -= len(data)
    except (OSError, TimeoutError):
        pass


def _authority(text: str, default_port: int | None) -> tuple[str, int]:
    """``host[:port]`` (IPv6 in brackets) → (normalized host, port)."""
    if text.startswith("["):
        end = text.find("]")
        host_text, rest = text[: end + 1], text[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            raise bad_request("malformed host")
        port_text = rest[1:] if rest else None
    else:
        host_text, sep, port_text_ = text.rpartition(":")
        if not sep:
            host_text, port_text = text, None
        else:
            port_text = port_text_
    if port_text is None:
        if default_port is None:
            raise bad_request("CONNECT needs host:port")
        port = default_port
    else:
        if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise bad_request("bad port")
        port = int(port_text)
    host = normalize_host(host_text)
    if host is None:
        raise bad_request("not a host name or IP address")
    return host, port


def _absolute(target: str) -> tuple[str, int, str]:
    """``http://host[:port]/path?q`` → (host, port, origin-form target)."""
    scheme, sep, rest = target.partition("://")
    if not sep or not scheme:
        raise bad_request("not a proxy request: use an absolute http:// URL or CONNECT host:port")
    if scheme.lower() == "https":
        raise Refusal(400, "https:// must use CONNECT",
                      text="hyperhive proxy: https:// goes through CONNECT (set HTTPS_PROXY), "
                           "not as a plain request\n")
    if scheme.lower() != "http":
        raise bad_request(f"scheme {scheme[:20]!r} is not served")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "@" in authority:
        raise bad_request("userinfo in the URL")
    if "#" in target:
        raise bad_request("a fragment in the request target")
    host, port = _authority(authority, 80)
    if not path.startswith("/"):
        path = "/" + path
    return host, port, path


def _host_header(host: str, port: int, default: int) -> str:
    h = f"[{host}]" if ":" in host else host
    return h if port == default else f"{h}:{port}"


async def start_proxy(agent: str, sock: socket.socket, allow: Callable[[], Allowlist],
                      resolve: Mapping[str, str], on_refused: Refused | None = None,
                      connect_timeout: float = 10.0, max_connections: int = MAX_CONNECTIONS) -> asyncio.Server:
    """Serve ``agent``'s egress proxy on ``sock`` (bound, listening AF_UNIX);
    at most ``max_connections`` at once (more are closed at accept)."""
    mapping = dict(resolve)  # "host:port" → address (allowlist.parse_resolve)
    mapped_names = {k.rpartition(":")[0] for k in mapping}
    tasks: set[asyncio.Task[None]] = set()

    def refused(host: str, port: int, reason: str) -> None:
        _log.info("proxy.refused", agent=agent, host=host, port=port, reason=reason)
        if on_refused is not None:
            try:
                on_refused(agent, host, port, reason)
            except Exception as err:  # noqa: BLE001 - a listener's bug must not break the proxy
                _log.warning("proxy.on_refused_failed", agent=agent, error=f"{type(err).__name__}: {err}")

    def check_allowed(host: str, port: int) -> None:
        try:
            ok = allow().allows(host, port)
        except Exception as err:  # noqa: BLE001 - fail closed
            _log.warning("proxy.allowlist_failed", agent=agent, error=f"{type(err).__name__}: {err}")
            ok = False
        if ok:
            return
        if ":" in host:  # an IPv6 literal: no entry can name one
            how = "IPv6 addresses cannot be allowed; use the host's name"
        else:
            how = (f'To allow it, add it to agent.json: "network": {{"allow": ["{host}"]}} '
                   f'(or "{host}:{port}" for that port only, "*.example.com" for subdomains)')
        raise Refusal(403, "not on the allowlist", host, port,
                      f"hyperhive proxy: {host}:{port} is not on {agent}'s allowlist.\n{how}.\n")

    def not_public(host: str, port: int, address: str) -> Refusal:
        return Refusal(403, f"not a public address ({address})", host, port, (
            f"hyperhive proxy: {host}:{port} is {address}, not a public address; agents reach only "
            f"globally routable hosts (an operator may map a name with the proxy's resolve setting).\n"))

    async def addresses(host: str, port: int) -> list[str]:
        if f"{host}:{port}" in mapping:
            return [mapping[f"{host}:{port}"]]
        if host in mapped_names:  # declared for other ports only: never any other port of its address
            raise Refusal(403, "port not mapped", host, port, (
                f"hyperhive proxy: {host} is mapped by the operator for other ports, not {port}.\n"))
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            if not is_public_address(ip):
                raise not_public(host, port, host)
            return [host]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (OSError, TimeoutError) as err:
            raise _Failure(f"cannot resolve {host}: {err}") from None
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        public = [a for a in found if is_public_address(ipaddress.ip_address(a))]
        if not public:
            raise not_public(host, port, found[0] if found else "no address")
        return public

    async def open_to(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        addrs = await addresses(host, port)
        errors: list[str] = []
        try:
            async with asyncio.timeout(connect_timeout):
                for addr in addrs:
                    try:
                        r, w = await asyncio.open_connection(addr, port, flags=socket.AI_NUMERICHOST)
                        return r, w, addr
                    except OSError as err:
                        errors.append(f"{addr}: {err.strerror or err}")
        except TimeoutError:
            errors.append(f"timed out after {connect_timeout:g}s")
        raise _Failure(f"cannot connect to {host}:{port} ({'; '.join(errors)})")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = "", 0
        try:
            try:
                async with asyncio.timeout(HEAD_TIMEOUT):
                    got = await read_head(reader)
            except TimeoutError:
                await _respond(reader, writer, 408, "hyperhive proxy: no request head in time\n")
                return
            if got is None:
                return
            head, rest = got
            req = parse_head(head)
            if req.method == "CONNECT":
                host, port = _authority(req.target, None)
                check_allowed(host, port)
                up_reader, up_writer, addr = await open_to(host, port)
                _log.info("proxy.connect", agent=agent, host=host, port=port, address=addr, method="CONNECT")
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    up_writer.write(rest)
            else:
                host, port, path = _absolute(req.target)
                check_allowed(host, port)
                up_reader, up_writer, addr = await open_to(host, port)
                _log.info("proxy.connect", agent=agent, host=host, port=port, address=addr, method=req.method)
                named = {n.strip().lower() for k, v in req.headers if k.lower() == "connection" for n in v.split(",")}
                out = [f"{req.method} {path} HTTP/1.{req.minor}", f"Host: {_host_header(host, port, 80)}"]
                out += [f"{k}: {v}" for k, v in req.headers
                        if k.lower() not in _DROP and k.lower() not in named and not k.lower().startswith("proxy-")]
                out.append("Connection: close")
                up_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + rest)
            await splice(reader, writer, up_reader, up_writer)
        except Refusal as r:
            refused(r.host or host, r.port or port, r.reason)
            await _respond(reader, writer, r.status, r.text or f"hyperhive proxy: refused ({r.reason})\n")
        except _Failure as f:
            _log.info("proxy.connect_failed", agent=agent, host=host, port=port, error=str(f))
            await _respond(reader, writer, 502, f"hyperhive proxy: {f}\n")

    def refuse(writer: asyncio.StreamWriter) -> None:
        refused("", 0, "too many connections")
        writer.close()

    handle = capped_handler(serve, tasks, max_connections, refuse, "proxy.failed", abort_on_error=False, agent=agent)
    server = await asyncio.start_unix_server(handle, sock=sock)
    register_server(server, tasks)
    return server
