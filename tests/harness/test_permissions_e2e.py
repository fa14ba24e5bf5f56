"""Tool permissions end to end (issue 14, acceptance 3 and 4): the real Claude
Code CLI in a real harness on a real daemon, the scripted API server asking
for `Bash` calls, the operator answering through the admin socket; every
outcome checked on the host (the file is there or it is not)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import HarnessProc, claude_env, take_over
from fake_anthropic import FakeAnthropic, Reply, text, tool_use
from support import Hive, wait_for

pytestmark = [
    pytest.mark.e2e,  # a daemon, harnesses and the real claude CLI
    pytest.mark.skipif(shutil.which("claude") is None, reason="needs the Claude Code CLI (.ci/run)"),
]

TTL = 8  # the daemon's --permission-ttl-seconds here: the expiry case waits it out


class Script:
    """The model's answers, in order; records when each tool_use answer was served."""

    def __init__(self, agent: str = "a") -> None:
        self.agent = agent  # other agents' requests (m1nd's) get a plain answer
        self.replies: list[Reply] = []
        self.served: list[float] = []
        self.lock = threading.Lock()

    def add(self, *replies: Reply) -> None:
        with self.lock:
            self.replies += replies

    def __call__(self, body: dict[str, Any]) -> Reply:
        if not body.get("tools") or f"You are {self.agent}," not in json.dumps(body.get("system")):
            return Reply([text("ok")])
        with self.lock:
            r = self.replies.pop(0) if self.replies else Reply([text("(script exhausted)")])
            if r.stop_reason == "tool_use":
                self.served.append(time.time())
            return r


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def fake(script: Script) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(script) as f:
        yield f


@pytest.fixture
def ask_hive(tmp_path: Path) -> Iterator[Hive]:
    h = Hive(tmp_path / "state", ["--permission-ttl-seconds", str(TTL)]).start()
    try:
        yield h
    finally:
        h.stop()


def _configure(hive: Hive, name: str, agent_json: dict[str, Any]) -> None:
    """The applied agent.json the harness reads (as an approved config would leave it)."""
    (hive.paths.applied(name) / "agent.json").write_text(json.dumps(agent_json))  # type: ignore[arg-type]


def _pending(hive: Hive) -> list[dict[str, Any]]:
    return list(hive.admin("questions")["pending"])


def _bash_turn(script: Script, marker: Path) -> None:
    script.add(Reply([text("running it"), tool_use("Bash", {"command": f"touch {marker}"})]),
               Reply([text("turn over")]))


def _tool_results(a: HarnessProc, after: int) -> list[dict[str, Any]]:
    return [e["data"] for e in a.events() if e["id"] > after and e["kind"] == "tool_result"]


