"""A Claude Code agent in its sandbox reaches the model only through the
daemon's gateway, which holds the key (issue 11, acceptance 2).

The real CLI runs inside the agent's sandbox (own network, cleared
environment) against the scripted API server on the host's loopback: the
server must see the daemon's key on every request, and the agent must only
ever have held the placeholder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, Reply, text, tool_use
from support import Hive, wait_for

from hyperhive.sandbox.view import PLACEHOLDER_KEY

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("claude") is None, reason="needs the Claude Code CLI (.ci/run)"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("bwrap") is None, reason="a root daemon with bubblewrap"),
]

DAEMON_KEY = "sk-ant-daemon-gateway-key-41c9"


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as f:
        yield f


def test_a_claude_turn_goes_through_the_gateway_with_the_daemons_key(tmp_path: Path, fake: FakeAnthropic) -> None:
    fake.set_script([
        Reply([text("Answering the operator."), tool_use("mcp__hyperhive__send",
                                                         {"to": "operator", "body": "pong through the gateway"})]),
        Reply([text("done")]),
    ])
    hive = Hive(tmp_path / "state", env={"ANTHROPIC_BASE_URL": fake.base_url, "ANTHROPIC_API_KEY": DAEMON_KEY},
                extra_args=["--sandbox", "on"]).start()
    try:
        aid = hive.admin("request_spawn", name="cc", driver="claude")["approval_id"]
        hive.admin("approve", approval_id=aid)
        wait_for(lambda: hive.ls().get("cc", {}).get("state") == "running", timeout=60, what="cc running")
        hive.admin("send", to="cc", body="ping")
        wait_for(lambda: any(m["from"] == "cc" and m["body"] == "pong through the gateway"
                             for m in hive.admin("inbox", limit=50)["messages"]), timeout=120, what="cc's answer")
        requests = [r for r in fake.requests if r.method == "POST"]
        assert requests and fake.main_requests()
        assert {r.headers.get("x-api-key") for r in requests} == {DAEMON_KEY}
        assert not any(PLACEHOLDER_KEY in str(r.headers) for r in requests)
        # The agent held only the placeholder: its harness's environment, and bwrap's, as the sandbox sees them.
        top = hive.ls()["cc"]["pid"]
        environs = b"".join(Path(f"/proc/{p}/environ").read_bytes() for p in _tree(top))
        assert DAEMON_KEY.encode() not in environs
        assert f"ANTHROPIC_API_KEY={PLACEHOLDER_KEY}".encode() in environs
        assert fake.base_url.encode() not in environs  # nor where the upstream is
        usage = wait_for(lambda: [e for e in hive.log_events() if e.get("event") == "gateway.request"
                                  and e.get("agent") == "cc"], timeout=10, what="the gateway's log")
        assert all(e.get("status") == 200 for e in usage if e.get("path", "").startswith("/v1/messages"))
    finally:
        hive.stop()


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    return out
