"""A hibernating agent's web UI, answered by the daemon (issue 17): the routes
(``sandbox.web_asleep.route``) and the strict reading of what the sandboxed
events reader printed (``events_probe.parse_rows``), both pure."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hyperhive.events_probe import READER, parse_rows
from hyperhive.sandbox.web_asleep import Asleep, route

HISTORY = [{"id": 7, "ts": 1.0, "kind": "turn_end", "data": {}}]
INBOX = [{"id": 1, "from": "operator", "to": "alice", "body": "hi", "sent_at": 1.0, "delivered_at": None}]


def asleep(woken: list[str]) -> Asleep:
    async def inbox() -> list[dict[str, Any]]:
        return INBOX

    async def history() -> list[dict[str, Any]]:
        return HISTORY

    return Asleep("alice", "builtin", inbox, history, lambda: woken.append("alice"))


def answer(method: str, target: str, upgrade: bool = False) -> tuple[int, str, Any, list[str]]:
    woken: list[str] = []
    status, ctype, body = asyncio.run(route(method, target, upgrade, asleep(woken)))
    return status, ctype, json.loads(body) if ctype == "application/json" else body, woken


def test_the_page_its_files_its_state_and_history() -> None:
    status, ctype, body, woken = answer("GET", "/")
    assert status == 200 and ctype.startswith("text/html") and b"agent.js" in body and woken == []
    for f in ("/static/agent.js", "/static/agent.css"):
        assert answer("GET", f)[0] == 200
    status, _, st, _ = answer("GET", "/api/state?x=1")
    assert (st["state"], st["name"], st["last_event_id"], st["inbox"]) == ("hibernating", "alice", 7, INBOX)
    assert answer("GET", "/events/history")[2] == {"ok": True, "events": HISTORY}
    assert answer("HEAD", "/")[0] == 200


@pytest.mark.parametrize("target", ["/static/../web.py", "/static/agent.html/..", "/static/x", "/etc/passwd",
                                    "/static/%2e%2e/web.py", "//", "/api/state/.."])
def test_nothing_but_its_three_files_and_routes(target: str) -> None:
    assert answer("GET", target)[0] == 404


def test_posts_a_note_wakes_it_and_the_rest_say_why_not() -> None:
    status, _, body, woken = answer("POST", "/send")
    assert status == 503 and body["error"]["code"] == "waking" and woken == ["alice"]
    assert answer("POST", "/cancel")[2] == {"ok": True, "cancelled": False}
    status, _, body, woken = answer("POST", "/compact")
    assert status == 409 and woken == []
    assert answer("PUT", "/send")[0] == 405 and answer("POST", "/nope")[0] == 404
    assert answer("GET", "/events/live", upgrade=True)[0] == 503


def test_only_event_rows_are_kept_from_the_readers_output() -> None:
    good = json.dumps([1, 2.5, "turn_start", json.dumps({"a": [1]})])
    lines = [good, "not json", json.dumps([1, 2]), json.dumps(["1", 2.0, "k", "{}"]), json.dumps([1, True, "k", "{}"]),
             json.dumps([1, 2.0, "", "{}"]), json.dumps([1, 2.0, "k" * 65, "{}"]), json.dumps([1, 2.0, "k", "[1]"]),
             json.dumps([1, 2.0, "k", "{"]), json.dumps([1, 2.0, "k", '{"s": "\\ud800"}']),
             '[1, 2.0, "k", "{}"', json.dumps([True, 2.0, "k", "{}"]), json.dumps([2, 3, "end", "{}"])]
    rows = parse_rows("\n".join(lines).encode() + b"\n\xff\xfe\n")
    assert rows == [{"id": 1, "ts": 2.5, "kind": "turn_start", "data": {"a": [1]}},
                    {"id": 2, "ts": 3.0, "kind": "end", "data": {}}]


def test_the_reader_is_python_that_compiles() -> None:
    compile(READER, "<events reader>", "exec")
