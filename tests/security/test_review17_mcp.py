"""The daemon's MCP endpoint (run/mcp.sock, issue 17) attacked from inside a
real agent's sandbox: what a hostile agent with a shell can do with it.

- It speaks as that agent alone: a "from" in the arguments, another agent's
  key in ``_meta``, a manager's tool: none makes it anyone else.
- Another agent's mcp.sock is not in its view.
- A line past the limit ends only that connection; connections past the cap
  are closed; the agent's other socket and the daemon still answer.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator

import pytest
from support import Hive
from test_sandbox import py, run_cmd
from test_sandbox import pytestmark as _marks

from hyperhive.web.rpc.mcp_sockets import MAX_CONNECTIONS

pytestmark = _marks

CLIENT = '''
import json, socket
def conn():
    s = socket.socket(socket.AF_UNIX)
    s.connect(SOCK)
    f = s.makefile("rwb")
    return s, f
def say(f, m):
    f.write((json.dumps(m) + "\\n").encode()); f.flush()
def hear(f):
    return json.loads(f.readline())
def start():
    s, f = conn()
    say(f, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
        "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}})
    hear(f)
    say(f, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    return s, f
def call(f, i, name, args, meta=None):
    p = {"name": name, "arguments": args}
    if meta: p["_meta"] = meta
    say(f, {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": p})
    return hear(f)
'''


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hive]:
    h = Hive(tmp_path_factory.mktemp("mcp") / "state", extra_args=["--sandbox", "on"]).start()
    try:
        for name in ("alice", "bob"):
            h.spawn(name)
        yield h
    finally:
        h.stop()


def inside(hive: Hive, code: str) -> dict[str, object]:
    """Run ``code`` (after CLIENT) in alice's sandbox; it prints one JSON line after OUT."""
    sock = str(hive.paths.mcp_socket("alice"))  # type: ignore[arg-type]
    status, out = run_cmd(hive, "alice", py(f"SOCK = {sock!r}\n{CLIENT}\n{code}"))
    assert "OUT " in out, (status, out)
    result: dict[str, object] = json.loads(out.split("OUT ", 1)[1].splitlines()[0])
    return result


def test_it_speaks_as_its_agent_alone(hive: Hive) -> None:
    token = uuid.uuid4().hex[:10]
    got = inside(hive, (
        "s, f = start()\n"
        f"a = call(f, 1, 'send', {{'to': 'bob', 'body': 'forged {token}', 'from': 'm1nd', 'sender': 'm1nd'}})\n"
        f"k = call(f, 5, 'send', {{'to': 'bob', 'body': 'as me {token}'}},"
        " meta={'hyperhive/idempotency_key': 'bobs-key'})\n"
        "b = call(f, 2, 'request_spawn', {'name': 'evil'})\n"
        "c = call(f, 3, 'start', {'name': 'bob'})\n"
        "say(f, {'jsonrpc': '2.0', 'id': 4, 'method': 'tools/list'})\n"
        "tools = [t['name'] for t in hear(f)['result']['tools']]\n"
        "print('OUT', json.dumps({'a': a, 'k': k, 'b': b, 'c': c, 'tools': tools}))\n"))
    assert set(got["tools"]) == {"send", "recv", "recent"}  # type: ignore[arg-type]
    for refused in ("a", "b", "c"):
        assert got[refused]["result"]["isError"] is True  # type: ignore[index]
    forged = "".join(c.get("text", "") for c in got["a"]["result"]["content"])  # type: ignore[index]
    assert "'from'" in forged and "'sender'" in forged  # named, as hive.sock names them
    assert got["k"]["result"].get("isError") is not True  # type: ignore[index]
    with sqlite3.connect(hive.paths.db) as conn:
        assert conn.execute("SELECT count(*) FROM messages WHERE body = ?", (f"forged {token}",)).fetchone() == (0,)
    conn.close()
    with sqlite3.connect(hive.paths.db) as conn:
        rows = conn.execute("SELECT sender, recipient, idempotency_key FROM messages WHERE body = ?",
                            (f"as me {token}",)).fetchall()
    conn.close()
    assert rows == [("alice", "bob", "bobs-key")]  # a key is the sender's own: it names no one else's send
    assert not any(a["name"] == "evil" for a in hive.admin("approvals")["pending"])


def test_another_agents_endpoint_is_not_in_its_view(hive: Hive) -> None:
    bob = str(hive.paths.mcp_socket("bob"))  # type: ignore[arg-type]
    status, out = run_cmd(hive, "alice", py(
        f"import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n s.connect({bob!r})\n print('CONNECTED')\n"
        "except OSError as e:\n print('ERRNO', e.errno)"))
    assert "ERRNO 2" in out, out


def test_a_huge_line_and_a_connection_flood_end_only_themselves(hive: Hive) -> None:
    got = inside(hive, (
        "s, f = start()\n"
        "head = b'{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"tools/list\", \"x\": \"'\n"
        # The daemon may answer and hang up before the whole line is written (EPIPE here):
        # its answer is still there to read.
        "try:\n s.sendall(head + b'x' * (9 << 20) + b'\"}\\n')\nexcept BrokenPipeError:\n pass\n"
        "err = hear(f)['error']['message']\n"
        "try:\n eof = f.readline() == b''\nexcept ConnectionResetError:\n eof = True\n"  # hung up on its unread bytes
        "conns = [conn()[0] for _ in range(200)]\n"
        "import time\nend = time.monotonic() + 30\nclosed = set()\n"  # until all but the cap are closed
        f"while len(closed) < 200 - {MAX_CONNECTIONS} and time.monotonic() < end:\n"
        " for i, c in enumerate(conns):\n  c.setblocking(False)\n  try:\n   closed.add(i) if c.recv(1) == b'' else 0\n"
        "  except BlockingIOError:\n   pass\n"
        "closed = len(closed)\n"
        "for c in conns:\n c.close()\n"
        "print('OUT', json.dumps({'err': err, 'eof': eof, 'closed': closed}))\n"))
    assert "longer than" in got["err"] and got["eof"] is True  # type: ignore[operator]
    assert got["closed"] >= 200 - MAX_CONNECTIONS  # type: ignore[operator]
    assert hive.ls()["alice"]["state"] == "running"
    token = uuid.uuid4().hex[:10]
    status, out = run_cmd(hive, "alice", f"echo still {token}")  # its harness's hive.sock and mcp.sock: served
    assert f"still {token}" in out
