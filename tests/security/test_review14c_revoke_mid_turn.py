"""Third review of issue 14 (hostile model): a revoked tool keeps running
without a question until the turn ends.

In "ask" mode the harness asks the daemon for the tools granted "from now on"
at each turn's start and passes them to the CLI as ``--allowedTools``
(`claude_cmdline.permission_args`). A tool on that list is never sent to the
``permission`` op again during the turn: the operator's revoke (dashboard
"revoke", ``hive revoke-tool``: "Its next Bash call asks again") changes the
daemon's list, not the running CLI's. A turn is the model's to make long (it
calls tools for as long as it likes), so the agent the operator just took Bash
from goes on running Bash, unasked, for as long as it cares to.

Fixed (hyperhive/harness/claude_cmdline.py ``permission_args``): the grants are
no longer on ``--allowedTools``; every call of a built-in tool outside
``allowed_tools`` goes to the ``permission`` op, which allows a granted tool at
once with no question (`Questions.ask_permission`), so a revoke takes effect
on the very next call.

Real daemon, real harness, the real claude CLI against the scripted API server.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import HarnessProc, claude_env, take_over
from fake_anthropic import FakeAnthropic, Reply, text, tool_use
from support import Hive, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("claude") is None, reason="needs the Claude Code CLI"),
]


class Script:
    """agent a's model answers, in order; anyone else gets a plain answer."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.lock = threading.Lock()

    def add(self, *replies: Reply) -> None:
        with self.lock:
            self.replies += replies

    def __call__(self, body: dict[str, Any]) -> Reply:
        if not body.get("tools") or "You are a," not in json.dumps(body.get("system")):
            return Reply([text("ok")])
        with self.lock:
            return self.replies.pop(0) if self.replies else Reply([text("(script exhausted)")])


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def fake(script: Script) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(script) as f:
        yield f


def _pending(hive: Hive) -> list[dict[str, Any]]:
    return list(hive.admin("questions")["pending"])


def test_a_revoked_tool_asks_again_within_the_running_turn(tmp_path: Path, fake: FakeAnthropic,
                                                           script: Script) -> None:
    hive = Hive(tmp_path / "state", ["--permission-ttl-seconds", "60"]).start()
    m = [tmp_path / f"marker-{i}" for i in range(3)]
    try:
        take_over(hive, "a")
        (hive.paths.applied("a") / "agent.json").write_text(
            json.dumps({"driver": "claude", "permissions": "ask"}))
        a = HarnessProc(hive, "a", "claude", claude_env(fake.env())).start()
        try:
            # Turn 1: the operator allows Bash "from now on".
            script.add(Reply([tool_use("Bash", {"command": f"touch {m[0]}"})]), Reply([text("done")]))
            mark = a.last_id()
            hive.admin("send", to="a", body="one")
            [q] = wait_for(lambda: _pending(hive), timeout=60, what="the first question")
            hive.admin("answer", question_id=q["id"], chosen=["allow Bash from now on"])
            a.wait_kind("turn_end", after=mark, timeout=60)
            assert m[0].exists()

            # Turn 2: Bash runs unasked (granted); the model's next call is held until the
            # operator has revoked Bash.
            held = threading.Event()
            script.add(Reply([tool_use("Bash", {"command": f"touch {m[1]}"})]),
                       Reply([tool_use("Bash", {"command": f"touch {m[2]}"})], hold=held),
                       Reply([text("done")]))
            mark = a.last_id()
            hive.admin("send", to="a", body="two")
            wait_for(m[1].exists, timeout=60, what="the granted Bash call")
            out = hive.admin("revoke_tool", name="a", tool="Bash")
            assert out["revoked"] and out["tools"] == []
            held.set()
            # The revoked tool's next call must ask the operator again (then: denied).
            seen = wait_for(lambda: _pending(hive) or m[2].exists(), timeout=60, what="a question, or the file")
            assert not m[2].exists(), "Bash ran after the operator revoked it, without a question"
            [q] = seen
            assert q["permission"]["shown"]["text"] == f"touch {m[2]}"
            hive.admin("answer", question_id=q["id"], chosen=["deny"])
            a.wait_kind("turn_end", after=mark, timeout=60)
            assert not m[2].exists()
        finally:
            a.stop()
    finally:
        hive.stop()
