"""The egress proxy on a real unix socket, with real loopback servers behind it.

This machine has no DNS: the allowed names reach 127.0.0.1 through the
operator's ``resolve`` mapping (the one way a name may point at loopback),
and the refusals are checked for literals, for a name that resolves to
loopback through /etc/hosts (``localhost``) and as a pure table."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support import async_wait_for

from hyperhive.sandbox.allowlist import Allowlist, parse_resolve
from hyperhive.sandbox.proxy import is_public_address, start_proxy
from hyperhive.sandbox.relay import bound_port, live_connections, start_tcp_relay, stop_server, unix_connector


@pytest.fixture(autouse=True)
def _no_error_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing here may make asyncio log an error (an exception out of a connection)."""
    yield
    errors = [r for r in caplog.records if r.levelno >= 40]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


@dataclass
class Origin:
    """A loopback HTTP/1.1 server that records each request head and body."""

    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            self.bodies.append(await reader.readexactly(length))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@dataclass
class Echo:
    """A raw TCP echo server; keeps its connections to cut them on cue."""

    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    closed: int = 0
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.closed += 1
            writer.close()


@dataclass
class Setup:
    path: Path
    origin: Origin
    echo: Echo
    allow: list[Allowlist]
    refused: list[tuple[str, str, int, str]]
    server: asyncio.Server
    closed: int = 0  # a port nothing listens on, mapped for dead.hive.test

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(str(self.path))

    async def ask(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await self.open()
        writer.write(data)
        try:
            return await read_response(reader)
        finally:
            writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    n = int(headers.get("content-length", "0"))
    return status, headers, await asyncio.wait_for(reader.readexactly(n), 10)


def resolve_for(origin: int, echo: int, closed: int) -> dict[str, str]:
    """The operator's mapping, as `--proxy-resolve` gives it: each name for one port."""
    return parse_resolve(f"pkgs.hive.test:{origin}=127.0.0.1, echo.hive.test:{echo}=127.0.0.1,"
                         f"Git.Hive.Test.:{origin}=127.0.0.1, dead.hive.test:{closed}=127.0.0.1")


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    origin, echo = Origin(), Echo()
    origin.server = await asyncio.start_server(origin.handle, "127.0.0.1", 0)
    echo.server = await asyncio.start_server(echo.handle, "127.0.0.1", 0)
    path = tmp_path / "proxy.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    allow = [Allowlist.parse(["pkgs.hive.test", f"echo.hive.test:{echo.port}", "*.hive.test:1", "127.0.0.1",
                              "localhost", "git.hive.test", "dead.hive.test"])]
    refused: list[tuple[str, str, int, str]] = []
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    resolve = resolve_for(origin.port, echo.port, closed_port)
    server = await start_proxy("alice", sock, lambda: allow[0], resolve,
                               on_refused=lambda *a: refused.append(a), connect_timeout=5)
    tasks_before = len(asyncio.all_tasks())
    yield Setup(path, origin, echo, allow, refused, server, closed_port)
    await async_wait_for(lambda: live_connections(server) == 0, what="every proxy connection to end")
    await stop_server(server)
    for w in echo.writers:
        w.close()
    origin.server.close()
    echo.server.close()
    await origin.server.wait_closed()
    await echo.server.wait_closed()
    await async_wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before, what="no task left behind")


async def test_connect_to_an_allowed_mapped_name_splices_both_ways(setup: Setup) -> None:
    reader, writer = await setup.open()
    with capture_logs() as logs:
        # The first bytes of the tunnel ride along with the CONNECT head.
        writer.write(f"CONNECT echo.hive.test:{setup.echo.port} HTTP/1.1\r\nHost: x\r\n\r\nearly".encode())
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == \
            b"HTTP/1.1 200 Connection established\r\n\r\n"
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"early"
        for i in range(20):
            writer.write(b"ping %d " % i * 1000)
            assert await asyncio.wait_for(reader.readexactly(len(b"ping %d " % i) * 1000), 10) == b"ping %d " % i * 1000
    [rec] = [r for r in logs if r["event"] == "proxy.connect"]
    assert rec["agent"] == "alice" and rec["host"] == "echo.hive.test" and rec["port"] == setup.echo.port
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # the echo server closed on our EOF
    writer.close()
    assert setup.refused == []


