"""End to end through real processes: a daemon subprocess, sandboxed harnesses,
`hive mcp` driven by the `mcp` package's own client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import pytest
from mcp_support import mcp_session, tool_json
from support import Hive, async_wait_for

from hyperhive.client import AsyncClient

pytestmark = pytest.mark.e2e  # every test here starts a daemon


def parked_tool(hive: Hive, name: str) -> int:
    return int(hive.ls()[name]["parked"]["tool"])


async def test_mcp_send_reaches_b_and_a_receives_the_reply(hive: Hive) -> None:
    hive.spawn("a")
    hive.spawn("b")
    async with mcp_session(hive.socket("a")) as s:
        recv = asyncio.create_task(s.call_tool("recv", {"wait_seconds": 30}))
        await async_wait_for(lambda: parked_tool(hive, "a") == 1, what="a's tool recv parked")
        sent = tool_json(await s.call_tool("send", {"to": "b", "body": "ping from a"}))
        assert sent["sent"] is True and sent["to"] == "b"
        got = tool_json(await asyncio.wait_for(recv, 20))
    [reply] = got["messages"]
    assert reply["from"] == "b" and reply["to"] == "a"
    assert "ping from a" in reply["body"]


async def test_recv_schema_advertises_wait_seconds(hive: Hive) -> None:
    async with mcp_session(hive.socket("m1nd")) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
    assert {"send", "recv", "recent"} <= set(tools)
    props = tools["recv"].input_schema["properties"]
    assert "wait_seconds" in props
    assert "wait_seconds" not in tools["recv"].input_schema.get("required", [])


async def test_recv_empty_after_its_wait_and_wakes_fast_on_send(hive: Hive) -> None:
    hive.spawn("a")
    hive.admin("stop", name="a")  # the test is a's only consumer
    a = AsyncClient(hive.socket("a"))
    op = AsyncClient(hive.socket("m1nd"))
    try:
        t0 = time.monotonic()
        resp = await a.request("recv", wait_seconds=0.5)
        waited = time.monotonic() - t0
        assert resp["messages"] == []
        assert 0.45 <= waited < 5

        recv = asyncio.create_task(a.request("recv", wait_seconds=20))
        await async_wait_for(lambda: parked_tool(hive, "a") == 1, what="parked recv")
        sent_at = time.monotonic()
        await op.request("send", to="a", body="wake up")
        got = await recv
        woke = time.monotonic() - sent_at
        assert [m["body"] for m in got["messages"]] == ["wake up"]
        assert woke < 0.05, f"recv returned {woke * 1000:.1f} ms after the send"
    finally:
        await a.close()
        await op.close()


async def test_recent_lists_delivered_and_undelivered(hive: Hive) -> None:
    hive.spawn("a")
    hive.admin("stop", name="a")
    for i in range(3):
        hive.admin("send", to="a", body=f"m{i}")
    a = AsyncClient(hive.socket("a"))
    try:
        first = await a.request("recv", wait_seconds=0)
        assert [m["body"] for m in first["messages"]] == ["m0", "m1", "m2"]
        hive.admin("send", to="a", body="m3")
        rows = (await a.request("recent", limit=3))["messages"]
    finally:
        await a.close()
    assert [m["body"] for m in rows] == ["m1", "m2", "m3"]
    assert rows[0]["delivered_at"] is not None and rows[-1]["delivered_at"] is None
    assert set(rows[0]) == {"id", "from", "to", "body", "sent_at", "delivered_at"}


def test_cli_ls_shows_the_manager_running(hive: Hive) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), "ls"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    header, first = out.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "ROLE", "STATE"]
    assert first.split()[:3] == ["m1nd", "manager", "running"]


def test_operator_send_and_inbox_through_the_cli(hive: Hive) -> None:
    hive.spawn("a")

    def hive_cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), *args],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout

    assert hive_cli("send", "a", "hello", "there").startswith("sent #")

    def inbox() -> list[dict[str, Any]]:
        return json.loads(hive_cli("inbox", "--json"))["messages"]

    from support import wait_for
    rows = wait_for(inbox, what="a's builtin reply in the operator inbox")
    assert rows[-1]["from"] == "a"
    assert 'you said: "hello there"' in rows[-1]["body"]


def test_builtin_turn_events_have_the_claude_drivers_shapes(hive: Hive) -> None:
    """The agent's page renders tool_use {name, input} and tool_result {content}:
    the builtin driver records its tool calls the way the claude driver does."""
    from support import wait_for

    from hyperhive.store.events_db import EventLog

    hive.spawn("a")
    hive.admin("send", to="a", body="ping")

    def rows() -> list[Any]:
        log = EventLog.in_state_dir(hive.paths.state("a"))  # type: ignore[arg-type]
        try:
            return log.tail(100)
        finally:
            log.close()

    wait_for(lambda: any(r.kind == "tool_result" for r in rows()), what="a's tool result")
    use = next(r.data for r in rows() if r.kind == "tool_use")
    result = next(r.data for r in rows() if r.kind == "tool_result")
    assert use["name"] == "mcp__hyperhive__send" and use["input"]["to"] == "operator"
    assert 'you said: "ping"' in use["input"]["body"]
    assert result["tool_use_id"] == use["id"] and result["is_error"] is False
    assert json.loads(result["content"])["sent"] is True
