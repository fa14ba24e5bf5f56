"""Issue 18, acceptance 2 with the real Claude Code CLI: a Ray-placed claude agent moved by a lost node
resumes its conversation.

A real cluster (a head with no CPUs, two workers offering ``pool: 1``), a real daemon with
``--backend ray --agent-listen``, the scripted model (tests/fake_anthropic.py) on this host, reached
through the daemon's gateway (the agent's api.sock is its relay's, tunnelled over TLS). The agent ``cc``
answers a first message; its node is removed; Ray places it on the other worker; it answers a second
message, and the CLI's request for that turn carries the first turn (the session id in its state dir,
on the shared agents dir, is resumed by ``claude -p --resume``).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import support
from fake_anthropic import FakeAnthropic, Reply, text, tool_use
from support import Hive, wait_for

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402
from ray_support import ray_hive  # noqa: E402

from hyperhive.harness.claude import SESSION_FILE  # noqa: E402
from hyperhive.names import AgentName  # noqa: E402

pytestmark = [
    pytest.mark.e2e, pytest.mark.ray,
    pytest.mark.skipif(shutil.which("claude") is None, reason="needs the Claude Code CLI (.ci/run)"),
]

_ASKED = re.compile(r"question (Q\d-[0-9a-f]{8})")


class Script:
    """cc's model: a new question is answered with a send to the operator quoting it, the tool's
    result with "done"; every other request (side requests, other agents) a plain "ok"."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        if not body.get("tools") or "You are cc," not in json.dumps(body.get("system")):
            return Reply([text("ok")])
        last = body["messages"][-1]
        content = last.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": str(content)}]
        if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks):
            return Reply([text("done")])
        asked = _ASKED.findall(json.dumps(blocks))
        if not asked:
            return Reply([text("nothing asked")])
        return Reply([text("answering"), tool_use("mcp__hyperhive__send",
                                                  {"to": "operator", "body": f"answer to {asked[-1]}"})])


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(Script()) as f:
        yield f


class Rig:
    def __init__(self, cluster: Cluster, workers: list[Any], hive: Hive) -> None:
        self.cluster, self.workers, self.hive = cluster, workers, hive


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, fake: FakeAnthropic) -> Iterator[Rig]:
    support.require_e2e("a Ray cluster, a daemon on it and the Claude Code CLI")
    with ray_hive(tmp_path_factory.mktemp("rayclaude"), ["--agent-memory-mb", "1024"], env=fake.env(),
                  destroy=("cc",)) as rigged:
        yield Rig(*rigged)


def _answer(hive: Hive, marker: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for m in hive.admin("inbox", limit=200)["messages"]:
            if m["from"] == "cc" and m["body"] == f"answer to {marker}":
                return dict(m)
        return None

    return wait_for(found, timeout=180, what=f"cc's answer to {marker}")


def _turn_requests(fake: FakeAnthropic, marker: str) -> list[list[dict[str, Any]]]:
    """The messages of cc's model requests whose last message asks ``marker``."""
    out = []
    for r in fake.main_requests():
        if "You are cc," in json.dumps(r.body.get("system")) and marker in json.dumps(r.body["messages"][-1]):
            out.append(r.body["messages"])
    return out


def _last_turn_event(hive: Hive) -> str | None:
    """turn_start or turn_end, whichever cc's harness recorded last (its events db, read-only)."""
    db = sqlite3.connect(f"file:{hive.paths.state(AgentName('cc')) / 'hyperhive-events.sqlite'}?mode=ro", uri=True,
                         timeout=10)
    try:
        row = db.execute("SELECT kind FROM events WHERE kind IN ('turn_start', 'turn_end') ORDER BY id DESC LIMIT 1"
                         ).fetchone()
    finally:
        db.close()
    return str(row[0]) if row else None


def _sends(messages: list[dict[str, Any]]) -> list[str]:
    """The bodies of the model's own earlier send calls, as the request replays them."""
    return [b["input"]["body"] for m in messages if m.get("role") == "assistant" and isinstance(m.get("content"), list)
            for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_use"
            and b.get("name") == "mcp__hyperhive__send"]


def test_a_moved_claude_agent_resumes_its_conversation(rig: Rig, fake: FakeAnthropic) -> None:
    hive = rig.hive
    aid = hive.admin("request_spawn", name="cc", driver="claude", resources={"pool": 1})["approval_id"]
    hive.admin("approve", approval_id=aid)
    before = wait_for(lambda: (r := hive.ls().get("cc", {})).get("state") == "running" and r.get("node")
                      and r["parked"]["system"] >= 1 and r, timeout=150, what="cc's harness on a worker")
    q1, q2 = f"Q1-{uuid.uuid4().hex[:8]}", f"Q2-{uuid.uuid4().hex[:8]}"
    hive.admin("send", to="cc", body=f"first question {q1}")
    _answer(hive, q1)
    # The turn ends (the tool's result answered with "done") and the harness waits again: a node lost
    # mid-turn would replay the turn's message (at least once), which is not what this test is about.
    wait_for(lambda: any(q1 in json.dumps(r.body["messages"]) and "tool_result" in json.dumps(r.body["messages"][-1])
                         for r in fake.main_requests()), timeout=60, what="cc's first turn's last model call")
    wait_for(lambda: _last_turn_event(hive) == "turn_end" and hive.ls()["cc"]["parked"]["system"] >= 1,
             timeout=60, what="cc's first turn ended and its harness waiting again")
    session = hive.paths.state(AgentName("cc")) / SESSION_FILE
    sid = wait_for(lambda: session.exists() and session.read_text().strip(), timeout=30, what="cc's session id")
    assert _turn_requests(fake, q1)

    old = before["node"]["node_id"]
    [node] = [w for w in rig.workers if w.node_id == old]
    rig.cluster.remove_node(node)
    moved = wait_for(lambda: (r := hive.ls()["cc"])["state"] == "running" and r.get("node")
                     and r["node"]["node_id"] != old and r["parked"]["system"] >= 1 and r,
                     timeout=180, what="cc running on the other worker")
    assert moved["node"]["node_id"] in {w.node_id for w in rig.workers if w is not node}

    hive.admin("send", to="cc", body=f"second question {q2}")
    _answer(hive, q2)
    [first, *_] = _turn_requests(fake, q2)
    # The new turn's request carries the earlier turn: its question, and the model's own send of
    # then (an assistant tool_use, which only the resumed session can replay).
    assert q1 in json.dumps(first[:-1]), json.dumps(first)[-3000:]
    assert _sends(first) == [f"answer to {q1}"], json.dumps(first)[-3000:]
    assert [m.get("role") for m in first].count("assistant") >= 2  # its answer and its "done"
    assert Path(session).read_text().strip() == sid  # the same session, resumed from shared storage