async def test_a_host_not_on_the_list_is_refused_with_how_to_allow_it(setup: Setup) -> None:
    with capture_logs() as logs:
        status, headers, body = await setup.ask(b"CONNECT other.example:443 HTTP/1.1\r\n\r\n")
    assert status == 403 and headers["connection"] == "close"
    text = body.decode()
    assert "other.example:443" in text and '"network": {"allow": ["other.example"]}' in text
    assert "agent.json" in text
    assert setup.refused == [("alice", "other.example", 443, "not on the allowlist")]
    [rec] = [r for r in logs if r["event"] == "proxy.refused"]
    assert (rec["agent"], rec["host"], rec["port"], rec["reason"]) == \
        ("alice", "other.example", 443, "not on the allowlist")


async def test_a_port_specific_entry_allows_that_port_only(setup: Setup) -> None:
    status, _, _ = await setup.ask(f"CONNECT echo.hive.test:{setup.echo.port + 1} HTTP/1.1\r\n\r\n".encode())
    assert status == 403
    assert setup.refused == [("alice", "echo.hive.test", setup.echo.port + 1, "not on the allowlist")]


async def test_a_loopback_literal_is_refused_even_when_listed(setup: Setup) -> None:
    status, _, body = await setup.ask(f"CONNECT 127.0.0.1:{setup.echo.port} HTTP/1.1\r\n\r\n".encode())
    assert status == 403 and b"not a public address" in body
    assert setup.refused == [("alice", "127.0.0.1", setup.echo.port, "not a public address (127.0.0.1)")]
    status, _, _ = await setup.ask(f"GET http://127.0.0.1:{setup.origin.port}/ HTTP/1.1\r\n\r\n".encode())
    assert status == 403 and setup.origin.heads == []
    status, _, body = await setup.ask(f"CONNECT [::1]:{setup.echo.port} HTTP/1.1\r\n\r\n".encode())
    assert status == 403 and setup.echo.writers == [] and b"IPv6 addresses cannot be allowed" in body


async def test_a_name_resolving_to_loopback_is_refused_unless_the_operator_mapped_it(setup: Setup) -> None:
    # "localhost" is listed, and /etc/hosts resolves it (no DNS needed): to loopback.
    status, _, body = await setup.ask(f"CONNECT localhost:{setup.echo.port} HTTP/1.1\r\n\r\n".encode())
    assert status == 403, body
    [(_, host, port, reason)] = setup.refused
    assert (host, port) == ("localhost", setup.echo.port) and reason.startswith("not a public address")
    assert setup.echo.writers == []


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True),
    ("1.1.1.1", True),
    ("2606:4700:4700::1111", True),
    ("::ffff:8.8.8.8", True),
    ("127.0.0.1", False),
    ("127.255.0.1", False),
    ("10.1.2.3", False),
    ("172.16.0.1", False),
    ("192.168.1.1", False),
    ("169.254.169.254", False),  # cloud metadata
    ("100.64.0.1", False),  # CGNAT
    ("0.0.0.0", False),
    ("255.255.255.255", False),
    ("224.0.1.1", False),  # multicast, though "global"
    ("240.0.0.1", False),
    ("192.0.2.1", False),  # documentation
    ("::1", False),
    ("::", False),
    ("fe80::1", False),
    ("fc00::1", False),
    ("fd12:3456::1", False),
    ("ff02::1", False),
    ("ff0e::1", False),
    ("::ffff:127.0.0.1", False),  # v4-mapped loopback
    ("::ffff:10.0.0.1", False),
    ("::ffff:169.254.169.254", False),
    ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
    ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
    ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
    ("2002:c0a8:101::1", False),  # 6to4 of 192.168.1.1
    ("2001:db8::1", False),  # documentation
])
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


async def test_absolute_form_http_is_forwarded_in_origin_form(setup: Setup) -> None:
    request = (f"POST http://PKGS.hive.test:{setup.origin.port}/simple/pkg?x=1&y=2 HTTP/1.1\r\n"
               f"Host: evil.example\r\nUser-Agent: pip/24\r\nProxy-Authorization: Basic c2VjcmV0\r\n"
               f"Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
               f"Content-Length: 4\r\n\r\nbody").encode()
    status, _, body = await setup.ask(request)
    assert (status, body) == (200, b"hello")
    [head] = setup.origin.heads
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /simple/pkg?x=1&y=2 HTTP/1.1"
    assert f"Host: pkgs.hive.test:{setup.origin.port}" in lines
    assert "Connection: close" in lines and "User-Agent: pip/24" in lines and "Content-Length: 4" in lines
    low = head.lower()
    assert b"proxy-" not in low and b"keep-alive" not in low and b"evil.example" not in low and b"x-hop" not in low
    assert setup.origin.bodies == [b"body"]


