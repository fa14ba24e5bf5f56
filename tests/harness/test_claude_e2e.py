"""The claude driver end to end: the real Claude Code CLI, a real harness
subprocess on a real daemon's agent socket, and the scripted Anthropic server
on loopback (issue 7, acceptance 1, 2, 3 and 6)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import HarnessProc, claude_env, take_over
from fake_anthropic import FakeAnthropic, Reply, text, tool_use
from support import Hive, pid_alive, wait_for

pytestmark = [
    pytest.mark.e2e,  # a daemon, harnesses and the real claude CLI
    pytest.mark.skipif(shutil.which("claude") is None, reason="needs the Claude Code CLI (.ci/run)"),
]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as f:
        yield f


def _wrapper(path: Path, body: str) -> Path:
    """An executable shell script standing in front of the real CLI."""
    path.write_text("#!/bin/sh\n" + body + f'\nexec {shutil.which("claude")} "$@"\n')
    path.chmod(0o755)
    return path


def _claude_pids(h: HarnessProc) -> list[int]:
    pids = []
    for line in h.log_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "claude.start":
            pids.append(int(rec["pid"]))
    return pids


def test_turn_sends_to_b_b_replies_and_the_next_turn_sees_it(hive: Hive, fake: FakeAnthropic,
                                                            tmp_path: Path) -> None:
    take_over(hive, "a")
    hive.spawn("b")  # builtin: answers every message
    fake.set_script([
        Reply([text("I will ping b."), tool_use("mcp__hyperhive__send", {"to": "b", "body": "ping from a"})]),
        Reply([text("sent; now I wait for b")]),
        Reply([text("b answered, all good")]),
    ])
    # The wrapper records the environment the CLI really runs with.
    wrapper = _wrapper(tmp_path / "claude-env-recorder", 'env > "$HOME/claude-env.txt"')
    a = HarnessProc(hive, "a", "claude", claude_env(fake.env(), HYPERHIVE_CLAUDE=str(wrapper))).start()
    try:
        hive.admin("send", to="a", body="please ping b")
        a.wait(lambda: a.kinds().count("turn_end") >= 2, timeout=40, what="a's two turns")
        history = a.get("/events/history")["events"]
    finally:
        a.stop()

    main = fake.main_requests()
    assert len(main) == 3
    # Turn 1: the tool call went through `hive mcp` and its result came back to the model.
    assert '"sent": true' in main[1].conversation_text()
    # Turn 2 was woken by b's reply (the harness's recv) and resumed the same conversation.
    second_turn = main[2].conversation_text()
    assert '[builtin reply from b] you said: "ping from a"' in second_turn
    assert "please ping b" in second_turn and "I will ping b." in second_turn
    assert "You are a, one agent of a hyperhive swarm." in json.dumps(main[0].body["system"])

    kinds = [e["kind"] for e in history]
    uses = [e["data"] for e in history if e["kind"] == "tool_use"]
    results = [e["data"] for e in history if e["kind"] == "tool_result"]
    assert uses == [{"id": uses[0]["id"], "name": "mcp__hyperhive__send", "input": {"to": "b", "body": "ping from a"}}]
    assert results[0]["tool_use_id"] == uses[0]["id"] and not results[0]["is_error"]
    assert json.loads(results[0]["content"])["sent"] is True
    assert kinds.count("result") == 2 and "error" not in kinds
    result = next(e["data"] for e in history if e["kind"] == "result")
    assert result["usage"]["input_tokens"] > 0 and result["total_cost_usd"] > 0

    # Only loopback: every request reached the scripted server, with the traffic switches set.
    assert {(r.method, r.path.split("?")[0]) for r in fake.requests} <= {("POST", "/v1/messages"), ("HEAD", "/")}
    env = dict(line.split("=", 1) for line in (a.state_dir / "claude-env.txt").read_text().splitlines() if "=" in line)
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["DISABLE_TELEMETRY"] == "1" and env["DISABLE_AUTOUPDATER"] == "1"
    assert env["HOME"] == str(a.state_dir)
    assert env["ANTHROPIC_BASE_URL"] == fake.base_url


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_turn_runs_with_no_network_at_all(hive: Hive, tmp_path: Path) -> None:
    """The same turn inside a network namespace with only `lo`: the API is
    reached over a bound unix socket, so nothing else can have been used."""
    probe = subprocess.run(["bwrap", "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                            "--unshare-net", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"bwrap cannot unshare the network here: {probe.stderr.decode()[:200]}")
    sock = tmp_path / "api.sock"
    take_over(hive, "a")
    hive.spawn("b")
    script = [Reply([tool_use("mcp__hyperhive__send", {"to": "b", "body": "offline ping"})]), Reply([text("done")])]
    with FakeAnthropic(script, unix_socket=sock) as fake:
        env = claude_env({"ANTHROPIC_UNIX_SOCKET": str(sock), "ANTHROPIC_BASE_URL": "http://localhost",
                          "ANTHROPIC_API_KEY": "sk-test-offline"})
        wrap = ["bwrap", "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net",
                "--die-with-parent", "--"]
        a = HarnessProc(hive, "a", "claude", env, wrap=wrap).start()
        try:
            hive.admin("send", to="a", body="go")
            a.wait_kind("turn_end", timeout=40)
            kinds = a.kinds()
        finally:
            a.stop()
        main = fake.main_requests()
    assert len(main) == 2 and '"sent": true' in main[1].conversation_text()  # the MCP send reached the daemon
    assert "tool_use" in kinds and "tool_result" in kinds and "error" not in kinds


def test_session_resumes_across_turns_and_a_harness_restart(hive: Hive, fake: FakeAnthropic) -> None:
    take_over(hive, "a")
    fake.set_script([Reply([text("reply one")]), Reply([text("reply two")])])
    env = claude_env(fake.env())
    a = HarnessProc(hive, "a", "claude", env).start()
    try:
        hive.admin("send", to="a", body="first message alpha")
        a.wait_kind("turn_end", timeout=30)
    finally:
        a.stop()
    session = (a.state_dir / "claude-session").read_text().strip()
    assert session

    a = HarnessProc(hive, "a", "claude", env).start()
    try:
        mark = a.last_id()
        hive.admin("send", to="a", body="second message beta")
        a.wait_kind("turn_end", after=mark, timeout=30)
    finally:
        a.stop()
    first, second = fake.main_requests()
    assert "first message alpha" in first.conversation_text()
    carried = second.conversation_text()
    assert "first message alpha" in carried and "reply one" in carried and "second message beta" in carried
    assert (a.state_dir / "claude-session").read_text().strip() == session


def test_a_lost_conversation_starts_a_new_one_in_the_same_turn(hive: Hive, fake: FakeAnthropic) -> None:
    take_over(hive, "a")
    gone = "3f2a4b1c-0000-4000-8000-000000000000"
    (hive.paths.state("a") / "claude-session").write_text(gone + "\n")  # type: ignore[arg-type]
    fake.set_script([Reply([text("fresh start")])])
    a = HarnessProc(hive, "a", "claude", claude_env(fake.env())).start()
    try:
        hive.admin("send", to="a", body="hello again")
        a.wait_kind("turn_end", timeout=30)
        events = a.events()
    finally:
        a.stop()
    errors = [e["data"]["error"] for e in events if e["kind"] == "error"]
    assert errors == [f"conversation {gone} is gone from {a.state_dir}; starting a new one"]
    assert [e["data"]["text"] for e in events if e["kind"] == "text"] == ["fresh start"]
    new = (a.state_dir / "claude-session").read_text().strip()
    assert new and new != gone
    [request] = fake.main_requests()
    assert "hello again" in request.conversation_text()


def test_cancel_stops_a_turn_within_2s_and_compact_shows_compacting(hive: Hive, fake: FakeAnthropic) -> None:
    take_over(hive, "a")
    stuck = threading.Event()
    fake.set_script([Reply([text("warming up")]), Reply([text("never finishes")], hold=stuck)])
    a = HarnessProc(hive, "a", "claude", claude_env(fake.env())).start()
    try:
        hive.admin("send", to="a", body="turn one")
        a.wait_kind("turn_end", timeout=30)
        mark = a.last_id()
        hive.admin("send", to="a", body="turn two, which hangs")
        a.wait(lambda: len(fake.main_requests()) == 2, what="the held request")
        assert a.get("/api/state")["state"] == "thinking"
        [_, pid] = _claude_pids(a)
        t0 = time.monotonic()
        status, resp = a.post("/cancel")
        a.wait_kind("turn_end", after=mark, timeout=5)
        took = time.monotonic() - t0
        assert status == 200 and resp["cancelled"] is True
        assert took < 2.0, f"cancel took {took:.2f}s"
        assert a.get("/api/state")["state"] == "idle"
        assert not pid_alive(pid)
        assert "cancelled" in a.kinds(after=mark)

        # /compact: Claude's own compaction on the resumed session, badge `compacting` while it runs.
        release = threading.Event()
        fake.set_script([Reply([text("turn three done")]),
                         Reply([text("<summary>we talked</summary>")], hold=release)])
        mark = a.last_id()
        hive.admin("send", to="a", body="turn three")
        a.wait_kind("turn_end", after=mark, timeout=30)
        mark = a.last_id()
        status, resp = a.post("/compact")
        assert (status, resp["queued"]) == (202, True)
        a.wait(lambda: a.get("/api/state")["state"] == "compacting", what="compacting badge")
        release.set()
        a.wait_kind("compact_end", after=mark, timeout=30)
        kinds = a.kinds(after=mark)
        assert a.get("/api/state")["state"] == "idle"
    finally:
        stuck.set()
        a.stop()
    assert kinds[:2] == ["compact_requested", "compact_start"]
    assert "compacting" in kinds and "compacted" in kinds and "error" not in kinds
    assert "Do NOT call any tools" in json.dumps(fake.main_requests()[-1].body)  # the CLI's compaction prompt


def test_malformed_line_and_nonzero_exit_are_errors_not_a_stuck_agent(hive: Hive, fake: FakeAnthropic,
                                                                    tmp_path: Path) -> None:
    take_over(hive, "a")
    flag = tmp_path / "corrupt"
    flag.touch()
    wrapper = _wrapper(tmp_path / "claude-corrupting",
                       f'if [ -e {flag} ]; then echo \'{{"type": "assistant", oops\'; fi')
    fake.set_script([Reply(status=400), Reply([text("all fine again")])])
    a = HarnessProc(hive, "a", "claude", claude_env(fake.env(), HYPERHIVE_CLAUDE=str(wrapper))).start()
    try:
        # 1. a malformed stream-json line: an error event, the turn ends, the CLI is gone.
        hive.admin("send", to="a", body="one")
        end = a.wait_kind("turn_end", timeout=30)
        err = next(e for e in a.events() if e["kind"] == "error")
        assert "malformed stream-json" in err["data"]["error"] and err["id"] < end["id"]
        [pid] = _claude_pids(a)
        assert not pid_alive(pid)
        assert a.get("/api/state")["state"] == "idle"

        # 2. the CLI exits non-zero (the API refused the request): an error event, then idle.
        os.unlink(flag)
        mark = a.last_id()
        hive.admin("send", to="a", body="two")
        end = a.wait_kind("turn_end", after=mark, timeout=30)
        errors = [e["data"] for e in a.events() if e["kind"] == "error" and e["id"] > mark]
        assert [e["error"] for e in errors] == ["claude exited with status 1"]
        assert a.get("/api/state")["state"] == "idle"

        # 3. and the agent still works.
        mark = a.last_id()
        hive.admin("send", to="a", body="three")
        a.wait_kind("turn_end", after=mark, timeout=30)
        texts = [e["data"]["text"] for e in a.events() if e["kind"] == "text" and e["id"] > mark]
        assert texts == ["all fine again"]
    finally:
        a.stop()


def test_daemon_runs_claude_agents_in_their_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --driver claude`: the daemon's own harnesses (sandboxed when bwrap
    works) run the CLI, with the API settings passed down from the daemon's env."""
    def answer(body: dict[str, object]) -> Reply:
        return Reply([text("ok from claude")])

    with FakeAnthropic(answer) as fake:
        for k, v in fake.env().items():
            monkeypatch.setenv(k, v)
        hive = Hive(tmp_path / "state", ["--driver", "claude"]).start()
        try:
            hive.spawn("a")
            assert hive.ls()["a"]["driver"] == "claude"
            state = hive.paths.state("a")  # type: ignore[arg-type]
            port = int((hive.paths.agent("a") / "port").read_text())  # type: ignore[arg-type]  # the daemon relays it
            hive.admin("send", to="a", body="are you there, a?")
            wait_for(lambda: any("are you there, a?" in r.conversation_text() for r in fake.main_requests()),
                     timeout=30, what="a's turn at the API")
            a = HarnessProc(hive, "a", "claude", {})
            a.port = port
            a.wait(lambda: any(e["kind"] == "turn_end" for e in a.get("/events/history")["events"]),
                   what="a's turn_end")
            st = a.get("/api/state")
            kinds = [e["kind"] for e in a.get("/events/history")["events"]]
            sandboxed = [e.get("sandboxed") for e in hive.log_events() if e.get("event") == "container.start"]
        finally:
            hive.stop()
    assert st["driver"] == "claude" and st["needs_login"] is False
    assert "error" not in kinds and kinds.count("turn_end") >= 1
    assert sandboxed and all(s is not None for s in sandboxed)  # the backend said how it ran them
    assert (state / "claude-session").read_text().strip()


