"""Every MCP tool refuses an argument its input schema does not declare, as
hive.sock refuses a field its op does not take: a tool error naming it, nothing
done (hyperhive/web/rpc/mcp_strict.py). Above all a ``send`` with a ``from``:
identity is the socket, and an agent that believes it spoofed a sender must be
told it did not. Driven through `hive mcp` by the mcp package's own client
against a real daemon; what was (not) done is read from its database, its
admin socket and its containers."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_support import tool_json, tool_text
from support import Hive

from hyperhive.client import AsyncClient
from hyperhive.errors import BadRequest
from hyperhive.web.rpc.mcp_strict import refusal_text, unknown_arguments

CALL_LIMIT = 30.0  # a call the old code would park on (permission) fails the test, never hangs it


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hive]:
    # The tools are served in the daemon: no sandbox needed (tests/security/test_review17_mcp.py calls from one).
    h = Hive(tmp_path_factory.mktemp("unknown-args") / "state",
             extra_args=["--sandbox", "off", "--permission-ttl-seconds", "5"]).start()
    try:
        for name in ("a", "b"):
            h.spawn(name)
        yield h
    finally:
        h.stop()


@asynccontextmanager
async def session(socket_path: Path, permission_tool: bool = False) -> AsyncIterator[ClientSession]:
    env = {**os.environ, "HYPERHIVE_MCP_PERMISSION_TOOL": "1" if permission_tool else "0"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "hyperhive", "mcp", "--socket",
                                                                 str(socket_path)], env=env)
    async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        yield s


async def call(s: ClientSession, tool: str, args: dict[str, Any]) -> Any:
    return await asyncio.wait_for(s.call_tool(tool, args), CALL_LIMIT)


def rows(hive: Hive, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(hive.paths.db) as conn:
        got = conn.execute(sql, params).fetchall()
    conn.close()
    return got


def sent_with(hive: Hive, body: str) -> list[tuple[Any, ...]]:
    return rows(hive, "SELECT sender, recipient FROM messages WHERE body = ?", body)


def refused(result: Any, tool: str, *names: str) -> str:
    text = tool_text(result)
    assert result.is_error, text
    assert f"tool {tool!r} does not take argument(s)" in text, text
    for name in names:
        assert repr(name) in text, text
    return text


def counts(hive: Hive) -> dict[str, int]:
    """What a refused call must not have added to: questions (permission ones too) and approvals."""
    return {t: rows(hive, f"SELECT count(*) FROM {t}")[0][0] for t in ("operator_questions", "approvals")}


# --- the spoofed sender --------------------------------------------------------------------------

@pytest.mark.e2e
async def test_a_send_with_from_is_refused_naming_it_and_nothing_is_sent(hive: Hive) -> None:
    body = f"spoof {uuid.uuid4().hex}"
    async with session(hive.socket("a")) as s:
        out = await call(s, "send", {"to": "b", "body": body, "from": "m1nd"})
        text = refused(out, "send", "from")
        assert "it takes: to, body" in text and "nothing was done" in text
        # The context parameter's name is no argument either; several unknown ones are all named.
        refused(await call(s, "send", {"to": "b", "body": body, "ctx": {}, "sender": "m1nd"}), "send", "ctx", "sender")
        assert sent_with(hive, body) == []  # not stored: not in b's inbox, delivered or not
        # The same call well formed is sent, as a, the connection's agent.
        ok = tool_json(await call(s, "send", {"to": "b", "body": body}))
    assert ok["sent"] is True and ok["to"] == "b"
    assert sent_with(hive, body) == [("a", "b")]


@pytest.mark.e2e
async def test_hive_sock_refuses_the_same_send_alike(hive: Hive) -> None:
    """The rule the MCP tools now follow: the agent's JSON-lines socket's."""
    body = f"spoof {uuid.uuid4().hex}"
    a = AsyncClient(hive.socket("a"))
    try:
        with pytest.raises(BadRequest, match="does not take field.*from"):
            await a.request("send", to="b", body=body, **{"from": "m1nd"})
    finally:
        await a.close()
    assert sent_with(hive, body) == []


# --- every tool ----------------------------------------------------------------------------------

TOKEN = uuid.uuid4().hex[:12]
# A well-formed call of every tool: with one argument more, each must be refused.
AGENT_CALLS: dict[str, dict[str, Any]] = {
    "send": {"to": "b", "body": f"every {TOKEN}"},
    "recv": {"wait_seconds": 0},
    "recent": {"limit": 1},
    "permission": {"tool_name": "Bash", "input": {"command": f"echo {TOKEN}"}, "tool_use_id": "toolu_1"},
}
MANAGER_CALLS: dict[str, dict[str, Any]] = {
    "send": AGENT_CALLS["send"], "recv": AGENT_CALLS["recv"], "recent": AGENT_CALLS["recent"],
    "ask_operator": {"question": f"every {TOKEN}?"},
    "request_spawn": {"name": "fresh-x"},
    "propose_config": {"agent": "a", "message": f"every {TOKEN}", "prompt": "new prompt"},
    "usage": {"since": "24h"},
    "request_apply_commit": {"agent": "a", "commit": "0" * 40},
    "start": {"name": "b"},
    "restart": {"name": "b"},
    "kill": {"name": "b"},
}


async def every_tool_refused(s: ClientSession, calls: dict[str, dict[str, Any]]) -> None:
    tools = {t.name: t for t in (await s.list_tools()).tools}
    assert set(tools) == set(calls)  # a new tool must be added here
    for name, tool in tools.items():
        assert set(calls[name]) <= set(tool.input_schema["properties"])  # the call is well formed but for the extra
        refused(await call(s, name, {**calls[name], "from": "m1nd"}), name, "from")
        assert tool.input_schema.get("additionalProperties") is False, (name, tool.input_schema)  # and says so


@pytest.mark.e2e
async def test_every_tool_refuses_an_unknown_argument_and_does_nothing(hive: Hive) -> None:
    before = counts(hive)
    b_before = hive.ls()["b"]
    async with session(hive.socket("a"), permission_tool=True) as s:
        await every_tool_refused(s, AGENT_CALLS)
    async with session(hive.socket("m1nd")) as s:
        await every_tool_refused(s, MANAGER_CALLS)
    assert counts(hive) == before  # no question, no permission question, no approval (spawn, config, commit)
    assert sent_with(hive, f"every {TOKEN}") == []
    b_after = hive.ls()["b"]
    same = ("state", "pid", "started_at", "restarts")
    assert {k: b_after[k] for k in same} == {k: b_before[k] for k in same}  # neither killed nor restarted
    assert b_after["state"] == "running"


# --- what still works ----------------------------------------------------------------------------

@pytest.mark.e2e
async def test_well_formed_calls_still_work(hive: Hive) -> None:
    async with session(hive.socket("a")) as s:
        assert tool_json(await call(s, "recent", {}))["truncated"] is False  # every argument left to its default
        assert "messages" in tool_json(await call(s, "recv", {"wait_seconds": 0}))
        assert tool_json(await call(s, "recent", {"limit": 2}))["truncated"] is False
    async with session(hive.socket("m1nd")) as s:
        assert tool_json(await call(s, "usage", {"since": "all"}))["since"] == "all"
        asked = tool_json(await call(s, "ask_operator", {"question": f"still {TOKEN}?", "options": ["y", "n"]}))
    assert asked["status"] == "queued"
    assert rows(hive, "SELECT asker FROM operator_questions WHERE id = ?", asked["question_id"]) == [("m1nd",)]
    hive.admin("cancel_question", question_id=asked["question_id"])


@pytest.mark.e2e
async def test_a_bad_typed_known_argument_keeps_its_own_error(hive: Hive) -> None:
    async with session(hive.socket("a")) as s:
        negative = await call(s, "recv", {"wait_seconds": -1})
        not_a_string = await call(s, "send", {"to": 5, "body": "x"})
        missing = await call(s, "send", {"to": "b"})
        nobody = await call(s, "send", {"to": "nobody-here", "body": "x"})
    for result, what in ((negative, "wait_seconds"), (not_a_string, "to"), (missing, "body")):
        text = tool_text(result)
        assert result.is_error and "validation error" in text and what in text, text
        assert "does not take" not in text
    text = tool_text(nobody)
    assert nobody.is_error and "Error executing tool send:" in text and "does not take" not in text, text


# --- the refusal's text (pure) -------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"to": {}, "body": {}}, "required": ["to", "body"]}


def test_unknown_arguments_are_those_the_schema_does_not_declare() -> None:
    assert unknown_arguments(SCHEMA, {"to": 1, "body": 2}) == []
    assert unknown_arguments(SCHEMA, {"to": 1, "from": 2, "as": 3}) == ["as", "from"]
    assert unknown_arguments({"type": "object"}, {"x": 1}) == ["x"]  # no properties: takes nothing


def test_the_refusal_names_what_it_can_and_stays_short() -> None:
    assert refusal_text("send", ["from"], SCHEMA) == (
        "Error executing tool send: bad_request: tool 'send' does not take argument(s) 'from' "
        "(it takes: to, body); nothing was done")
    many = [f"{i:04d}" + "x" * 10_000 for i in range(1000)]  # a hostile agent's names: quoted, cut, counted
    text = refusal_text("send", many, SCHEMA)
    assert len(text) < 1200 and "and 990 more" in text and "'0000" in text
    assert "takes: none" in refusal_text("ping", ["x"], {"type": "object", "properties": {}})
