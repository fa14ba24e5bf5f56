"""Bad input gets an error with a stable code, the connection stays usable,
and nothing is written."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from support import Hive

from hyperhive.wire import MAX_LINE

pytestmark = pytest.mark.e2e  # one daemon for the module


class Raw:
    """A raw connection: write bytes, read one response line."""

    def __init__(self, path: Path) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(str(path))
        self.buf = b""

    def ask(self, data: bytes) -> dict[str, Any]:
        self.s.sendall(data)
        while b"\n" not in self.buf:
            chunk = self.s.recv(1 << 16)
            assert chunk, "daemon closed the connection"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def ping_ok(self) -> bool:
        resp = self.ask(b'{"id": 99, "op": "ping"}\n')
        return resp["id"] == 99 and resp["ok"] is True and resp["agent"] == self.agent

    agent = ""


def message_count(hive: Hive) -> int:
    with sqlite3.connect(hive.paths.db) as db:
        return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])


def lines(*objs: Any) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


BAD_LINES = [
    (b"{not json\n", "bad_json", None),
    (b"[1, 2]\n", "bad_json", None),
    (b"\xff\xfe\n", "bad_json", None),
    (lines({"op": "send", "to": "b", "body": "x"}), "bad_request", None),
    (lines({"id": 1, "op": "fly"}), "unknown_op", 1),
    (lines({"id": 2, "op": "spawn", "name": "x"}), "unknown_op", 2),  # admin op on an agent socket
    (lines({"id": 3, "op": "send", "to": "b"}), "bad_request", 3),
    (lines({"id": 4, "op": "send", "to": 5, "body": "x"}), "bad_request", 4),
    (lines({"id": 5, "op": "recv", "wait_seconds": "long"}), "bad_request", 5),
    (lines({"id": 6, "op": "recv", "wait_seconds": -1}), "bad_request", 6),
    (lines({"id": 7, "op": "recent", "limit": True}), "bad_request", 7),
    (lines({"id": 8, "op": "send", "to": "b", "body": "x", "from": "m1nd"}), "bad_request", 8),
    (lines({"id": "s", "op": "recent", "limit": 0}), "bad_request", "s"),
    # valid JSON, text no store can take: a lone surrogate, anywhere
    (b'{"id": 9, "op": "send", "to": "b", "body": "x\\ud800y"}\n', "bad_request", 9),
    (b'{"id": 10, "op": "send", "to": "b\\udfff", "body": "x"}\n', "bad_request", 10),
    (b'{"id": "\\ud800", "op": "send", "to": "b", "body": "x"}\n', "bad_request", None),
    (b'{"id": 11, "op": "send", "to": "b", "body": "x", "\\udc00": 1}\n', "bad_request", 11),
    (b'{"id": 12, "op": "recv", "x": ' + b"[" * 40 + b"]" * 40 + b"}\n", "bad_request", 12),
    (b'{"id": 13, "op": "recv", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "bad_request", None),
    (b'{"id": 14, "op": "recent", "limit": 99999999999999999999999}\n', "bad_request", 14),
    (b'{"id": 15, "op": "recv", "wait_seconds": 1e999}\n', "bad_request", 15),
    (b'{"id": 16, "op": "recv", "wait_seconds": NaN}\n', "bad_json", None),
]


@pytest.fixture(scope="module")
def hive(module_hive: Hive) -> Hive:
    module_hive.spawn("b")
    return module_hive


@pytest.fixture
def agent(hive: Hive) -> Raw:
    raw = Raw(hive.socket("m1nd"))
    raw.agent = "m1nd"
    return raw


def test_bad_lines_get_coded_errors_and_the_connection_lives(hive: Hive, agent: Raw) -> None:
    before = message_count(hive)
    for data, code, req_id in BAD_LINES:
        resp = agent.ask(data)
        assert resp["ok"] is False, data
        assert resp["error"]["code"] == code, (data, resp)
        assert resp["id"] == req_id
        assert resp["error"]["message"]
        assert agent.ping_ok()
    assert message_count(hive) == before


def test_a_line_over_one_mib_is_refused_and_the_next_line_works(hive: Hive, agent: Raw) -> None:
    before = message_count(hive)
    huge = b'{"id": 1, "op": "send", "to": "b", "body": "' + b"x" * (MAX_LINE + 10) + b'"}\n'
    resp = agent.ask(huge)
    assert resp["ok"] is False and resp["error"]["code"] == "line_too_long"
    assert agent.ping_ok()
    assert message_count(hive) == before


@pytest.mark.parametrize("name", ["../x", "A", "a/b", "", "a\x00b", "..", "/etc", "operator/.."])
def test_bad_recipient_names_are_refused(hive: Hive, agent: Raw, name: str) -> None:
    before = message_count(hive)
    resp = agent.ask(lines({"id": 1, "op": "send", "to": name, "body": "x"}))
    assert resp["error"]["code"] == "bad_name"
    assert agent.ping_ok()
    assert message_count(hive) == before


@pytest.mark.parametrize("name", ["../x", "A", "a/b", "", "a\x00b", "..", "operator", "system"])
def test_bad_names_are_refused_by_every_admin_verb(hive: Hive, name: str) -> None:
    admin = Raw(hive.paths.admin_socket)
    admin.agent = "operator"
    agents_before = sorted(p.name for p in hive.paths.agents.iterdir())
    for op in ("spawn", "start", "stop"):
        resp = admin.ask(lines({"id": 1, "op": op, "name": name}))
        assert resp["ok"] is False
        assert resp["error"]["code"] in ("bad_name", "unknown_agent"), resp
        if op == "spawn" or name not in ("operator", "system"):
            assert resp["error"]["code"] == "bad_name", resp
        assert admin.ping_ok()
    resp = admin.ask(lines({"id": 2, "op": "send", "to": name, "body": "x"}))
    assert resp["error"]["code"] in ("bad_name", "not_allowed", "unknown_agent")
    assert sorted(p.name for p in hive.paths.agents.iterdir()) == agents_before
    assert not (hive.state_dir.parent / "x").exists()


def test_unknown_recipient_is_refused(hive: Hive, agent: Raw) -> None:
    resp = agent.ask(lines({"id": 1, "op": "send", "to": "nobody", "body": "x"}))
    assert resp["error"]["code"] == "unknown_agent"


def test_log_lines_carry_the_agent_and_the_request(hive: Hive, agent: Raw) -> None:
    from support import wait_for
    agent.ask(lines({"id": 42, "op": "recent", "limit": 0}))

    def refused() -> list[dict[str, Any]]:
        return [e for e in hive.log_events() if e.get("event") == "socket.refused" and e.get("request") == 42]

    [line] = wait_for(refused, what="the refusal in the daemon log")
    assert line["agent"] == "m1nd" and line["op"] == "recent" and line["code"] == "bad_request"
    assert line["level"] == "info" and line["timestamp"].endswith("Z")
