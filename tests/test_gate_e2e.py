"""The operator's gate end to end: a real daemon, real harnesses, the real MCP
client on m1nd's socket, and the `hive` CLI as the operator (issue: questions,
approvals and the manager's powers)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from typing import Any

import pytest
from mcp_support import mcp_session, tool_json, tool_text
from support import Hive, wait_for

from hyperhive.client import AsyncClient
from hyperhive.errors import HiveError

pytestmark = pytest.mark.e2e  # every test here starts a daemon


def cli(hive: Hive, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), *args],
        capture_output=True, text=True, timeout=60, check=check,
    )


def inbox(hive: Hive, name: str, limit: int = 50) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        c = AsyncClient(hive.socket(name))
        try:
            return list((await c.request("recent", limit=limit))["messages"])
        finally:
            await c.close()
    return asyncio.run(run())


def events(hive: Hive, name: str, kind: str) -> list[dict[str, Any]]:
    out = []
    for m in inbox(hive, name, 200):
        if m["from"] == "system" and m["body"].startswith("{"):
            e = json.loads(m["body"])
            if e.get("event") == kind:
                out.append(e)
    return out


async def manager_request(hive: Hive, op: str, **fields: Any) -> dict[str, Any]:
    c = AsyncClient(hive.socket("m1nd"))
    try:
        return await c.request(op, **fields)
    finally:
        await c.close()


async def recv_events(s: Any, wait: int = 10) -> list[dict[str, Any]]:
    """OperatorAnswered events from one MCP recv (other inbox rows, like the boot kick, skipped)."""
    while True:
        got = tool_json(await s.call_tool("recv", {"wait_seconds": wait}))
        if not got["messages"]:
            return []
        found = [json.loads(m["body"]) for m in got["messages"] if m["body"].startswith('{"event": "OperatorAnswered"')]
        if found:
            return found


@pytest.fixture
def quiet_manager(hive: Hive) -> Hive:
    """m1nd's harness stopped, so the test is the only reader of m1nd's inbox."""
    hive.admin("stop", name="m1nd")
    return hive


async def test_ask_answer_cancel_and_ttl_through_mcp_and_cli(quiet_manager: Hive) -> None:
    hive = quiet_manager
    async with mcp_session(hive.socket("m1nd")) as s:
        tools = {t.name for t in (await s.list_tools()).tools}
        assert {"ask_operator", "request_spawn", "request_apply_commit", "start", "restart", "kill"} <= tools
        t0 = time.monotonic()
        asked = tool_json(await s.call_tool("ask_operator", {
            "question": "which colours?", "options": ["red", "green", "blue"], "multi": True}))
        assert time.monotonic() - t0 < 2.0  # returns at once, not when answered
        qid = asked["question_id"]
        assert f"#{qid}" in cli(hive, "questions").stdout
        out = cli(hive, "answer", str(qid), "and", "a", "bit", "--choose", "blue", "--choose", "red").stdout
        assert "answered: red, blue, and a bit" in out
        [event] = await recv_events(s)
        assert event == {"event": "OperatorAnswered", "id": qid, "question": "which colours?",
                         "answer": "red, blue, and a bit", "how": "answered"}

        cq = tool_json(await s.call_tool("ask_operator", {"question": "shall I?"}))["question_id"]
        assert "cancelled: [cancelled]" in cli(hive, "cancel-question", str(cq)).stdout
        assert [e["answer"] for e in await recv_events(s)] == ["[cancelled]"]

        e1 = tool_json(await s.call_tool("ask_operator", {"question": "quick?", "ttl_seconds": 1}))["question_id"]
        e2 = tool_json(await s.call_tool("ask_operator", {
            "question": "deploy?", "options": ["yes", "no"], "ttl_seconds": 1, "default": "no"}))["question_id"]
        # A default that reads as JSON stays the string it is.
        e3 = tool_json(await s.call_tool("ask_operator", {
            "question": "risky?", "ttl_seconds": 1, "default": "false"}))["question_id"]
        seen: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            for e in await recv_events(s, 5):
                seen[e["id"]] = e
        assert (seen[e1]["answer"], seen[e1]["how"]) == ("[expired]", "expired")
        assert (seen[e2]["answer"], seen[e2]["how"]) == ("no", "expired")
        assert (seen[e3]["answer"], seen[e3]["how"]) == ("false", "expired")
        # Answering an expired question changes nothing.
        assert "expired: [expired]" in cli(hive, "answer", str(e1), "late").stdout


def test_ttl_survives_a_restart_and_a_past_deadline_expires_at_start(quiet_manager: Hive) -> None:
    hive = quiet_manager
    later = asyncio.run(manager_request(hive, "ask_operator", question="later", ttl_seconds=4))["question_id"]
    gone = asyncio.run(manager_request(hive, "ask_operator", question="gone", ttl_seconds=600))["question_id"]
    hive.stop()
    with sqlite3.connect(hive.paths.db) as conn:  # gone's deadline passes while the daemon is down
        conn.execute("UPDATE operator_questions SET deadline_at = ? WHERE id = ?", (time.time() - 1, gone))
    conn.close()
    hive.start()
    hive.admin("stop", name="m1nd")
    wait_for(lambda: [e["id"] for e in events(hive, "m1nd", "OperatorAnswered")] == [gone],
             timeout=3, what="the past deadline expired at start")
    deadline = json.loads(cli(hive, "questions", "--json").stdout)["pending"][0]["deadline_at"]
    wait_for(lambda: len(events(hive, "m1nd", "OperatorAnswered")) == 2, timeout=10, what="re-armed expiry")
    assert events(hive, "m1nd", "OperatorAnswered")[1]["id"] == later
    assert time.time() >= deadline - 0.05


def test_request_spawn_approve_and_deny(quiet_manager: Hive) -> None:
    hive = quiet_manager
    aid = asyncio.run(manager_request(hive, "request_spawn", name="newbie", prompt="You test things."))["approval_id"]
    listed = json.loads(cli(hive, "approvals", "--json").stdout)["pending"]
    assert [(a["id"], a["kind"], a["agent"], a["requested_by"]) for a in listed] == [(aid, "spawn", "newbie", "m1nd")]
    assert "newbie" not in hive.ls()
    assert f"#{aid} approved" in cli(hive, "approve", str(aid)).stdout
    wait_for(lambda: hive.ls()["newbie"]["state"] == "running", what="newbie runs")
    assert (hive.paths.applied("newbie") / "prompt.md").read_text() == "You test things."  # type: ignore[arg-type]
    wait_for(lambda: any(m["from"] == "system" and "spawned" in m["body"] for m in inbox(hive, "newbie")),
             what="newbie's kick")
    assert [e["outcome"] for e in events(hive, "m1nd", "ApprovalResolved")] == ["approved"]
    # The same approval cannot be approved twice; a second spawn of the name is refused.
    assert cli(hive, "approve", str(aid), check=False).returncode == 2
    with pytest.raises(HiveError) as exc:
        asyncio.run(manager_request(hive, "request_spawn", name="newbie"))
    assert exc.value.code == "conflict"

    other = int(cli(hive, "request-spawn", "other").stdout.split("#")[1].split()[0])
    assert f"#{other} denied: not now" in cli(hive, "deny", str(other), "--reason", "not now").stdout
    resolved = events(hive, "m1nd", "ApprovalResolved")
    assert (resolved[-1]["id"], resolved[-1]["outcome"], resolved[-1]["reason"]) == (other, "denied", "not now")
    assert "other" not in hive.ls()


def _git(repo: Any, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=m", "-c", "user.email=m@x", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_request_apply_commit_shows_the_diff_applies_rebuilds_and_kicks(quiet_manager: Hive) -> None:
    hive = quiet_manager
    hive.spawn("a")
    repo = hive.paths.config_dir("a")  # type: ignore[arg-type]
    old_prompt = (repo / "prompt.md").read_text()
    (repo / "prompt.md").write_text("You are a, and you now review code.\n")
    _git(repo, "commit", "-qam", "a reviews code")
    commit = _git(repo, "rev-parse", "HEAD")
    old_pid = hive.ls()["a"]["pid"]

    with pytest.raises(HiveError) as exc:
        asyncio.run(manager_request(hive, "request_apply_commit", agent="a", commit="deadbeef"))
    assert exc.value.code == "bad_request" and "no commit" in exc.value.message
    assert json.loads(cli(hive, "approvals", "--json").stdout)["pending"] == []

    aid = asyncio.run(manager_request(hive, "request_apply_commit", agent="a", commit=commit[:10]))["approval_id"]
    [pending] = json.loads(cli(hive, "approvals", "--json").stdout)["pending"]
    assert pending["commit"] == commit
    assert '<span class="diff-add">+You are a, and you now review code.</span>' in pending["diff_html"]
    assert f'<span class="diff-del">-{old_prompt.strip()}</span>' in pending["diff_html"]
    assert "you now review code" in cli(hive, "approvals", "--diff").stdout

    assert f"#{aid} approved" in cli(hive, "approve", str(aid)).stdout
    applied = hive.paths.applied("a")  # type: ignore[arg-type]
    assert (applied / "prompt.md").read_text() == "You are a, and you now review code.\n"
    assert (applied / ".commit").read_text().strip() == commit
    c = hive.ls()["a"]
    assert c["state"] == "running" and c["pid"] != old_pid
    wait_for(lambda: any(m["from"] == "system" and "rebuilt" in m["body"] for m in inbox(hive, "a")),
             what="a's kick after the rebuild")


def test_the_manager_cannot_act_on_itself_and_agents_cannot_use_its_tools(hive: Hive) -> None:
    hive.spawn("a")
    for verb in ("kill", "start", "restart"):
        with pytest.raises(HiveError) as exc:
            asyncio.run(manager_request(hive, verb, name="m1nd"))
        assert exc.value.code == "forbidden" and "itself" in exc.value.message

    async def as_a(op: str, **fields: Any) -> None:
        c = AsyncClient(hive.socket("a"))
        try:
            await c.request(op, **fields)
        finally:
            await c.close()

    for op, fields in (("ask_operator", {"question": "?"}), ("kill", {"name": "m1nd"}),
                       ("request_spawn", {"name": "x"})):
        with pytest.raises(HiveError) as exc:
            asyncio.run(as_a(op, **fields))
        assert exc.value.code == "forbidden" and "manager" in exc.value.message
    assert hive.ls()["m1nd"]["state"] == "running"


def test_an_ordinary_agents_mcp_has_no_manager_tools_and_kill_tells_the_manager(hive: Hive) -> None:
    hive.spawn("a")

    async def run() -> None:
        async with mcp_session(hive.socket("a")) as s:
            assert {t.name for t in (await s.list_tools()).tools} == {"send", "recv", "recent"}
        async with mcp_session(hive.socket("m1nd")) as s:
            res = await s.call_tool("kill", {"name": "a"})
            assert not res.is_error, tool_text(res)
            assert json.loads(tool_text(res)) == {"name": "a", "state": "stopped"}

    asyncio.run(run())
    assert hive.ls()["a"]["state"] == "stopped"
    rows = inbox(hive, "m1nd", 100)
    killed = [json.loads(m["body"]) for m in rows if '"Killed"' in m["body"]]
    assert killed and killed[-1]["agent"] == "a" and killed[-1]["by"] == "m1nd"


RECORDER = """
import sys
with open(sys.argv[1], "a") as f:
    f.write(sys.stdin.read())
