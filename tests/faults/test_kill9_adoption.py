"""Acceptance 1 of issue 16, in the fault suite: kill -9 of the daemon (its pid
alone) while agents run. A real daemon, real sandboxed harnesses, real kills.

Every harness keeps running; the next daemon on the state dir adopts each one
(same pid, no restart, no kick) within 5 s of its start, and the harness's
clients find the rebound sockets again: a message sent after the restart is
answered, a turn in flight (the builtin's `run`, a scripted Claude turn held
open mid-answer) completes and its tool call reaches the next daemon. A record
that names another process (a reused pid, one outside the agent's cgroup) is
never adopted, and one whose agent should be stopped is stopped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from adoption_support import ask, events, kept_hive, pids
from agent_harness import HarnessProc, claude_env, take_over
from fake_anthropic import FakeAnthropic, Reply, text, tool_use
from faults_common import report
from support import Hive, pid_alive, wait_for

from hyperhive.backends.local_adopt import RECORD, HarnessRecord, read_record, start_time, write_record

pytestmark = [pytest.mark.faults, pytest.mark.e2e]  # daemons killed, sandboxed harnesses adopted


@pytest.fixture
def hive(tmp_path: Path) -> Iterator[Hive]:
    yield from kept_hive(tmp_path)


def test_kill9_of_the_daemon_leaves_the_harnesses_and_the_next_daemon_adopts_them(hive: Hive) -> None:
    hive.start()
    hive.spawn("a")
    hive.spawn("b")
    before = pids(hive)
    assert set(before) == {"m1nd", "a", "b"}
    ask(hive, "a", "before the kill")
    hive.kill9()  # the daemon's pid alone
    assert all(pid_alive(p) for p in before.values()), "a harness died with its daemon"
    logged = len(hive.log_events())

    started = time.monotonic()
    hive.start()
    after = hive.ls()
    took = time.monotonic() - started
    assert {n: c["pid"] for n, c in after.items()} == before, "a harness was not adopted"
    assert all(c["state"] == "running" and c["restarts"] == 0 for c in after.values()), after
    adopted = events(hive, "container.adopted", logged)
    assert {e["agent"] for e in adopted if "pid" in e and "up_seconds" in e} == set(before)
    assert not events(hive, "container.start", logged), "a harness was started instead of adopted"
    assert took < 5, f"adopted {took:.1f}s after the new daemon's start"
    report(f"kill -9 of the daemon: {len(after)} harnesses adopted, same pids, 0 restarts, "
           f"{took:.2f} s after the new daemon's start")

    for name in ("a", "b"):  # their recv parked again on the new daemon: a message is answered
        ask(hive, name, f"after the kill, {name}")
    now = hive.ls()
    assert {n: c["pid"] for n, c in now.items()} == before and all(c["restarts"] == 0 for c in now.values())
    kicks = [m for m in hive.admin("inbox", limit=50)["messages"] if "restarted with the host daemon" in m["body"]]
    assert not kicks  # nothing happened to an adopted harness: it is not kicked


def test_a_turn_in_flight_goes_on_and_its_tool_call_reaches_the_next_daemon(hive: Hive) -> None:
    """The builtin `run` takes a few seconds; the daemon dies meanwhile. The reply
    (a send through `hive mcp`, whose connection broke) goes out once the next
    daemon is up."""
    hive.start()
    hive.spawn("a")
    pid = pids(hive)["a"]
    flag = hive.paths.workspace("a") / "go"  # type: ignore[arg-type]
    hive.admin("send", to="a", body=f"run while [ ! -e {flag} ]; do sleep 0.1; done; echo finished")
    wait_for(lambda: hive.ls()["a"].get("activity") == "thinking", timeout=20, what="a's turn running")
    hive.kill9()
    flag.touch()  # the command ends while no daemon runs: its reply send finds none
    hive.start()
    assert pids(hive)["a"] == pid

    def replied() -> bool:
        return any(m["body"].startswith("[builtin reply from a] run: exit 0")
                   and "finished" in m["body"] for m in hive.admin("inbox", limit=50)["messages"])

    wait_for(replied, timeout=40, what="the run's reply through the next daemon")
    assert hive.ls()["a"]["pid"] == pid and hive.ls()["a"]["restarts"] == 0


def test_a_record_naming_another_process_is_never_adopted(hive: Hive) -> None:
    """A reused pid (a live process of ours with another start time), and one whose
    start time matches but that is not in the agent's cgroup: neither is taken for
    the harness, neither is touched, and the agent gets a fresh harness."""
    hive.start()
    hive.spawn("a")
    hive.spawn("b")
    old = pids(hive)
    hive.kill9()
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        ticks = wait_for(lambda: start_time(stranger.pid), what="the stranger's start time")
        for name, at in (("a", ticks + 1), ("b", ticks)):  # a: a reused pid; b: right time, wrong cgroup
            path = hive.paths.agent(name) / RECORD  # type: ignore[arg-type]
            rec = read_record(path)
            assert rec is not None
            write_record(path, HarnessRecord(**{**rec.__dict__, "pid": stranger.pid, "start_time": at}))
        logged = len(hive.log_events())
        hive.start()
        now = hive.ls()
        for name in ("a", "b"):
            assert now[name]["state"] == "running" and now[name]["pid"] not in (stranger.pid, old[name])
        assert now["m1nd"]["pid"] == old["m1nd"]  # its record was left alone: adopted
        reasons = {e["agent"]: e["reason"] for e in events(hive, "container.not_adopted", logged)}
        assert "another process" in reasons["a"] and "not in the agent's cgroup" in reasons["b"], reasons
        assert stranger.poll() is None, "the stranger was killed"
        for name in ("a", "b"):  # the orphaned harnesses were ended by the fresh start (their cgroup emptied)
            wait_for(lambda n=name: not pid_alive(old[n]), timeout=10, what=f"{name}'s old harness gone")  # type: ignore[misc]
        ask(hive, "a", "a fresh harness")
    finally:
        stranger.kill()
        stranger.wait()


def test_a_harness_left_running_whose_agent_should_be_stopped_is_stopped_at_boot(hive: Hive) -> None:
    """A daemon killed in the middle of a stop (desired state stopped, harness not yet
    stopped): the next daemon stops the harness instead of adopting it."""
    import sqlite3

    hive.start()
    hive.spawn("a")
    pid = pids(hive)["a"]
    hive.kill9()
    with sqlite3.connect(hive.paths.db) as db:  # no daemon runs: as the stop verb had left it
        db.execute("UPDATE containers SET desired = 'stopped' WHERE name = 'a'")
    db.close()
    hive.start()
    wait_for(lambda: not pid_alive(pid), timeout=15, what="the orphaned harness stopped")
    assert hive.ls()["a"]["state"] == "stopped" and hive.ls()["a"]["pid"] is None
    assert not (hive.paths.agent("a") / RECORD).exists()  # type: ignore[arg-type]
    assert events(hive, "container.orphan_stopped")


@pytest.mark.skipif(shutil.which("claude") is None, reason="needs the Claude Code CLI (.ci/run)")
def test_a_claude_turn_held_open_across_the_kill_completes(hive: Hive) -> None:
    """The real CLI's turn is mid-answer (the scripted model holds it) when the
    daemon is killed; the answer then asks for a send, which `hive mcp` makes once
    the next daemon is up; the turn ends cleanly, its tool call a success."""
    hive.start()
    take_over(hive, "a")  # the test's harness (the model on loopback, straight to the fake)
    hold = threading.Event()
    body = "sent from the held turn"
    with FakeAnthropic([Reply([text("on it"), tool_use("mcp__hyperhive__send", {"to": "operator", "body": body})],
                              hold=hold), Reply([text("done")])]) as fake:
        a = HarnessProc(hive, "a", "claude", claude_env(fake.env())).start()
        try:
            hive.admin("send", to="a", body="please tell the operator")
            a.wait(lambda: fake.main_requests(), timeout=60, what="the turn's first model call (held)")
            hive.kill9()
            hold.set()  # the answer comes while no daemon runs: its tool call finds none
            hive.start()
            end = a.wait_kind("turn_end", timeout=90)
            kinds = a.kinds()
            results = [e["data"] for e in a.events() if e["kind"] == "tool_result"]
        finally:
            a.stop()
        main = fake.main_requests()
    assert end and "error" not in kinds, kinds
    assert len(results) == 1 and not results[0]["is_error"] and json.loads(results[0]["content"])["sent"] is True
    assert len(main) == 2 and '"sent": true' in main[1].conversation_text()
    inbox = hive.admin("inbox", limit=20)["messages"]
    assert [m["body"] for m in inbox if m["from"] == "a"] == [body]  # once
