"""hyperhive.web.rpc.jsonlines: a real `JsonLineServer` on a real unix socket,
served by the test's own loop (no daemon), with op tables of our own making.
What a request gets back, replies out of order matched by id, the in-flight
cap, a closed peer's requests cancelled, the connection cap, and a peer that
does not read cut off without losing a result; each of these for ops run as
their own Task and for ``inline`` ops (driven by the connection, no Task). (The daemon-level tests of the
same sockets are tests/web/test_bad_input.py and tests/security/test_bounds.py,
in the e2e tier.)"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing
from support import async_wait_for

from hyperhive.errors import UnknownAgent
from hyperhive.web.rpc.jsonlines import MAX_IN_FLIGHT, MAX_UNFLUSHED, JsonLineServer, Op, bind_socket
from hyperhive.wire import MAX_LINE, Recv, Send

TIMEOUT = 10.0


class Peer:
    """One raw connection: write bytes, read response lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: Path) -> Peer:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=4 * MAX_LINE)
        return cls(reader, writer)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        assert line, "the server closed the connection"
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def ask(self, data: bytes) -> dict[str, Any]:
        await self.write(data)
        return await self.read()

    async def closed_by_server(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), TIMEOUT) == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


def req(rid: object, op: str, **fields: Any) -> bytes:
    return json.dumps({"id": rid, "op": op, **fields}).encode() + b"\n"