"""


def test_the_notify_command_gets_each_event_exactly_once(tmp_path: Any) -> None:
    import os
    import signal

    rec = tmp_path / "rec.py"
    rec.write_text(RECORDER)
    out = tmp_path / "notified.jsonl"
    hive = Hive(tmp_path / "state", ["--notify", f"{sys.executable} {rec} {out}"]).start()
    try:
        hive.spawn("a")
        qid = asyncio.run(manager_request(hive, "ask_operator", question="ok?"))["question_id"]
        aid = int(cli(hive, "request-spawn", "later").stdout.split("#")[1].split()[0])
        os.kill(hive.ls()["a"]["pid"], signal.SIGKILL)

        def lines() -> list[dict[str, Any]]:
            return [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []

        wait_for(lambda: len(lines()) >= 3, timeout=15, what="three notifications")
        wait_for(lambda: hive.ls()["a"]["state"] == "running", what="a restarted")
        got = lines()
        assert sorted(e["event"] for e in got) == ["approval.queued", "container.crash", "question.asked"]
        by = {e["event"]: e["payload"] for e in got}
        assert by["question.asked"]["id"] == qid and by["question.asked"]["question"] == "ok?"
        assert by["approval.queued"]["id"] == aid and by["approval.queued"]["agent"] == "later"
        assert by["container.crash"]["agent"] == "a"
        # Answering and approving are not waiting on the operator: no more notifications.
        cli(hive, "answer", str(qid), "yes")
        cli(hive, "deny", str(aid))
        assert len(lines()) == 3
    finally:
        hive.stop()


def test_a_failing_notify_command_is_logged_and_blocks_nothing(tmp_path: Any) -> None:
    hive = Hive(tmp_path / "state", ["--notify", "/bin/false"]).start()
    try:
        t0 = time.monotonic()
        qid = asyncio.run(manager_request(hive, "ask_operator", question="still works?"))["question_id"]
        assert time.monotonic() - t0 < 5
        wait_for(lambda: any(e.get("event") == "notify.failed" for e in hive.log_events()), what="notify.failed")
        assert "answered: fine" in cli(hive, "answer", str(qid), "fine").stdout
    finally:
        hive.stop()


def test_the_manager_proposes_a_config_through_its_tool_and_the_operator_applies_it(quiet_manager: Hive) -> None:
    hive = quiet_manager
    hive.spawn("a")
    repo = hive.paths.config_dir("a")  # type: ignore[arg-type]
    commits_before = _git(repo, "rev-list", "--count", "HEAD")

    async def propose(**args: Any) -> Any:
        async with mcp_session(hive.socket("m1nd")) as s:
            return await s.call_tool("propose_config", {"agent": "a", **args})

    bad = asyncio.run(propose(message="x", agent_json={"driver": "gpt"}))
    assert bad.is_error and "driver must be one of" in tool_text(bad)
    same = asyncio.run(propose(message="x", prompt=(repo / "prompt.md").read_text()))
    assert same.is_error and "already has" in tool_text(same)
    assert _git(repo, "rev-list", "--count", "HEAD") == commits_before  # refused: nothing committed

    out = tool_json(asyncio.run(propose(message="a reviews code now", prompt="You review code.\n",
                                        agent_json={"allowed_recipients": ["m1nd", "operator"]})))
    assert _git(repo, "log", "-1", "--format=%an %s") == "m1nd a reviews code now"
    assert _git(repo, "rev-parse", "HEAD") == out["commit"]
    [pending] = json.loads(cli(hive, "approvals", "--json").stdout)["pending"]
    assert pending["id"] == out["approval_id"] and "+You review code." in pending["diff_html"]
    assert f"#{out['approval_id']} approved" in cli(hive, "approve", str(out["approval_id"])).stdout
    applied = hive.paths.applied("a")  # type: ignore[arg-type]
    assert (applied / "prompt.md").read_text() == "You review code.\n"
    assert json.loads((applied / "agent.json").read_text()) == {"allowed_recipients": ["m1nd", "operator"]}


def test_an_approval_queued_before_files_were_kept_is_refused_and_can_be_requested_again(
        quiet_manager: Hive) -> None:
    """An apply_commit approval from before `files_json` (issue 12) has no record
    of the bytes it showed: approving it fails with a clear reason (nothing is
    applied, the manager hears of it), and a new request of the same commit works."""
    hive = quiet_manager
    hive.spawn("a")
    applied = hive.paths.applied("a")  # type: ignore[arg-type]
    before = (applied / "prompt.md").read_bytes()
    out = asyncio.run(manager_request(hive, "propose_config", agent="a", message="m", prompt="Newer.\n"))
    with sqlite3.connect(hive.paths.db) as conn:  # as an older daemon left it
        conn.execute("UPDATE approvals SET files_json = NULL WHERE id = ?", (out["approval_id"],))
    conn.close()
    r = cli(hive, "approve", str(out["approval_id"]), check=False)
    assert r.returncode != 0 and "request it again" in r.stderr + r.stdout
    assert (applied / "prompt.md").read_bytes() == before
    [failed] = [e for e in events(hive, "m1nd", "ApprovalResolved") if e["id"] == out["approval_id"]]
    assert failed["outcome"] == "failed" and "request_apply_commit a" in failed["reason"]
    again = asyncio.run(manager_request(hive, "request_apply_commit", agent="a", commit=out["commit"]))
    assert f"#{again['approval_id']} approved" in cli(hive, "approve", str(again["approval_id"])).stdout
    assert (applied / "prompt.md").read_bytes() == b"Newer.\n"
