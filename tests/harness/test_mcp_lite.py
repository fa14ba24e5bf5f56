"""The builtin driver's MCP client without the SDK (issue 17): the real `hive
mcp` pipe between it and a scripted mcp.sock, which asks it a ping, answers a
tool call, a JSON-RPC error and a tool error, then goes away."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from hyperhive.errors import Unavailable
from hyperhive.harness.mcp_lite import PROTOCOL_VERSION, LiteSession


def line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode() + b"\n"


async def test_initialize_tools_errors_and_the_end(tmp_path: Path) -> None:
    heard: list[dict[str, Any]] = []
    gone = asyncio.Event()

    async def daemon(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while raw := await r.readline():
            msg = json.loads(raw)
            heard.append(msg)
            if msg.get("method") == "initialize":
                w.write(line({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"}))  # the server asks first
                w.write(line({"jsonrpc": "2.0", "id": msg["id"], "result": {"protocolVersion": PROTOCOL_VERSION}}))
            elif msg.get("method") == "tools/call":
                name = msg["params"]["name"]
                if name == "send":
                    w.write(line({"jsonrpc": "2.0", "id": msg["id"], "result": {
                        "content": [{"type": "text", "text": '{"sent": true}'}], "isError": False}}))
                elif name == "bad":
                    w.write(line({"jsonrpc": "2.0", "id": msg["id"], "result": {
                        "content": [{"type": "text", "text": "bad_name: no"}], "isError": True}}))
                elif name == "rpc":
                    w.write(line({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32602, "message": "x"}}))
                else:  # the daemon goes away mid-call
                    w.close()
                    gone.set()
                    return

    (tmp_path / "run").mkdir()
    server = await asyncio.start_unix_server(daemon, path=str(tmp_path / "run" / "mcp.sock"))
    s = LiteSession(str(tmp_path / "run" / "hive.sock"))
    try:
        await asyncio.wait_for(s.open(), 30)
        ok = await s.call_tool("send", {"to": "b", "body": "hi"})
        assert ([c.text for c in ok.content], ok.is_error) == (['{"sent": true}'], False)
        bad = await s.call_tool("bad", {})
        assert bad.is_error and bad.content[0].text == "bad_name: no"
        with pytest.raises(Unavailable, match="MCP error -32602"):
            await s.call_tool("rpc", {})
        methods = [m.get("method") for m in heard]
        assert methods[:2] == [None, "initialize"] and "hyperhive" in heard[0]  # the pipe's options line first
        assert methods.index("notifications/initialized") > 1
        assert {"jsonrpc": "2.0", "id": "srv-1", "result": {}} in heard  # the ping was answered
        calls = [m for m in heard if m.get("method") == "tools/call"]
        assert all(m["params"]["_meta"]["hyperhive/idempotency_key"].startswith("mcp-") for m in calls)
        server.close()  # no daemon comes back
        lost = asyncio.ensure_future(s.call_tool("vanish", {}))
        await asyncio.wait_for(gone.wait(), 30)
    finally:
        await asyncio.wait_for(s.close(), 4)  # the pipe, waiting for a daemon, ends at its stdin's EOF
    with pytest.raises(Unavailable):  # never a success that did not happen
        await lost
