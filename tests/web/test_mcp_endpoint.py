"""An agent's MCP endpoint (run/mcp.sock, issue 17) in-process: the real SDK
server on a real unix socket, spoken to line by line as a hostile peer would.
The ops are plain functions that record what they were asked (the agent's
real ops are tested through the daemon in tests/security/test_review17_mcp.py)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hyperhive.web.rpc.jsonlines import Op, bind_socket
from hyperhive.web.rpc.mcp_sockets import MAX_CONNECTIONS, MAX_IN_FLIGHT, MAX_LINE, McpEndpoint, ServersOnce, options_of
from hyperhive.wire import Recv, Send

INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
SERVERS = ServersOnce(30.0)  # built once for the module, as once per daemon


class Ops:
    """What the endpoint asked of the agent's ops."""

    def __init__(self) -> None:
        self.sends: list[Send] = []
        self.recvs: list[Recv] = []
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()
        self.hold = False
        self.cancelled = 0
        self.put_back: list[dict[str, Any]] = []

    async def send(self, req: Send) -> dict[str, Any]:
        self.sends.append(req)
        return {"message_id": len(self.sends)}

    async def recv(self, req: Recv) -> dict[str, Any]:
        self.recvs.append(req)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if self.hold:
                await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return {"messages": [{"id": len(self.recvs), "from": "b", "to": "a", "body": "hi"}]}

    def table(self) -> dict[str, Op]:
        return {"send": Op(self.send), "recv": Op(self.recv, unsent=self.put_back.append)}


