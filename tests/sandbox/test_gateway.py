"""The model API gateway on a real unix socket, forwarding to the scripted
Anthropic server (tests/fake_anthropic.py) over loopback; the harness's TCP
relay in front where a client needs TCP; the real Claude Code CLI when it is
installed."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web
from fake_anthropic import FakeAnthropic, Reply, _Messages, text
from structlog.testing import capture_logs
from support import async_wait_for

from hyperhive.sandbox.gateway import ApiGateway
from hyperhive.sandbox.gateway_forward import BODY_LIMIT
from hyperhive.sandbox.relay import bound_port, start_tcp_relay, stop_server, unix_connector
from hyperhive.sandbox.upstream import Upstream, upstream_from_env, upstream_url

DAEMON_KEY = "sk-daemon-test"


class _RecordingMessages(_Messages):
    def prepare(self) -> None:
        self.fake.headers.append(  # type: ignore[attr-defined]
            {k.lower(): v for k, v in self.request.headers.get_all()})


class HeaderFake(FakeAnthropic):
    """The scripted server, also recording each request's headers (the fake's
    `Recorded` has none: which key reached the upstream is the point here)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers: list[dict[str, str]] = []

    async def _serve(self) -> None:  # FakeAnthropic._serve with the recording handler
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = tornado.web.Application([(r"/.*", _RecordingMessages, {"fake": self})])
        server = tornado.httpserver.HTTPServer(app)
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = sock.getsockname()[1]
        server.add_sockets([sock])
        self._ready.set()
        await self._stop.wait()
        server.stop()
        await server.close_all_connections()


@pytest.fixture(autouse=True)
def _no_error_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No test here may make tornado (or anything) log an error; the fake's
    own access log of a scripted 5xx aside."""
    yield
    errors = [r for r in caplog.records if r.levelno >= 40 and r.name != "tornado.access"]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


@pytest.fixture
def fake() -> Iterator[HeaderFake]:
    with HeaderFake() as f:
        yield f


@dataclass
class Gw:
    path: Path
    gateway: ApiGateway
    usage: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


async def _open(tmp_path: Path, upstream: Upstream, name: str = "api.sock") -> Gw:
    usage: list[tuple[str, dict[str, Any]]] = []
    gateway = ApiGateway(upstream, on_usage=lambda agent, rec: usage.append((agent, rec)))
    path = tmp_path / name
    gateway.open("alice", tornado.netutil.bind_unix_socket(str(path)))
    return Gw(path, gateway, usage)


@pytest.fixture
async def gw(tmp_path: Path, fake: HeaderFake) -> AsyncIterator[Gw]:
    g = await _open(tmp_path, Upstream(fake.base_url, {"x-api-key": DAEMON_KEY}))
    yield g
    g.gateway.close_all()
    await g.gateway.wait_closed()


async def raw(path: Path, data: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """One raw HTTP/1.1 exchange on a unix socket: (status, headers, body, complete).

    The body is read by its framing (a cut chunked stream is incomplete)."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if "content-length" in headers:
            return status, headers, await reader.readexactly(int(headers["content-length"])), True
        if headers.get("transfer-encoding") != "chunked":
            return status, headers, await asyncio.wait_for(reader.read(), 30), True
        body = b""
        try:
            while size := int(await asyncio.wait_for(reader.readuntil(b"\r\n"), 30), 16):
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            await reader.readexactly(2)
        except asyncio.IncompleteReadError as err:
            return status, headers, body + err.partial, False
        return status, headers, body, True
    finally:
        writer.close()