def test_ask_mode_allow_deny_expiry_and_from_now_on(ask_hive: Hive, fake: FakeAnthropic, script: Script,
                                                    tmp_path: Path) -> None:
    hive = ask_hive
    take_over(hive, "a")
    _configure(hive, "a", {"driver": "claude", "permissions": "ask"})
    a = HarnessProc(hive, "a", "claude", claude_env(fake.env())).start()
    markers = [tmp_path / f"marker-{i}" for i in range(5)]
    try:
        # 1. allow: the question comes within 1 s of the model's tool call, with the command; the file appears.
        _bash_turn(script, markers[0])
        mark = a.last_id()
        hive.admin("send", to="a", body="touch the first marker")
        [q] = wait_for(lambda: _pending(hive), timeout=40, what="the permission question")
        assert q["kind"] == "permission" and q["asker"] == "a"
        assert q["question"] == f"`a` wants to run Bash: `touch {markers[0]}`"
        assert q["options"] == ["allow", "allow Bash from now on", "deny"] and q["default"] == "deny"
        assert q["permission"]["tool_name"] == "Bash"
        assert q["permission"]["shown"] == {"kind": "command", "text": f"touch {markers[0]}", "description": ""}
        assert q["asked_at"] - script.served[-1] < 1.0, "the question took over 1 s to appear"
        assert q["deadline_at"] - q["asked_at"] == pytest.approx(TTL, abs=0.5)
        assert not markers[0].exists()
        hive.admin("answer", question_id=q["id"], chosen=["allow"])
        a.wait_kind("turn_end", after=mark, timeout=40)
        assert markers[0].exists()
        [res] = _tool_results(a, mark)
        assert not res["is_error"]

        # 2. deny with a reason: the CLI gets the denial, the turn goes on and ends; no file.
        _bash_turn(script, markers[1])
        mark = a.last_id()
        hive.admin("send", to="a", body="touch the second marker")
        [q] = wait_for(lambda: _pending(hive), timeout=40, what="the second question")
        hive.admin("answer", question_id=q["id"], chosen=["deny"], text="not today")
        a.wait_kind("turn_end", after=mark, timeout=40)
        assert not markers[1].exists()
        [res] = _tool_results(a, mark)
        assert res["is_error"] and "the operator denied this Bash call: not today" in json.dumps(res)
        assert "the operator denied this Bash call: not today" in fake.main_requests()[-1].conversation_text()

        # 3. nobody answers: the TTL denies it; no file.
        _bash_turn(script, markers[2])
        mark = a.last_id()
        hive.admin("send", to="a", body="touch the third marker")
        [q] = wait_for(lambda: _pending(hive), timeout=40, what="the third question")
        a.wait_kind("turn_end", after=mark, timeout=TTL + 40)
        assert not markers[2].exists()
        resolved = next(r for r in hive.admin("questions")["resolved"] if r["id"] == q["id"])
        assert (resolved["how"], resolved["answer"]) == ("expired", "deny")
        [res] = _tool_results(a, mark)
        assert res["is_error"] and "did not answer in time" in json.dumps(res)

        # 4. "allow Bash from now on": it runs, and Bash is granted (kept by the daemon, not in the agent's dirs).
        _bash_turn(script, markers[3])
        mark = a.last_id()
        hive.admin("send", to="a", body="touch the fourth marker")
        [q] = wait_for(lambda: _pending(hive), timeout=40, what="the fourth question")
        hive.admin("answer", question_id=q["id"], chosen=["allow Bash from now on"])
        a.wait_kind("turn_end", after=mark, timeout=40)
        assert markers[3].exists()
        grants = hive.paths.agent("a") / "granted-tools.json"  # type: ignore[arg-type]
        assert json.loads(grants.read_text()) == ["Bash"]
        asked = len(hive.admin("questions")["resolved"])

        # 5. the next Bash call runs with no question at all.
        _bash_turn(script, markers[4])
        mark = a.last_id()
        hive.admin("send", to="a", body="touch the fifth marker")
        a.wait_kind("turn_end", after=mark, timeout=40)
        assert markers[4].exists()
        qs = hive.admin("questions")
        assert qs["pending"] == [] and len(qs["resolved"]) == asked
        claude_starts = [json.loads(line) for line in a.log_text().splitlines() if '"claude.start"' in line]
        assert claude_starts[-1]["mode"] == "ask"
    finally:
        a.stop()
    # No permission question reached the agent's inbox as an OperatorAnswered message.
    texts = "\n".join(r.conversation_text() for r in fake.main_requests())
    assert "OperatorAnswered" not in texts