class Peer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def say(self, *msgs: dict[str, Any] | bytes) -> None:
        for m in msgs:
            self.writer.write(m if isinstance(m, bytes) else json.dumps(m).encode() + b"\n")

    async def hear(self, timeout: float = 10) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        assert line, "the endpoint closed the connection"
        out: dict[str, Any] = json.loads(line)
        return out

    async def closed(self, timeout: float = 10) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(), timeout) == b""
        except ConnectionResetError:  # closed with our lines unread
            return True

    async def start(self, header: bytes | None = None) -> None:
        if header is not None:
            self.say(header)
        self.say(INIT)
        assert (await self.hear())["id"] == 0
        self.say(INITIALIZED)

    async def call(self, req_id: int, tool: str, args: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        params: dict[str, Any] = {"name": tool, "arguments": args}
        if meta is not None:
            params["_meta"] = meta
        self.say({"jsonrpc": "2.0", "id": req_id, "method": "tools/call", "params": params})


@pytest.fixture
async def endpoint(tmp_path: Path) -> AsyncIterator[tuple[McpEndpoint, Ops, Path]]:
    ops = Ops()
    path = tmp_path / "mcp.sock"
    ep = McpEndpoint("alice", ops.table(), False, SERVERS)  # type: ignore[arg-type]
    await ep.serve(bind_socket(path))
    try:
        yield ep, ops, path
    finally:
        ep.stop()


async def peer(path: Path) -> Peer:
    return Peer(*await asyncio.open_unix_connection(str(path), limit=MAX_LINE * 2))


def text(resp: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for c in resp["result"]["content"])


async def test_a_send_runs_as_the_agent_with_the_pipes_key_or_one_made_here(endpoint: Any) -> None:
    _, ops, path = endpoint
    p = await peer(path)
    await p.start()
    await p.call(1, "send", {"to": "bob", "body": "one"}, meta={"hyperhive/idempotency_key": "mcp-from-the-pipe"})
    assert json.loads(text(await p.hear())) == {"sent": True, "message_id": 1, "to": "bob"}
    # A "from" is no parameter: refused, as hive.sock refuses it (the socket is the sender), nothing sent.
    await p.call(2, "send", {"to": "bob", "body": "two", "from": "m1nd"})
    refused = await p.hear()
    assert refused["result"]["isError"] is True and "'from'" in text(refused) and len(ops.sends) == 1
    await p.call(3, "send", {"to": "bob", "body": "two"})
    assert json.loads(text(await p.hear()))["message_id"] == 2
    assert ops.sends[0] == Send(to="bob", body="one", idempotency_key="mcp-from-the-pipe")
    key = ops.sends[1].idempotency_key
    assert ops.sends[1].body == "two" and key is not None and key.startswith("mcp-") and key != "mcp-from-the-pipe"


async def test_tools_before_initialize_or_unknown_run_nothing(endpoint: Any) -> None:
    _, ops, path = endpoint
    p = await peer(path)
    await p.call(1, "send", {"to": "bob", "body": "early"})
    assert "error" in await p.hear()
    await p.start()
    await p.call(2, "request_spawn", {"name": "evil"})  # a manager's tool, on an agent's socket
    assert (await p.hear())["result"]["isError"] is True
    await p.call(3, "send", {"to": "bob\ud800", "body": "x"})  # a lone surrogate (escaped): a parse error
    resp = await p.hear()
    assert (resp["id"], resp["error"]["code"]) == (3, -32700) and ops.sends == []
    p.say(b'{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "send", '
          b'"arguments": {"to": "bob", "body": "\\ud800"}}}\n', b"not json\n", b"[1, 2]\n")
    await p.call(5, "send", {"to": "bob", "body": "after the garbage"})
    while (resp := await p.hear()).get("id") != 5:
        assert "error" in resp  # each bad line has its error answer; the connection goes on
    assert [s.body for s in ops.sends] == ["after the garbage"]


async def test_a_line_past_the_limit_ends_only_its_connection(endpoint: Any) -> None:
    _, ops, path = endpoint
    p = await peer(path)
    await p.start()
    p.say(b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "pad": "' + b"x" * MAX_LINE + b'"}\n')
    assert "longer than" in (await p.hear())["error"]["message"]
    assert await p.closed()
    q = await peer(path)
    await q.start()
    await q.call(1, "send", {"to": "bob", "body": "still served"})
    assert json.loads(text(await q.hear()))["sent"] is True


async def test_connections_past_the_cap_are_closed_at_once(endpoint: Any) -> None:
    _, _, path = endpoint
    peers = [await peer(path) for _ in range(MAX_CONNECTIONS)]
    for p in peers:
        await p.start()
    extra = await peer(path)
    assert await extra.closed()
    peers[0].writer.close()
    for _ in range(100):  # the slot comes back once the endpoint saw the close
        late = await peer(path)
        late.say(INIT)
        try:
            line = await asyncio.wait_for(late.reader.readline(), 10)
        except ConnectionResetError:
            line = b""
        if line:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("no connection was taken after one closed")


async def test_requests_in_flight_are_bounded_and_all_answered(endpoint: Any) -> None:
    _, ops, path = endpoint
    ops.hold = True
    p = await peer(path)
    await p.start()
    n = MAX_IN_FLIGHT + 10
    for i in range(1, n + 1):
        await p.call(i, "recv", {"wait_seconds": 5})
    await p.writer.drain()
    for _ in range(1000):
        if ops.running >= MAX_IN_FLIGHT:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # were the reader not stopped, the rest would be running by now
    assert ops.running == MAX_IN_FLIGHT and len(ops.recvs) == MAX_IN_FLIGHT
    ops.release.set()
    ids = {(await p.hear())["id"] for _ in range(n)}
    assert ids == set(range(1, n + 1)) and ops.most == MAX_IN_FLIGHT and ops.put_back == []


async def test_a_peer_that_goes_cancels_its_parked_recv_and_loses_nothing(endpoint: Any) -> None:
    _, ops, path = endpoint
    ops.hold = True
    p = await peer(path)
    await p.start()
    await p.call(1, "recv", {"wait_seconds": 30})
    for _ in range(1000):
        if ops.running:
            break
        await asyncio.sleep(0.005)
    p.writer.close()
    for _ in range(1000):
        if ops.cancelled:
            break
        await asyncio.sleep(0.005)
    assert ops.cancelled == 1 and ops.put_back == []


async def test_a_recv_whose_reply_cannot_be_written_is_put_back(endpoint: Any) -> None:
    _, ops, path = endpoint
    p = await peer(path)
    await p.start()
    await p.writer.drain()
    sock = p.writer.get_extra_info("socket")
    sock.shutdown(socket.SHUT_RD)  # it sends, and never reads again: the reply cannot be written
    await p.call(1, "recv", {"wait_seconds": 0})
    await p.writer.drain()
    for _ in range(1000):
        if ops.put_back:
            break
        await asyncio.sleep(0.005)
    assert [m["body"] for m in ops.put_back[0]["messages"]] == ["hi"]


async def test_the_permission_tool_only_for_a_pipe_that_asks_for_it(endpoint: Any) -> None:
    _, _, path = endpoint
    for header, want in ((None, False), (b'{"hyperhive": {"permission_tool": true}}\n', True),
                         (b'{"hyperhive": {"permission_tool": "yes"}}\n', False)):
        p = await peer(path)
        await p.start(header)
        p.say({"jsonrpc": "2.0", "id": 9, "method": "tools/list"})
        names = {t["name"] for t in (await p.hear())["result"]["tools"]}
        assert ("permission" in names) is want and "request_spawn" not in names
        p.writer.close()


def test_options_are_only_a_hyperhive_object() -> None:
    assert options_of(b'{"hyperhive": {"permission_tool": true}}\n') == {"permission_tool": True}
    for line in (b'{"jsonrpc": "2.0", "id": 1, "method": "initialize"}', b'{"hyperhive": 1}', b"nope",
                 b'{"hyperhive": {}, "jsonrpc": "2.0"}'):
        assert options_of(line) is None