def test_a_silent_hung_cli_is_stopped_with_an_error_not_a_stuck_agent(hive: Hive, fake: FakeAnthropic,
                                                                       tmp_path: Path) -> None:
    take_over(hive, "a")
    flag = tmp_path / "hang"
    flag.touch()
    wrapper = _wrapper(tmp_path / "claude-hanging", f"if [ -e {flag} ]; then exec sleep 600; fi")
    fake.set_script([Reply([text("awake again")])])
    # The real CLI speaks within ~2 s; the hung one never does.
    env = claude_env(fake.env(), HYPERHIVE_CLAUDE=str(wrapper), HYPERHIVE_CLAUDE_SILENCE_SECONDS="5")
    a = HarnessProc(hive, "a", "claude", env).start()
    try:
        hive.admin("send", to="a", body="are you there?")
        end = a.wait_kind("turn_end", timeout=20)
        [err] = [e for e in a.events() if e["kind"] == "error"]
        assert "printed nothing for 5 s" in err["data"]["error"] and err["id"] < end["id"]
        [pid] = _claude_pids(a)
        wait_for(lambda: not pid_alive(pid), timeout=5, what="the hung CLI gone")
        assert a.get("/api/state")["state"] == "idle"
        os.unlink(flag)
        mark = a.last_id()
        hive.admin("send", to="a", body="and now?")
        a.wait_kind("turn_end", after=mark, timeout=30)
        after = [e for e in a.events() if e["id"] > mark]
        assert [e["data"]["text"] for e in after if e["kind"] == "text"] == ["awake again"], after
    finally:
        a.stop()