async def test_the_allowlist_is_asked_on_every_request(setup: Setup) -> None:
    get = f"GET http://pkgs.hive.test:{setup.origin.port}/ HTTP/1.1\r\n\r\n".encode()
    assert (await setup.ask(get))[0] == 200
    setup.allow[0] = Allowlist.parse([])
    assert (await setup.ask(get))[0] == 403
    setup.allow[0] = Allowlist.parse(["*.hive.test"])
    assert (await setup.ask(get))[0] == 200
    assert len(setup.origin.heads) == 2


async def test_a_failing_allowlist_fails_closed(setup: Setup) -> None:
    setup.server.close()  # a second proxy with a broken allow()
    path = setup.path.with_name("broken.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(1)

    def broken() -> Allowlist:
        raise OSError("agent.json unreadable")

    refused: list[tuple[str, str, int, str]] = []
    server = await start_proxy("bob", sock, broken, resolve_for(setup.origin.port, setup.echo.port, setup.closed),
                               on_refused=lambda *a: refused.append(a))
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(f"GET http://pkgs.hive.test:{setup.origin.port}/ HTTP/1.1\r\n\r\n".encode())
        assert (await read_response(reader))[0] == 403
        writer.close()
        assert refused == [("bob", "pkgs.hive.test", setup.origin.port, "not on the allowlist")]
        assert setup.origin.heads == []
    finally:
        await async_wait_for(lambda: live_connections(server) == 0, what="bob's connection to end")
        await stop_server(server)


@pytest.mark.parametrize("request_line, reason", [
    ("GET https://pkgs.hive.test/x HTTP/1.1", "https:// must use CONNECT"),
    ("GET ftp://pkgs.hive.test/x HTTP/1.1", "scheme 'ftp' is not served"),
    ("GET / HTTP/1.1", "not a proxy request: use an absolute http:// URL or CONNECT host:port"),
    ("GET http://user:pw@pkgs.hive.test/ HTTP/1.1", "userinfo in the URL"),
    ("GET http://pkgs.hive.test/#frag HTTP/1.1", "a fragment in the request target"),
    ("GET http://pkgs.hive.test:99999/ HTTP/1.1", "bad port"),
    ("GET http://bad_name.test/ HTTP/1.1", "not a host name or IP address"),
    ("CONNECT pkgs.hive.test HTTP/1.1", "CONNECT needs host:port"),
    ("CONNECT [::1 HTTP/1.1", "malformed host"),
    ("GET http://pkgs.hive.test/ HTTP/2.0", "not an HTTP/1.x request line"),
    ("hello there", "not an HTTP/1.x request line"),
])
async def test_bad_requests_are_refused_with_400(setup: Setup, request_line: str, reason: str) -> None:
    status, _, body = await setup.ask(request_line.encode() + b"\r\nHost: x\r\n\r\n")
    assert status == 400, body
    [(agent, _, _, got)] = setup.refused
    assert (agent, got) == ("alice", reason)
    assert setup.origin.heads == [] and setup.echo.writers == []


async def test_garbage_is_a_400(setup: Setup) -> None:
    status, _, _ = await setup.ask(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
    assert status == 400
    status, _, _ = await setup.ask(b"GET http://pkgs.hive.test/ HTTP/1.1\r\nno colon here\r\n\r\n")
    assert status == 400
    status, _, _ = await setup.ask(b"GET http://pkgs.hive.test/ HTTP/1.1\r\n folded: x\r\n\r\n")
    assert status == 400
    assert [r[3] for r in setup.refused] == ["not an HTTP/1.x request line", "malformed header line",
                                             "malformed header line"]


async def test_a_head_over_16_kib_is_a_431(setup: Setup) -> None:
    big = b"GET http://pkgs.hive.test/ HTTP/1.1\r\nX-Big: " + b"a" * (20 * 1024) + b"\r\n\r\n"
    status, _, _ = await setup.ask(big)
    assert status == 431
    # No end of head at all: refused once 16 KiB have come, not read forever.
    reader, writer = await setup.open()
    writer.write(b"GET http://pkgs.hive.test/ HTTP/1.1\r\nX-Big: " + b"b" * (40 * 1024))
    assert (await read_response(reader))[0] == 431
    writer.close()
    assert setup.origin.heads == []


async def test_a_connect_failure_is_a_502(setup: Setup) -> None:
    status, _, body = await setup.ask(f"CONNECT dead.hive.test:{setup.closed} HTTP/1.1\r\n\r\n".encode())
    assert status == 502 and b"cannot connect to dead.hive.test" in body
    assert setup.refused == []


async def test_a_mapped_name_opens_only_its_mapped_port(setup: Setup) -> None:
    """`pkgs.hive.test` is allowed on any port, and mapped to 127.0.0.1 for the
    origin's port only: any other port of loopback (the dashboard, another
    agent's web UI) stays out of reach."""
    for port in (setup.echo.port, 1, 22, 8080):
        status, _, body = await setup.ask(f"CONNECT pkgs.hive.test:{port} HTTP/1.1\r\n\r\n".encode())
        assert status == 403 and b"mapped by the operator for other ports" in body
        status, _, _ = await setup.ask(f"GET http://pkgs.hive.test:{port}/ HTTP/1.1\r\n\r\n".encode())
        assert status == 403
    assert {r[3] for r in setup.refused} == {"port not mapped"}


async def test_a_client_closing_mid_splice_cleans_up(setup: Setup) -> None:
    reader, writer = await setup.open()
    writer.write(f"CONNECT echo.hive.test:{setup.echo.port} HTTP/1.1\r\n\r\n".encode())
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.write(b"abc")
    assert await asyncio.wait_for(reader.readexactly(3), 10) == b"abc"
    assert live_connections(setup.server) == 1
    writer.transport.abort()
    await async_wait_for(lambda: setup.echo.closed == 1, what="the upstream side to be closed")
    await async_wait_for(lambda: live_connections(setup.server) == 0, what="the proxy connection to end")


async def test_the_upstream_closing_mid_splice_cleans_up(setup: Setup) -> None:
    reader, writer = await setup.open()
    writer.write(f"CONNECT echo.hive.test:{setup.echo.port} HTTP/1.1\r\n\r\n".encode())
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.write(b"abc")
    assert await asyncio.wait_for(reader.readexactly(3), 10) == b"abc"
    setup.echo.writers[0].transport.abort()  # RST from the far end
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        pass
    writer.close()
    await async_wait_for(lambda: live_connections(setup.server) == 0, what="the proxy connection to end")


async def test_stop_server_ends_open_tunnels(setup: Setup) -> None:
    reader, writer = await setup.open()
    writer.write(f"CONNECT echo.hive.test:{setup.echo.port} HTTP/1.1\r\n\r\n".encode())
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    await stop_server(setup.server)
    assert live_connections(setup.server) == 0
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        pass
    writer.close()
    await async_wait_for(lambda: setup.echo.closed == 1, what="the upstream side to be closed")


async def test_a_name_mapped_with_a_trailing_dot_and_case_still_maps(setup: Setup) -> None:
    status, _, body = await setup.ask(f"GET http://git.hive.test.:{setup.origin.port}/x HTTP/1.0\r\n\r\n".encode())
    assert (status, body) == (200, b"hello")
    assert setup.origin.heads[0].startswith(b"GET /x HTTP/1.0\r\nHost: git.hive.test:")


async def test_a_refused_upload_through_the_harness_relay_still_gets_its_403(setup: Setup) -> None:
    """Through the TCP relay the harness runs: the refusal comes back whole even
    though the client is still sending a body the proxy will never forward."""
    relay = await start_tcp_relay("127.0.0.1", 0, unix_connector(str(setup.path)), "proxy")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(relay))
        body = b"x" * (512 * 1024)
        writer.write(b"POST http://other.example/upload HTTP/1.1\r\nHost: other.example\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status, _, text = await read_response(reader)
        assert status == 403 and b"other.example" in text
        writer.close()
    finally:
        await async_wait_for(lambda: live_connections(relay) == 0, what="the relay connection to end")
        await stop_server(relay)
    assert setup.refused == [("alice", "other.example", 80, "not on the allowlist")]


async def test_an_agent_holds_at_most_max_connections(setup: Setup) -> None:
    from hyperhive.sandbox.proxy import MAX_CONNECTIONS

    conns = [await setup.open() for _ in range(MAX_CONNECTIONS + 5)]
    await async_wait_for(lambda: live_connections(setup.server) == MAX_CONNECTIONS, what="the cap reached")
    for reader, _ in conns[MAX_CONNECTIONS:]:
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed at accept
    assert [r[3] for r in setup.refused].count("too many connections") == 5
    for _, writer in conns:
        writer.close()
    await async_wait_for(lambda: live_connections(setup.server) == 0, what="all gone")
