"""Issue 16, acceptance 2: a send retried with the same idempotency key, also
across a daemon restart, is stored once and gets the same message_id; `hive
send` and `hive mcp` re-issue a send with their key when the connection is
lost after the daemon committed it (a relay in front of the real socket drops
the first send's reply and closes; `hive mcp`'s is mcp.sock, and its key is in
the tool call's ``_meta``)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp_support import mcp_session, tool_json
from support import Hive

from hyperhive.client import AsyncClient
from hyperhive.errors import BadRequest
from hyperhive.names import OPERATOR

pytestmark = pytest.mark.e2e  # every test here starts a daemon


def rows_with_key(hive: Hive, key: str) -> list[tuple[int, str, str, str]]:
    with sqlite3.connect(hive.paths.db) as conn:
        out = conn.execute("SELECT id, sender, recipient, body FROM messages WHERE idempotency_key = ? ORDER BY id",
                           (key,)).fetchall()
    conn.close()
    return out


class DropFirstSendReply:
    """A unix-socket relay to ``target``: every line passes both ways, except
    the daemon's reply to the first ``send``, which is swallowed, and that
    connection closed: the send was committed, its caller never heard.
    ``mcp``: the lines are MCP's (mcp.sock), a send is a ``tools/call`` of it."""

    def __init__(self, target: Path, listen: Path, mcp: bool = False) -> None:
        self.target, self.listen, self.mcp = target, listen, mcp
        self.sends: list[dict[str, Any]] = []  # every send request that went through
        self.keys: list[str] = []  # their idempotency keys
        self.dropped: dict[str, Any] | None = None  # the reply that never arrived
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> DropFirstSendReply:
        self.listen.parent.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_unix_server(self._relay, path=str(self.listen), limit=1 << 22)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _relay(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_unix_connection(str(self.target), limit=1 << 22)
        send_ids: set[object] = set()

        async def up() -> None:
            while line := await r.readline():
                req = json.loads(line)
                params = req.get("params") or {}
                if self.mcp and req.get("method") == "tools/call" and params.get("name") == "send":
                    self.sends.append(req)
                    self.keys.append(params["_meta"]["hyperhive/idempotency_key"])
                    send_ids.add(req.get("id"))
                elif not self.mcp and req.get("op") == "send":
                    self.sends.append(req)
                    self.keys.append(req["idempotency_key"])
                    send_ids.add(req.get("id"))
                uw.write(line)
                await uw.drain()

        async def down() -> None:
            while line := await ur.readline():
                resp = json.loads(line)
                if self.dropped is None and resp.get("id") in send_ids:
                    self.dropped = resp
                    return
                w.write(line)
                await w.drain()

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (w, uw):
            writer.close()


async def test_a_retry_is_one_row_also_across_a_daemon_restart(hive: Hive) -> None:
    admin = AsyncClient(hive.paths.admin_socket)
    agent = AsyncClient(hive.socket("m1nd"))
    try:
        # The same key from two senders (the operator, m1nd): two messages.
        op_first = await admin.request("send", to="m1nd", body="from the operator", idempotency_key="k-restart")
        ag_first = await agent.request("send", to=OPERATOR, body="from m1nd", idempotency_key="k-restart")
        assert "duplicate" not in op_first and "duplicate" not in ag_first
        assert op_first["message_id"] != ag_first["message_id"]
        # A retry after the first was committed: the same id, nothing stored.
        again = await agent.request("send", to=OPERATOR, body="from m1nd", idempotency_key="k-restart")
        assert (again["message_id"], again["duplicate"]) == (ag_first["message_id"], True)
    finally:
        await admin.close()
        await agent.close()

    hive.stop()
    hive.start()
    admin = AsyncClient(hive.paths.admin_socket)
    agent = AsyncClient(hive.socket("m1nd"))  # waits for the socket to be bound again
    try:
        op_again = await admin.request("send", to="m1nd", body="from the operator", idempotency_key="k-restart")
        ag_again = await agent.request("send", to=OPERATOR, body="changed: still that send",
                                       idempotency_key="k-restart")
    finally:
        await admin.close()
        await agent.close()
    assert (op_again["message_id"], op_again["duplicate"]) == (op_first["message_id"], True)
    assert (ag_again["message_id"], ag_again["duplicate"]) == (ag_first["message_id"], True)
    assert rows_with_key(hive, "k-restart") == [
        (op_first["message_id"], OPERATOR, "m1nd", "from the operator"),
        (ag_first["message_id"], "m1nd", OPERATOR, "from m1nd"),
    ]


async def test_a_burst_of_50_sends_with_one_key_from_5_connections_is_one_row(hive: Hive) -> None:
    conns = [AsyncClient(hive.socket("m1nd")) for _ in range(5)]
    try:
        replies = await asyncio.gather(*(
            c.request("send", to=OPERATOR, body="the burst", idempotency_key="burst-key")
            for c in conns for _ in range(10)))
        # Refused keys, and the connection goes on serving.
        for bad in ("", "x" * 129, "caf\u00e9", "tab\there"):
            with pytest.raises(BadRequest, match="idempotency_key must be"):
                await conns[0].request("send", to=OPERATOR, body="no", idempotency_key=bad)
        with pytest.raises(BadRequest, match="idempotency_key"):
            await conns[0].request("send", to=OPERATOR, body="no", idempotency_key=12)
        assert "duplicate" not in await conns[0].request("send", to=OPERATOR, body="no key")
    finally:
        for c in conns:
            await c.close()
    ids = {r["message_id"] for r in replies}
    assert len(ids) == 1
    assert sum(not r.get("duplicate") for r in replies) == 1  # one stored it, 49 were told it was
    assert [r[0] for r in rows_with_key(hive, "burst-key")] == list(ids)
    with sqlite3.connect(hive.paths.db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages WHERE body = 'no'").fetchone() == (0,)
    conn.close()


async def test_hive_send_sends_once_more_with_its_key_after_a_lost_connection(hive: Hive, tmp_path: Path) -> None:
    relay_state = tmp_path / "relay"
    async with DropFirstSendReply(hive.paths.admin_socket, relay_state / "run" / "admin.sock") as relay:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hyperhive", "--state-dir", str(relay_state), "send", "m1nd", "hello", "once",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert relay.dropped is not None and relay.dropped["ok"]
    first = relay.dropped["message_id"]
    assert out.decode().startswith(f"sent #{first} to m1nd (already sent")
    keys = set(relay.keys)
    assert len(relay.sends) == 2 and len(keys) == 1 and keys.pop().startswith("cli-")
    assert rows_with_key(hive, relay.sends[0]["idempotency_key"]) == [(first, OPERATOR, "m1nd", "hello once")]


async def test_each_cli_invocation_is_a_new_send(hive: Hive) -> None:
    async def hive_send() -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), "send", "m1nd", "twice",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        return out.decode()

    a, b = await hive_send(), await hive_send()
    assert a != b and "already" not in a + b
    with sqlite3.connect(hive.paths.db) as conn:
        keys = [k for (k,) in conn.execute("SELECT idempotency_key FROM messages WHERE body = 'twice'")]
    conn.close()
    assert len(keys) == 2 and len(set(keys)) == 2 and all(k.startswith("cli-") for k in keys)


async def test_hive_mcp_reissues_a_send_with_its_key_after_a_lost_connection(hive: Hive, tmp_path: Path) -> None:
    # The pipe reaches mcp.sock beside the socket it is given: the relay's.
    relay = DropFirstSendReply(hive.paths.mcp_socket("m1nd"), tmp_path / "relay" / "mcp.sock", mcp=True)
    async with relay, mcp_session(tmp_path / "relay" / "hive.sock") as s:
        sent = tool_json(await s.call_tool("send", {"to": OPERATOR, "body": "through the relay"}))
        second = tool_json(await s.call_tool("send", {"to": OPERATOR, "body": "through the relay"}))
    assert relay.dropped is not None and not relay.dropped["result"].get("isError")
    first = json.loads(relay.dropped["result"]["content"][0]["text"])["message_id"]
    assert sent == {"sent": True, "message_id": first, "to": OPERATOR, "duplicate": True}
    # One key per tool call: the same text in a second call is a second message.
    assert "duplicate" not in second and second["message_id"] != first
    keys = relay.keys
    assert len(keys) == 3 and keys[0] == keys[1] != keys[2] and keys[0].startswith("mcp-")
    assert rows_with_key(hive, keys[0]) == [(first, "m1nd", OPERATOR, "through the relay")]