class Gates:
    """``send`` requests whose body names a gate wait until it opens."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.cancelled: list[str] = []

    def gate(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())

    async def send(self, r: Send) -> dict[str, Any]:
        self.started.append(r.body)
        if r.body.startswith("wait:"):
            try:
                await self.gate(r.body).wait()
            except asyncio.CancelledError:
                self.cancelled.append(r.body)
                raise
        return {"body": r.body}


async def ping(_: Any) -> dict[str, Any]:
    return {"pong": True}


async def refuse(_: Any) -> dict[str, Any]:
    raise UnknownAgent("no agent named 'ghost'")


async def crash(_: Any) -> dict[str, Any]:
    raise ZeroDivisionError("boom")


Serve = Callable[..., Awaitable[Path]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """Start a server on a fresh socket: ``await serve(ops, max_connections=None)``."""
    servers: list[JsonLineServer] = []

    async def start(ops: dict[str, Op], max_connections: int | None = None) -> Path:
        path = tmp_path / f"s{len(servers)}.sock"
        server = JsonLineServer(ops, {"socket": "test"}, max_connections=max_connections)
        server.add_socket(bind_socket(path))
        servers.append(server)
        return path

    yield start
    for server in servers:
        server.stop()
    await asyncio.sleep(0)  # let the stopped servers' connection handlers see the end


def basic_ops(gates: Gates, inline: bool = False) -> dict[str, Op]:
    return {"ping": Op(ping, inline=inline), "send": Op(gates.send, inline=inline),
            "ls": Op(refuse, inline=inline), "recent": Op(crash, inline=inline)}


@pytest.fixture(params=[False, True], ids=["task", "inline"])
def inline(request: pytest.FixtureRequest) -> bool:
    """Each op as its own Task, or ``inline`` (the connection drives it)."""
    flag: bool = request.param
    return flag


# --- what one request gets back ------------------------------------------------------

@pytest.mark.parametrize(
    ("line", "want"),
    [
        (req(1, "ping"), {"id": 1, "ok": True, "pong": True}),
        (req("s-1", "ping"), {"id": "s-1", "ok": True, "pong": True}),  # string ids are echoed as they are
        (req(2, "send", to="b", body="hi"), {"id": 2, "ok": True, "body": "hi"}),
        (b"{not json\n", {"id": None, "ok": False, "code": "bad_json"}),
        (b"\xff\xfe\n", {"id": None, "ok": False, "code": "bad_json"}),
        (req(3, "fly"), {"id": 3, "ok": False, "code": "unknown_op"}),
        (req(4, "spawn", name="x"), {"id": 4, "ok": False, "code": "unknown_op"}),  # a wire op this socket lacks
        (req(5, "send", to="b"), {"id": 5, "ok": False, "code": "bad_request"}),
        (req(6, "ls"), {"id": 6, "ok": False, "code": "unknown_agent"}),  # the op's own HiveError, its code
        (req(7, "recent"), {"id": 7, "ok": False, "code": "internal"}),  # anything else: internal
        (b"x" * MAX_LINE + b"\n", {"id": None, "ok": False, "code": "bad_json"}),  # at the limit: read, not JSON
        (b"x" * (MAX_LINE + 1) + b"\n", {"id": None, "ok": False, "code": "line_too_long"}),
    ],
    ids=["ping", "string-id", "send", "bad-json", "not-utf8", "unknown-op", "op-not-here", "missing-field",
         "op-refuses", "op-crashes", "line-at-limit", "line-over-limit"],
)
async def test_a_request_gets_its_answer_and_the_connection_lives(
        serve: Serve, line: bytes, want: dict[str, Any], inline: bool) -> None:
    path = await serve(basic_ops(Gates(), inline))
    peer = await Peer.open(path)
    try:
        got = await peer.ask(line)
        if want["ok"]:
            assert got == want
        else:
            assert (got["id"], got["ok"], got["error"]["code"]) == (want["id"], False, want["code"]), got
            assert got["error"]["message"]
        assert await peer.ask(req(99, "ping")) == {"id": 99, "ok": True, "pong": True}
    finally:
        await peer.close()


async def test_an_internal_error_names_the_exception_and_nothing_more(serve: Serve, inline: bool) -> None:
    peer = await Peer.open(await serve(basic_ops(Gates(), inline)))
    try:
        got = await peer.ask(req(1, "recent"))
        assert got["error"] == {"code": "internal", "message": "ZeroDivisionError: boom"}
    finally:
        await peer.close()


async def test_an_over_long_line_split_across_writes_is_one_error_and_the_next_line_works(serve: Serve) -> None:
    path = await serve(basic_ops(Gates()))
    peer = await Peer.open(path)
    try:
        for _ in range(3):  # 1.5 MiB in pieces, then its newline and a good request in one write
            await peer.write(b"y" * (MAX_LINE // 2))
        await peer.write(b"\n" + req(8, "ping"))
        first, second = await peer.read(), await peer.read()
        assert first["error"]["code"] == "line_too_long" and first["id"] is None
        assert second == {"id": 8, "ok": True, "pong": True}
    finally:
        await peer.close()


async def test_blank_lines_are_skipped(serve: Serve) -> None:
    path = await serve(basic_ops(Gates()))
    peer = await Peer.open(path)
    try:
        assert await peer.ask(b"\n  \n\t\n" + req(1, "ping")) == {"id": 1, "ok": True, "pong": True}
    finally:
        await peer.close()


# --- concurrency on one connection ----------------------------------------------------

async def test_replies_come_back_as_they_finish_each_with_its_request_id(serve: Serve, inline: bool) -> None:
    gates = Gates()
    path = await serve(basic_ops(gates, inline))
    peer = await Peer.open(path)
    try:
        await peer.write(req("slow", "send", to="b", body="wait:slow") + req("fast", "send", to="b", body="now")
                         + req(3, "ping"))
        first, second = await peer.read(), await peer.read()
        assert {first["id"], second["id"]} == {"fast", 3}  # the slow one, sent first, has not answered
        gates.gate("wait:slow").set()
        assert await peer.read() == {"id": "slow", "ok": True, "body": "wait:slow"}
    finally:
        await peer.close()


async def test_many_concurrent_requests_get_one_reply_each(serve: Serve, inline: bool) -> None:
    gates = Gates()
    path = await serve(basic_ops(gates, inline))
    peer = await Peer.open(path)
    try:
        n = 40
        await peer.write(b"".join(req(i, "send", to="b", body=f"wait:{i % 4}") for i in range(n)))
        await async_wait_for(lambda: len(gates.started) == n, timeout=TIMEOUT, what="every request started")
        for g in (3, 0, 2, 1):  # open the gates in an order of our own
            gates.gate(f"wait:{g}").set()
        replies = [await peer.read() for _ in range(n)]
        assert sorted(r["id"] for r in replies) == list(range(n))
        assert all(r["body"] == f"wait:{r['id'] % 4}" for r in replies)
        ids = [r["id"] for r in replies]
        assert {i % 4 for i in ids[:n // 4]} == {3}  # the first gate opened answered first
    finally:
        await peer.close()


async def test_a_connection_has_at_most_max_in_flight_requests_served(serve: Serve, inline: bool) -> None:
    gates = Gates()
    path = await serve(basic_ops(gates, inline))
    peer, other = await Peer.open(path), await Peer.open(path)
    try:
        await peer.write(b"".join(req(i, "send", to="b", body=f"wait:{i}") for i in range(MAX_IN_FLIGHT))
                         + req("behind", "ping"))
        await async_wait_for(lambda: len(gates.started) == MAX_IN_FLIGHT, timeout=TIMEOUT, interval=0.002,
                             what="the cap reached")
        # Another connection is served meanwhile: the loop went round, the ping stays unread.
        # (Read, it would have been answered in that round already: its reply would be
        # waiting on the socket, so a short look tells.)
        assert await other.ask(req(1, "ping")) == {"id": 1, "ok": True, "pong": True}
        with pytest.raises(asyncio.TimeoutError):
            await peer.read(timeout=0.05)
        assert len(gates.started) == MAX_IN_FLIGHT
        gates.gate("wait:5").set()  # one finishes: the reader takes the next line
        assert await peer.read() == {"id": 5, "ok": True, "body": "wait:5"}
        assert await peer.read() == {"id": "behind", "ok": True, "pong": True}
    finally:
        await peer.close()
        await other.close()


async def test_a_peer_that_goes_away_has_its_requests_cancelled(serve: Serve, inline: bool) -> None:
    gates = Gates()
    path = await serve(basic_ops(gates, inline))
    peer = await Peer.open(path)
    await peer.write(req(1, "send", to="b", body="wait:a") + req(2, "send", to="b", body="wait:b"))
    await async_wait_for(lambda: len(gates.started) == 2, timeout=TIMEOUT, what="both started")
    await peer.close()
    await async_wait_for(lambda: sorted(gates.cancelled) == ["wait:a", "wait:b"], timeout=TIMEOUT,
                         what="both cancelled")


async def test_serial_ops_run_one_at_a_time_per_connection(serve: Serve, inline: bool) -> None:
    gates = Gates()
    running: list[int] = []
    most = [0]

    async def one_at_a_time(r: Send) -> dict[str, Any]:
        running.append(1)
        most[0] = max(most[0], len(running))
        try:
            return await gates.send(r)
        finally:
            running.pop()

    path = await serve({"send": Op(one_at_a_time, serial=True, inline=inline), "ping": Op(ping, inline=inline)})
    peer = await Peer.open(path)
    try:
        await peer.write(req(1, "send", to="b", body="wait:1") + req(2, "send", to="b", body="now")
                         + req(3, "ping"))
        assert await peer.read() == {"id": 3, "ok": True, "pong": True}  # a non-serial op is not held up
        assert gates.started == ["wait:1"]  # the second serial op waits for the first
        gates.gate("wait:1").set()
        assert [(await peer.read())["id"] for _ in range(2)] == [1, 2]
        assert most[0] == 1
    finally:
        await peer.close()


# --- what a connection may hold -----------------------------------------------------

async def test_connections_past_the_cap_are_closed_and_a_freed_place_is_taken_again(serve: Serve) -> None:
    path = await serve({"ping": Op(ping)}, max_connections=2)
    first, second = await Peer.open(path), await Peer.open(path)
    try:
        for p in (first, second):
            assert (await p.ask(req(1, "ping")))["ok"]
        third = await Peer.open(path)
        assert await third.closed_by_server()
        await third.close()
        assert (await first.ask(req(2, "ping")))["ok"]  # those inside are unaffected
        await second.close()

        async def a_new_one_is_served() -> bool:
            p = await Peer.open(path)
            try:
                p.writer.write(req(3, "ping"))
                line = await asyncio.wait_for(p.reader.readline(), TIMEOUT)
                return bool(line) and json.loads(line)["ok"]
            finally:
                await p.close()

        await async_wait_for(a_new_one_is_served, timeout=TIMEOUT, what="a connection in the freed place")
    finally:
        await first.close()
        await second.close()


async def test_a_peer_that_does_not_read_is_cut_off_and_every_result_is_got_or_put_back(
        serve: Serve, inline: bool) -> None:
    """Each result reaches the peer whole or goes to ``unsent``: never both, never neither."""
    big = "m" * (32 << 10)  # small enough that some replies fit whole in the kernel buffers
    unsent: list[Any] = []
    ran: list[int] = []

    async def recv(r: Recv) -> dict[str, Any]:
        ran.append(len(ran))
        return {"messages": big}

    path = await serve({"recv": Op(recv, unsent=lambda fields: unsent.append(fields["id"]), inline=inline)})
    loop = asyncio.get_running_loop()
    # A bare socket: nothing reads on the peer's side until the test does.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        await loop.sock_connect(s, str(path))
        n = MAX_UNFLUSHED // len(big) + 64  # past the cap, whatever the kernel buffers took
        await loop.sock_sendall(s, b"".join(req(i, "recv", wait_seconds=0) for i in range(n)))
        await async_wait_for(lambda: unsent, timeout=TIMEOUT, what="the peer cut off")
        data = bytearray()
        while chunk := await asyncio.wait_for(loop.sock_recv(s, 1 << 20), TIMEOUT):
            data += chunk
    *whole, _cut = bytes(data).split(b"\n")  # what follows the last newline is a reply cut mid-way
    got = []
    for line in whole:
        reply = json.loads(line)
        assert reply["messages"] == big
        got.append(reply["id"])
    assert got, "nothing reached the peer"
    assert not set(got) & set(unsent)
    assert sorted(got + unsent) == ran  # each request that ran: those after the cut never start
    # As Tasks, the requests already read are all started before the cut is seen.
    assert len(ran) == n or inline


# --- inline ops: driven by the connection, no Task --------------------------------------

async def test_an_inline_op_runs_without_a_task_and_any_other_op_as_its_own(serve: Serve) -> None:
    async def where(_: Any) -> dict[str, Any]:
        task = asyncio.current_task() is not None
        await asyncio.sleep(0)  # a bare yield, then a timer's future: both resumed by the connection
        await asyncio.sleep(0.001)
        return {"task": task}

    path = await serve({"send": Op(where, inline=True), "ping": Op(where)})
    peer = await Peer.open(path)
    try:
        assert await peer.ask(req(1, "send", to="b", body="x")) == {"id": 1, "ok": True, "task": False}
        assert await peer.ask(req(2, "ping")) == {"id": 2, "ok": True, "task": True}
    finally:
        await peer.close()


async def test_an_inline_op_that_fails_after_waiting_answers_internal(serve: Serve) -> None:
    async def late_crash(_: Any) -> dict[str, Any]:
        await asyncio.sleep(0.001)
        raise ZeroDivisionError("late")

    peer = await Peer.open(await serve({"ping": Op(late_crash, inline=True)}))
    try:
        got = await peer.ask(req(1, "ping"))
        assert got["error"] == {"code": "internal", "message": "ZeroDivisionError: late"}
        assert (await peer.ask(req(2, "ping")))["id"] == 2  # the connection lives
    finally:
        await peer.close()


async def test_each_request_logs_with_the_connections_bindings_and_its_own(serve: Serve, inline: bool) -> None:
    """structlog's contextvars: the server's context on every line, ``request`` and
    ``op`` for that request alone, before and after it waits."""
    gates = Gates()
    seen: list[tuple[str, dict[str, Any]]] = []

    async def send(r: Send) -> dict[str, Any]:
        seen.append(("start", structlog.contextvars.get_contextvars()))
        if r.body.startswith("wait:"):
            await gates.gate(r.body).wait()
        seen.append(("end", structlog.contextvars.get_contextvars()))
        return {}

    path = await serve({"send": Op(send, inline=inline), "ping": Op(ping, inline=inline)})
    peer = await Peer.open(path)
    try:
        await peer.write(req("a", "send", to="b", body="wait:a") + req("b", "send", to="b", body="now"))
        assert (await peer.read())["id"] == "b"
        gates.gate("wait:a").set()
        assert (await peer.read())["id"] == "a"
        await peer.ask(req("c", "send", to="b", body="now"))
    finally:
        await peer.close()
    want = {rid: {"socket": "test", "request": rid, "op": "send"} for rid in "abc"}
    assert sorted((when, ctx["request"]) for when, ctx in seen) == sorted(
        (when, rid) for rid in "abc" for when in ("start", "end"))
    assert all(ctx == want[ctx["request"]] for _, ctx in seen), seen
    assert structlog.contextvars.get_contextvars().get("request") is None  # nothing leaked to the test's own


async def test_a_burst_past_one_turns_share_is_answered_whole_and_in_order(serve: Serve, inline: bool) -> None:
    """Answers that need no wait come ``MAX_IN_FLIGHT`` per loop turn: a pipelined
    burst is answered whole while another connection is served meanwhile."""
    path = await serve(basic_ops(Gates(), inline))
    peer, other = await Peer.open(path), await Peer.open(path)
    try:
        n = 5000
        await peer.write(b"".join(req(i, "ping") for i in range(n)))
        assert await other.ask(req("other", "ping")) == {"id": "other", "ok": True, "pong": True}
        ids = [(await peer.read())["id"] for _ in range(n)]
        assert sorted(ids) == list(range(n))
        assert ids == list(range(n)) or not inline  # inline answers go out in the order read
    finally:
        await peer.close()
        await other.close()


async def test_a_peer_at_the_cap_that_hangs_up_has_its_requests_cancelled(serve: Serve, inline: bool) -> None:
    gates = Gates()
    path = await serve(basic_ops(gates, inline))
    peer = await Peer.open(path)
    await peer.write(b"".join(req(i, "send", to="b", body=f"wait:{i}") for i in range(MAX_IN_FLIGHT))
                     + req("behind", "send", to="b", body="never"))
    await async_wait_for(lambda: len(gates.started) == MAX_IN_FLIGHT, timeout=TIMEOUT, what="the cap reached")
    await peer.close()
    await async_wait_for(lambda: len(gates.cancelled) == MAX_IN_FLIGHT, timeout=TIMEOUT, what="all cancelled")
    assert "never" not in gates.started


async def test_stop_closes_the_listener_and_the_connections_go_on(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    server = JsonLineServer({"ping": Op(ping)}, {"socket": "test"})
    server.add_socket(bind_socket(path))
    peer = await Peer.open(path)
    try:
        assert (await peer.ask(req(1, "ping")))["ok"]
        server.stop()
        with pytest.raises(OSError):
            await Peer.open(path)
        assert (await peer.ask(req(2, "ping")))["ok"]
    finally:
        await peer.close()


async def test_peers_gone_before_their_turn_never_fill_the_connection_cap(serve: Serve) -> None:
    """Connection churn: a peer that connected, wrote and left before it was
    accepted is closed at accept and not counted, so it takes no place."""
    path = await serve({"ping": Op(ping, inline=True)}, max_connections=2)
    with structlog.testing.capture_logs() as logged:
        live = await Peer.open(path)
        try:
            assert (await live.ask(req(1, "ping")))["ok"]
            for i in range(40):  # all in the backlog before the loop goes round again
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(str(path))
                    if i % 3:
                        s.sendall(req(i, "ping") if i % 3 == 1 else b'{"id": 1, "op": "pi')
            second = await Peer.open(path)
            try:
                assert (await second.ask(req(2, "ping")))["ok"]
            finally:
                await second.close()
        finally:
            await live.close()
    assert not [e for e in logged if e["event"] == "socket.too_many_connections"]