def messages_request(stream: bool = True, extra: str = "", target: str = "/v1/messages?beta=true",
                     connection: str = "close") -> bytes:
    body = json.dumps({"model": "claude-test", "stream": stream, "max_tokens": 10, "tools": [{"name": "t"}],
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    return (f"POST {target} HTTP/1.1\r\nHost: whatever\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n").encode() + body


# --- credentials -------------------------------------------------------------------


async def test_the_upstream_sees_the_daemon_key_never_the_placeholder(gw: Gw, fake: HeaderFake) -> None:
    with capture_logs() as logs:
        status, _, body, complete = await raw(gw.path, messages_request(
            extra="x-api-key: placeholder\r\nAuthorization: Bearer placeholder\r\nanthropic-version: 2023-06-01\r\n"))
    assert status == 200 and complete and b"message_stop" in body
    [seen] = fake.headers
    assert seen["x-api-key"] == DAEMON_KEY and "authorization" not in seen
    assert seen["anthropic-version"] == "2023-06-01"
    assert all("placeholder" not in v for v in seen.values())
    # Nothing secret in the log.
    assert DAEMON_KEY not in repr(logs) and "placeholder" not in repr(logs)
    assert DAEMON_KEY not in repr(gw.gateway.upstream)


async def test_an_auth_token_upstream_sets_a_bearer(tmp_path: Path, fake: HeaderFake) -> None:
    g = await _open(tmp_path, upstream_from_env({"ANTHROPIC_BASE_URL": fake.base_url,
                                                 "ANTHROPIC_AUTH_TOKEN": "daemon-oauth"}))
    try:
        await raw(g.path, messages_request(extra="x-api-key: placeholder\r\nAuthorization: Bearer agent\r\n"))
    finally:
        g.gateway.close_all()
        await g.gateway.wait_closed()
    [seen] = fake.headers
    assert seen["authorization"] == "Bearer daemon-oauth" and "x-api-key" not in seen


async def test_without_a_daemon_credential_the_agents_own_auth_passes(tmp_path: Path, fake: HeaderFake) -> None:
    g = await _open(tmp_path, upstream_from_env({"ANTHROPIC_BASE_URL": fake.base_url}))
    assert not g.gateway.upstream.holds_credential
    try:
        status, *_ = await raw(g.path, messages_request(extra="Authorization: Bearer agent-own-login\r\n"))
    finally:
        g.gateway.close_all()
        await g.gateway.wait_closed()
    assert status == 200
    [seen] = fake.headers
    assert seen["authorization"] == "Bearer agent-own-login" and "x-api-key" not in seen


async def test_hop_by_hop_headers_stay_behind(gw: Gw, fake: HeaderFake) -> None:
    await raw(gw.path, messages_request(
        extra="X-Private: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
              "Proxy-Authorization: Basic eA==\r\nAccept-Encoding: br\r\nX-Kept: yes\r\n",
        connection="x-private, close"))
    [seen] = fake.headers
    assert seen["x-kept"] == "yes"
    for gone in ("x-private", "keep-alive", "te", "proxy-authorization"):
        assert gone not in seen
    assert seen["host"] == f"127.0.0.1:{fake.port}" and seen.get("accept-encoding") == "gzip"


# --- the upstream is fixed -------------------------------------------------------------


async def test_the_request_target_cannot_change_the_upstream_host(gw: Gw, fake: HeaderFake) -> None:
    await raw(gw.path, b"GET //evil.test/x HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n")
    await raw(gw.path, messages_request(target="http://evil.test/v1/messages?beta=true"))
    await raw(gw.path, b"GET https://evil.test:8443 HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n")
    # Only the Messages API and the model list are forwarded: the other two are refused here (403).
    assert [(r.method, r.path) for r in fake.requests] == [("POST", "/v1/messages?beta=true")]
    assert {h["host"] for h in fake.headers} == {f"127.0.0.1:{fake.port}"}
    assert all(h["x-api-key"] == DAEMON_KEY for h in fake.headers)


@pytest.mark.parametrize("uri, out", [
    ("/v1/messages?beta=true", "https://api.test/v1/messages?beta=true"),
    ("//evil.test/x", "https://api.test//evil.test/x"),
    ("http://evil.test/v1/x?q", "https://api.test/v1/x?q"),
    ("HTTPS://evil.test", "https://api.test/"),
    ("http://evil.test?x=1", "https://api.test/?x=1"),
    ("/@evil.test/", "https://api.test/@evil.test/"),
])
def test_upstream_url(uri: str, out: str) -> None:
    assert upstream_url("https://api.test", uri) == out


@pytest.mark.parametrize("uri", ["*", "evil.test/x", "/a\\b", "/a#b", "/a b", ""])
def test_upstream_url_refuses(uri: str) -> None:
    with pytest.raises(ValueError):
        upstream_url("https://api.test", uri)


@pytest.mark.parametrize("line", [
    b"GET /v1/files", b"POST /v1/files", b"POST /v1/messages/batches", b"DELETE /v1/messages", b"GET /",
    b"POST /v1/organizations/api_keys", b"GET /v1/models/../files", b"PUT /v1/messages", b"GET //evil.test/x",
])
async def test_only_the_messages_api_and_the_model_list_are_forwarded(gw: Gw, fake: HeaderFake, line: bytes) -> None:
    head = b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    status, _, body, _ = await raw(gw.path, line + head)
    assert status == 403 and "is not forwarded" in json.loads(body)["error"]["message"]
    assert fake.requests == []


async def test_an_unusable_target_is_a_400(gw: Gw, fake: HeaderFake) -> None:
    status, _, body, _ = await raw(gw.path, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 400 and json.loads(body)["type"] == "error"
    assert fake.requests == []


@pytest.mark.parametrize("env, base, headers", [
    ({}, "https://api.anthropic.com", {}),
    ({"ANTHROPIC_BASE_URL": "http://127.0.0.1:9/"}, "http://127.0.0.1:9", {}),
    ({"ANTHROPIC_BASE_URL": "https://gw.corp/anthropic//"}, "https://gw.corp/anthropic", {}),
    ({"ANTHROPIC_API_KEY": "k", "ANTHROPIC_AUTH_TOKEN": "t"}, "https://api.anthropic.com", {"x-api-key": "k"}),
    ({"ANTHROPIC_API_KEY": "", "ANTHROPIC_AUTH_TOKEN": "t"}, "https://api.anthropic.com",
     {"authorization": "Bearer t"}),
    ({"ANTHROPIC_BASE_URL": ""}, "https://api.anthropic.com", {}),
])
def test_upstream_from_env(env: dict[str, str], base: str, headers: dict[str, str]) -> None:
    up = upstream_from_env(env)
    assert (up.base_url, dict(up.headers), up.holds_credential) == (base, headers, bool(headers))


@pytest.mark.parametrize("url", ["ftp://x", "api.anthropic.com", "http://", "https://u:p@x.test",
                                 "https://x.test?q=1", "https://x.test/#f", "http://x.test:99999", "unix:/x"])
def test_upstream_from_env_refuses_a_bad_url(url: str) -> None:
    with pytest.raises(ValueError):
        upstream_from_env({"ANTHROPIC_BASE_URL": url})


# --- streaming and usage ---------------------------------------------------------------


async def test_sse_streams_through_before_the_upstream_finishes(gw: Gw, fake: HeaderFake) -> None:
    hold = threading.Event()
    fake.set_script([Reply([text("first"), text("second")], hold=hold, input_tokens=321, output_tokens=54)])
    relay = await start_tcp_relay("127.0.0.1", 0, unix_connector(str(gw.path)), "api")
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    got = bytearray()
    try:
        body = json.loads(messages_request().split(b"\r\n\r\n", 1)[1])
        fetch = asyncio.ensure_future(client.fetch(
            f"http://127.0.0.1:{bound_port(relay)}/v1/messages?beta=true", method="POST",
            headers={"x-api-key": "placeholder", "content-type": "application/json"}, body=json.dumps(body),
            streaming_callback=got.extend, request_timeout=30))
        # The fake now holds, mid-stream, until we let it go: what we see came through already.
        await async_wait_for(lambda: b"content_block_start" in got or fetch.done(), what="the first events")
        assert not fetch.done() and not hold.is_set()
        assert got.startswith(b"event: message_start\n") and b"message_stop" not in got
        assert gw.usage == []  # not finished yet
        hold.set()
        response = await asyncio.wait_for(fetch, 30)
    finally:
        hold.set()
        client.close()
        await stop_server(relay)
    assert response.code == 200 and response.headers["content-type"] == "text/event-stream"
    assert b"event: message_stop" in got and b"second" in got
    [(agent, rec)] = gw.usage
    assert agent == "alice"
    assert {k: rec[k] for k in ("model", "input_tokens", "output_tokens", "status", "path")} == {
        "model": "claude-test", "input_tokens": 321, "output_tokens": 54, "status": 200, "path": "/v1/messages"}
    assert rec["ms"] > 0


async def test_an_agent_leaving_mid_stream_ends_the_request(gw: Gw, fake: HeaderFake) -> None:
    hold = threading.Event()
    fake.set_script([Reply([text("a"), text("b")], hold=hold, input_tokens=40)])
    reader, writer = await asyncio.open_unix_connection(str(gw.path))
    writer.write(messages_request())
    got = b""
    while b"content_block_start" not in got:
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, got
        got += chunk
    writer.transport.abort()  # the agent's turn was cancelled
    hold.set()
    await async_wait_for(lambda: gw.usage, what="the request to be reported")
    [(_, rec)] = gw.usage
    assert rec["status"] == 200 and rec["input_tokens"] == 40


async def test_json_usage_and_the_log_line(gw: Gw, fake: HeaderFake) -> None:
    fake.set_script([Reply([text("x")], input_tokens=5, output_tokens=6)])
    with capture_logs() as logs:
        status, headers, body, _ = await raw(gw.path, messages_request(stream=False))
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["usage"] == {"input_tokens": 5, "output_tokens": 6, "cache_read_input_tokens": 0,
                                         "cache_creation_input_tokens": 0}
    [(_, rec)] = gw.usage
    assert (rec["input_tokens"], rec["output_tokens"], rec["status"], rec["path"]) == (5, 6, 200, "/v1/messages")
    [line] = [r for r in logs if r["event"] == "gateway.request"]
    assert (line["agent"], line["method"], line["path"], line["status"], line["input_tokens"],
            line["output_tokens"]) == ("alice", "POST", "/v1/messages", 200, 5, 6)
    assert "ms" in line and "hi" not in json.dumps(line)  # no body in the log


async def test_an_upstream_error_status_passes_through(gw: Gw, fake: HeaderFake) -> None:
    fake.set_script([Reply(status=529)])
    status, _, body, _ = await raw(gw.path, messages_request())
    assert status == 529 and json.loads(body)["error"]["message"] == "scripted failure"
    assert gw.usage[0][1]["status"] == 529


async def test_an_unreachable_upstream_is_a_502_in_the_apis_shape(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    g = await _open(tmp_path, Upstream(f"http://127.0.0.1:{port}", {"x-api-key": DAEMON_KEY}))
    try:
        status, headers, body, _ = await raw(g.path, messages_request())
    finally:
        g.gateway.close_all()
        await g.gateway.wait_closed()
    assert status == 502 and headers["content-type"].startswith("application/json")
    err = json.loads(body)
    assert err["type"] == "error" and err["error"]["type"] == "api_error"
    assert err["error"]["message"].startswith("hyperhive gateway: ") and DAEMON_KEY not in body.decode()
    assert g.usage[0][1]["status"] == 502


async def test_an_upstream_cut_mid_stream_is_not_a_clean_end(tmp_path: Path) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 1000\r\n\r\n"
                     b"event: ping\ndata: {}\n\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    g = await _open(tmp_path, Upstream(f"http://127.0.0.1:{port}"))
    try:
        status, _, body, complete = await raw(
            g.path, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        g.gateway.close_all()
        await g.gateway.wait_closed()
        server.close()
        await server.wait_closed()
    assert status == 200 and body == b"event: ping\ndata: {}\n\n" and not complete


async def test_a_body_over_64_mib_is_a_413(gw: Gw, fake: HeaderFake) -> None:
    # Declared too long: refused at once, the body never read.
    reader, writer = await asyncio.open_unix_connection(str(gw.path))
    writer.write(f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY_LIMIT + 1}\r\n\r\n".encode()
                 + b"{" * 1000)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 413 ")
    writer.close()
    # Chunked, no length said: refused once the body passes the limit.
    reader, writer = await asyncio.open_unix_connection(str(gw.path))
    writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % (1 << 20) + b"x" * (1 << 20) + b"\r\n"

    async def send() -> None:
        try:
            for _ in range(BODY_LIMIT // (1 << 20) + 2):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass

    sender = asyncio.ensure_future(send())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 413 ")
    await sender
    writer.close()
    assert fake.requests == []
    await async_wait_for(lambda: len(gw.usage) == 2, what="both refusals reported")
    assert [rec["status"] for _, rec in gw.usage] == [413, 413]


async def test_a_small_body_and_a_get_go_through(gw: Gw, fake: HeaderFake) -> None:
    status, *_ = await raw(gw.path, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "z" * (2 << 20)}]}).encode()
    status, _, body, _ = await raw(gw.path, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                   + f"Content-Length: {len(big)}\r\n\r\n".encode() + big)
    assert status == 200
    assert fake.requests[-1].body["messages"][0]["content"] == "z" * (2 << 20)


async def test_close_stops_serving_that_agent(tmp_path: Path, fake: HeaderFake) -> None:
    gateway = ApiGateway(Upstream(fake.base_url, {"x-api-key": DAEMON_KEY}))
    gateway.open("alice", tornado.netutil.bind_unix_socket(str(tmp_path / "a.sock")))
    gateway.open("bob", tornado.netutil.bind_unix_socket(str(tmp_path / "b.sock")))
    assert gateway.serving() == ["alice", "bob"]
    gateway.close("alice")
    await gateway.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_unix_connection(str(tmp_path / "a.sock"))
    status, *_ = await raw(tmp_path / "b.sock", messages_request())
    assert status == 200 and gateway.serving() == ["bob"]
    gateway.close_all()
    await gateway.wait_closed()


# --- the real Claude Code CLI ------------------------------------------------------------


@pytest.mark.e2e  # the real claude CLI
@pytest.mark.skipif(shutil.which("claude") is None, reason="needs the Claude Code CLI")
async def test_claude_cli_through_relay_and_gateway_uses_the_daemon_key(
        tmp_path: Path, gw: Gw, fake: HeaderFake) -> None:
    relay = await start_tcp_relay("127.0.0.1", 0, unix_connector(str(gw.path)), "api")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env.update(HOME=str(home), CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_TELEMETRY="1",
               DISABLE_AUTOUPDATER="1", ANTHROPIC_BASE_URL=f"http://127.0.0.1:{bound_port(relay)}",
               ANTHROPIC_API_KEY="placeholder")
    try:
        proc = await asyncio.create_subprocess_exec(
            shutil.which("claude") or "claude", "-p", "hi", "--output-format", "stream-json", "--verbose",
            env=env, cwd=str(tmp_path), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 120)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    finally:
        await stop_server(relay)
    assert proc.returncode == 0, err.decode()[-2000:]
    result = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")][-1]
    assert result["type"] == "result" and not result.get("is_error"), result
    assert fake.main_requests(), [r.path for r in fake.requests]
    assert fake.headers and all(h.get("x-api-key") == DAEMON_KEY for h in fake.headers)
    assert not any("placeholder" in v for h in fake.headers for v in h.values())
    assert any(rec["input_tokens"] > 0 for _, rec in gw.usage)


# --- what one agent may hold in the daemon (red team: fds and memory) -----------------


async def test_stalled_uploads_hold_no_memory_once_gone_and_the_budget_refuses_past_it(gw: Gw) -> None:
    from hyperhive.sandbox.gateway_forward import AGENT_BODY_BUDGET

    chunk = 1 << 20
    writers = []
    for _ in range(4):  # each declares 60 MiB and sends 40, then stalls: the 4th is past the budget
        reader, writer = await asyncio.open_unix_connection(str(gw.path))
        writer.write(f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: {60 * chunk}\r\n\r\n".encode())
        try:
            for _ in range(40):
                writer.write(b"x" * chunk)
                await writer.drain()
        except ConnectionError:  # refused past the budget, and closed
            pass
        writers.append((reader, writer))
    await async_wait_for(lambda: gw.gateway.buffered("alice") > AGENT_BODY_BUDGET - 40 * chunk, timeout=20,
                         what="the bodies buffered up to the budget")
    assert gw.gateway.buffered("alice") <= AGENT_BODY_BUDGET
    # The 4th upload went over the agent's budget: answered 503 (reported), never buffered.
    await async_wait_for(lambda: [rec for _, rec in gw.usage if rec["status"] == 503], what="a 503")
    for _, writer in writers:
        writer.transport.abort()
    await async_wait_for(lambda: gw.gateway.buffered("alice") == 0, timeout=10, what="every byte given back")


async def test_an_agent_holds_at_most_max_connections(gw: Gw, fake: HeaderFake) -> None:
    from hyperhive.sandbox.gateway import MAX_CONNECTIONS

    conns = [await asyncio.open_unix_connection(str(gw.path)) for _ in range(MAX_CONNECTIONS + 8)]
    closed = 0
    for reader, _ in conns[MAX_CONNECTIONS:]:
        closed += await asyncio.wait_for(reader.read(), 10) == b""
    assert closed == 8
    for _, writer in conns:
        writer.transport.abort()
    server = gw.gateway._servers["alice"]
    await async_wait_for(lambda: len(server._connections) == 0,  # type: ignore[attr-defined]
                         what="the server saw them go")
    status, _, _, _ = await raw(gw.path, messages_request())  # the next one is served again
    assert status == 200