def test_unsandboxed_agent_bash_is_refused_by_default(tmp_path: Path, fake: FakeAnthropic, script: Script) -> None:
    """Acceptance 4: `--sandbox off`, a claude agent with the default permissions
    (allowlist: only the hyperhive tools) cannot run Bash; `hive ls` says unsandboxed."""
    marker = tmp_path / "should-not-exist"
    hive = Hive(tmp_path / "state", ["--sandbox", "off", "--driver", "claude"],
                env=fake.env()).start()
    try:
        _bash_turn(script, marker)
        hive.spawn("a")
        wait_for(lambda: "unsandboxed" in hive.ls()["a"].get("badges", []), timeout=30, what="the badge")
        hive.admin("send", to="a", body="touch it")
        wait_for(lambda: not script.replies, timeout=60, what="the turn's second request")
        conversation = next(r for r in reversed(fake.main_requests())
                            if "You are a," in json.dumps(r.body.get("system"))).conversation_text()
        assert not marker.exists()
        assert hive.admin("questions")["pending"] == []
        assert "No such tool available: Bash" in conversation, conversation  # not offered at all (--tools)
    finally:
        hive.stop()
    assert not marker.exists()


def test_sandboxed_default_runs_bash_with_no_question_in_the_workspace(tmp_path: Path, fake: FakeAnthropic,
                                                                       script: Script) -> None:
    """Sandboxed, default permissions ("sandbox": bypassPermissions): the CLI runs
    the scripted Bash call at once, in the agent's workspace (its working dir);
    the system prompt tells the agent where it is."""
    hive = Hive(tmp_path / "state", ["--driver", "claude"], env=fake.env()).start()
    try:
        hive.spawn("a")
        if "unsandboxed" in (hive.ls()["a"].get("badges") or []):
            pytest.skip("no sandbox on this host (bwrap unavailable)")
        script.add(Reply([tool_use("Bash", {"command": "echo from-bash > made-by-bash.txt && pwd"})]),
                   Reply([text("done")]))
        hive.admin("send", to="a", body="make the file")
        work = hive.paths.workspace("a")  # type: ignore[arg-type]
        wait_for(lambda: (work / "made-by-bash.txt").exists(), timeout=60, what="the file Bash wrote")
        wait_for(lambda: not script.replies, timeout=30, what="the turn's last request")
        mine = [r for r in fake.main_requests() if "You are a," in json.dumps(r.body.get("system"))]
        system = json.dumps(mine[0].body.get("system"))
        assert hive.admin("questions")["pending"] == [] and hive.admin("questions")["resolved"] == []
    finally:
        hive.stop()
    assert (work / "made-by-bash.txt").read_text() == "from-bash\n"
    assert str(work) in mine[-1].conversation_text()  # pwd: the workspace is its working dir
    assert f"Your workspace is {work}" in system and "hive/a" in system
    assert "Tools (sandbox mode)" in system and "You run in a sandbox" in system


def test_allowlist_mode_offers_the_model_no_builtin_tool_it_was_not_given(tmp_path: Path, fake: FakeAnthropic,
                                                                          script: Script) -> None:
    """Allowlist mode means the allowlist: the CLI's own read-only rules (``cat``,
    ``ls`` in the working dir run with no approval) do not apply, because the
    built-in tools it offers are only the ones named in ``allowed_tools``
    (``--tools``). Unsandboxed, the default names none: no Bash, no Read."""
    hive = Hive(tmp_path / "state", ["--sandbox", "off", "--driver", "claude"], env=fake.env()).start()
    try:
        hive.spawn("a")
        work = hive.paths.workspace("a")  # type: ignore[arg-type]
        (work / "private.txt").write_text("the-secret-is-7f3a\n")
        script.add(Reply([tool_use("Bash", {"command": "cat private.txt"})]),
                   Reply([tool_use("Read", {"file_path": str(work / "private.txt")})]),
                   Reply([text("turn over")]))
        hive.admin("send", to="a", body="read it")
        wait_for(lambda: not script.replies, timeout=60, what="the turn's last request")
        mine = [r for r in fake.main_requests() if "You are a," in json.dumps(r.body.get("system"))]
    finally:
        hive.stop()
    offered = {t.get("name") for t in mine[0].body.get("tools") or []}
    assert offered and all(str(n).startswith("mcp__hyperhive__") for n in offered), sorted(map(str, offered))
    assert "the-secret-is-7f3a" not in mine[-1].conversation_text()
