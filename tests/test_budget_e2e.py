"""Budgets end to end (issue 15, acceptance 2–4): the real Claude Code CLI in
its sandbox on a real daemon, the scripted API server returning known usage
at a known price (``--prices``), the operator answering on the admin socket.
Every check is made on what the daemon and the server saw: the server's
requests, the daemon's questions, its log, the broker's counts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, Reply, text
from support import Hive, priced_hive, wait_for

pytestmark = [
    pytest.mark.e2e,  # a daemon, harnesses and the real claude CLI
    pytest.mark.skipif(shutil.which("claude") is None, reason="needs the Claude Code CLI (.ci/run)"),
]

PRICED = "claude-budget-test"  # the model the scripted answers name: $1 per 1000 tokens of any kind
ALL_KINDS = {PRICED: {"input": 1000.0, "output": 1000.0, "cache_read": 1000.0, "cache_write": 1000.0}}


class Script:
    """Per agent, its answers in order (others, m1nd's included, get a plain cheap one)."""

    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.served: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, agent: str, *replies: Reply) -> None:
        with self.lock:
            self.replies.setdefault(agent, []).extend(replies)

    def __call__(self, body: dict[str, Any]) -> Reply:
        system = json.dumps(body.get("system"))
        with self.lock:
            for agent, queue in self.replies.items():
                if body.get("tools") and f"You are {agent}," in system:
                    self.served[agent] = self.served.get(agent, 0) + 1
                    return queue.pop(0) if queue else Reply([text("(script exhausted)")], input_tokens=1,
                                                            output_tokens=1, model=PRICED)
        return Reply([text("ok")], input_tokens=1, output_tokens=1, model=PRICED)

    def left(self, agent: str) -> int:
        with self.lock:
            return len(self.replies.get(agent, []))


def dollars(usd: float) -> Reply:
    """One answer costing ``usd`` (input tokens only)."""
    return Reply([text(f"that cost ${usd:.2f}")], input_tokens=round(usd * 1000), output_tokens=0, model=PRICED)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def fake(script: Script) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(script) as f:
        yield f


def _hive(tmp_path: Path, fake: FakeAnthropic, *extra: str) -> Hive:
    return priced_hive(tmp_path, fake.env(), ALL_KINDS, "--driver", "claude", *extra).start()


def _budget_questions(hive: Hive) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    qs = hive.admin("questions")
    return ([q for q in qs["pending"] if q["kind"] == "budget"],
            [q for q in qs["resolved"] if q["kind"] == "budget"])


def _held(hive: Hive, agent: str, after: int = 0) -> bool:
    """The daemon logged that ``agent``'s harness waits for its budget (no message taken)."""
    return any(e.get("event") == "spend.held" and e.get("agent") == agent for e in hive.log_events()[after:])


def _to_manager(fake: FakeAnthropic, event: str) -> bool:
    return any(event in r.conversation_text() for r in fake.main_requests()
               if "You are m1nd," in json.dumps(r.body.get("system")))


def test_a_tiny_budget_holds_the_next_turn_asks_once_and_a_raise_runs_it(tmp_path: Path, fake: FakeAnthropic,
                                                                         script: Script) -> None:
    hive = _hive(tmp_path, fake)
    try:
        hive.spawn("a", budget_usd=1.0, budget_per="day")
        # 1. Its first turn runs, and crosses the budget ($1.20 of $1.00; the hard cap is $1.50).
        script.add("a", dollars(1.20))
        hive.admin("send", to="a", body="first")
        [q] = wait_for(lambda: _budget_questions(hive)[0], timeout=60, what="the budget question")
        assert q["question"] == "a has spent $1.20 of its $1.00 budget per day"
        assert q["options"] == ["raise to $2.00", "raise by $1.00", "stop a"] and q["default"] == "stop a"
        assert q["deadline_at"] - q["asked_at"] == pytest.approx(3600, abs=5)
        assert script.served["a"] == 1
        # 2. Its next message starts no turn: the harness waits, the message stays undelivered.
        mark = len(hive.log_events())
        script.add("a", dollars(0.10))
        hive.admin("send", to="a", body="second")
        wait_for(lambda: _held(hive, "a", mark) or None, timeout=30, what="a's harness held by its budget")
        assert hive.ls()["a"]["undelivered"] == 1 and script.served["a"] == 1
        # 3. The question was asked once.
        assert len(_budget_questions(hive)[0]) == 1 and _budget_questions(hive)[1] == []
        wait_for(lambda: _to_manager(fake, "BudgetExceeded") or None, timeout=60, what="m1nd told")
        # 4. A raise lets the waiting message's turn run.
        hive.admin("answer", question_id=q["id"], chosen=["raise to $2.00"])
        wait_for(lambda: script.left("a") == 0 or None, timeout=60, what="the waiting turn")
        wait_for(lambda: hive.ls()["a"]["undelivered"] == 0 or None, timeout=30, what="the message taken")
        assert json.loads((hive.paths.agent("a") / "budget.json").read_text())["usd"] == 2.0  # type: ignore[arg-type]
        wait_for(lambda: _to_manager(fake, "BudgetRaised") or None, timeout=60, what="m1nd told of the raise")
        assert len(_budget_questions(hive)[1]) == 1 and _budget_questions(hive)[0] == []
    finally:
        hive.stop()


def test_stop_and_expiry_stop_the_agent_and_its_messages_stay(tmp_path: Path, fake: FakeAnthropic,
                                                              script: Script) -> None:
    hive = _hive(tmp_path, fake, "--budget-question-ttl-seconds", "6")
    try:
        hive.spawn("b", budget_usd=1.0)
        hive.spawn("c", budget_usd=1.0)
        for agent in ("b", "c"):
            script.add(agent, dollars(1.10))
            hive.admin("send", to=agent, body="spend it")
        wait_for(lambda: len(_budget_questions(hive)[0]) == 2 or None, timeout=60, what="both questions")
        for agent in ("b", "c"):  # their turns over (a turn stopped midway would have its message delivered again)
            wait_for(lambda a=agent: _held(hive, a) or None, timeout=60,  # type: ignore[misc]
                     what=f"{agent}'s turn over, its harness held")
            hive.admin("send", to=agent, body=f"later, {agent}")
        qb = next(q for q in _budget_questions(hive)[0] if q["asker"] == "b")
        qc = next(q for q in _budget_questions(hive)[0] if q["asker"] == "c")
        hive.admin("answer", question_id=qb["id"], chosen=["stop b"])  # b: stopped by the operator
        wait_for(lambda: hive.ls()["b"]["state"] == "stopped" or None, timeout=60, what="b stopped")
        # c: an answer that is neither a raise nor the stop stops nothing: the question is asked again.
        hive.admin("answer", question_id=qc["id"], text="hmm, not sure")
        again = wait_for(lambda: [q for q in _budget_questions(hive)[0] if q["asker"] == "c"], timeout=30,
                         what="c's question asked again")
        assert "'hmm, not sure' was neither a raise nor 'stop c'" in again[0]["question"]
        assert hive.ls()["c"]["state"] == "running"
        # Then nobody answers; the TTL's default is the stop.
        wait_for(lambda: hive.ls()["c"]["state"] == "stopped" or None, timeout=60, what="c stopped on expiry")
        resolved = {q["id"]: q for q in _budget_questions(hive)[1]}
        assert resolved[qb["id"]]["how"] == "answered" and resolved[again[0]["id"]]["how"] == "expired"
        ls = hive.ls()
        assert ls["b"]["undelivered"] == 1 and ls["c"]["undelivered"] == 1  # nothing lost
        assert script.served == {"b": 1, "c": 1}
    finally:
        hive.stop()


def test_a_fleet_budget_holds_every_agent(tmp_path: Path, fake: FakeAnthropic, script: Script) -> None:
    hive = _hive(tmp_path, fake, "--fleet-budget-usd", "1")
    try:
        hive.spawn("d")
        hive.spawn("e")  # no budget of its own
        script.add("d", dollars(1.20))
        hive.admin("send", to="d", body="spend the fleet's")
        [q] = wait_for(lambda: _budget_questions(hive)[0], timeout=60, what="the fleet's question")
        assert q["question"].startswith("the fleet has spent $1.2") and q["options"][-1] == "hold every turn"
        # e's harness was parked for its next message: released at the crossing, it waits in the gate now.
        wait_for(lambda: _held(hive, "e") or None, timeout=30, what="e held by the fleet's budget")
        script.add("e", dollars(0.01))
        hive.admin("send", to="e", body="anything")
        assert hive.ls()["e"]["undelivered"] == 1 and "e" not in script.served
        hive.admin("answer", question_id=q["id"], text="5")  # free text: the new limit in dollars
        wait_for(lambda: script.served.get("e") == 1 or None, timeout=60, what="e's turn after the raise")
        assert json.loads((hive.paths.root / "fleet-budget.json").read_text())["usd"] == 5.0
    finally:
        hive.stop()


def test_the_hard_cap_cancels_a_running_turn(tmp_path: Path, fake: FakeAnthropic, script: Script) -> None:
    hive = _hive(tmp_path, fake)
    held = threading.Event()
    try:
        hive.spawn("f", budget_usd=1.0)
        # The answer's start says $2 of input (past the $1.50 cap), then the server holds the rest.
        script.add("f", Reply([text("never finished")], input_tokens=2000, output_tokens=0, model=PRICED,
                              hold=held))
        hive.admin("send", to="f", body="run long")
        wait_for(lambda: any(e.get("event") == "gateway.cut" and e.get("agent") == "f" for e in hive.log_events())
                 or None, timeout=60, what="the gateway cutting the call at the cap")
        # The CLI's retry is refused (a 400 it does not retry): the turn ends while the server still holds.
        wait_for(lambda: hive.ls()["f"]["parked"]["system"] == 0 and _held(hive, "f") or None, timeout=90,
                 what="f's turn over and its harness held")
        assert not held.is_set()
        refused = [e for e in hive.log_events() if e.get("event") == "gateway.request" and e.get("agent") == "f"
                   and e.get("status") == 400]
        assert refused, "the call after the cap was not refused"
    finally:
        held.set()
        hive.stop()


def test_hive_usage_shows_exactly_what_the_server_returned_to_a_real_cli(tmp_path: Path, fake: FakeAnthropic,
                                                                          script: Script) -> None:
    """Acceptance 1 with the real CLI: the daemon's default driver is builtin (m1nd makes no model
    call), so every request the server answers is the claude agent's."""
    hive = priced_hive(tmp_path, fake.env(),
                       {PRICED: {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}}).start()
    try:
        aid = hive.admin("request_spawn", name="cc", driver="claude")["approval_id"]
        hive.admin("approve", approval_id=aid)
        wait_for(lambda: hive.ls().get("cc", {}).get("parked", {}).get("system", 0) >= 1 or None, timeout=60,
                 what="cc's harness")
        script.add("cc", Reply([text("counted")], input_tokens=1234, output_tokens=56, cache_read_tokens=700,
                               cache_write_tokens=90, model=PRICED))
        hive.admin("send", to="cc", body="count me")
        wait_for(lambda: script.left("cc") == 0 or None, timeout=60, what="cc's turn")

        def mine() -> dict[str, Any] | None:
            reply = json.loads(subprocess.run(
                [sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), "usage", "--json"],
                capture_output=True, text=True, timeout=60, check=True).stdout)
            cc = next((a for a in reply["agents"] if a["name"] == "cc"), None)
            sent = sum(1 for r in fake.requests if r.method == "POST")
            return cc if cc is not None and cc["calls"] == sent and cc["turns"] >= 1 else None

        cc = wait_for(mine, timeout=30, what="every call in the ledger")
        returned = [u for _body, u in fake.usages]
        want = {kind: sum(u[key] for u in returned) for kind, key in (
            ("input", "input_tokens"), ("output", "output_tokens"), ("cache_read", "cache_read_input_tokens"),
            ("cache_write", "cache_creation_input_tokens"))}
        assert cc["tokens"] == want and cc["calls"] == len(returned)
        assert cc["cost_usd"] == pytest.approx(sum(
            (u["input_tokens"] * 3 + u["output_tokens"] * 15 + u["cache_read_input_tokens"] * 0.3
             + u["cache_creation_input_tokens"] * 3.75) / 1e6 for u in returned), abs=1e-6)
        assert cc["unpriced_calls"] == 0
        metrics = hive.get("/metrics")[1].decode()
        assert f'hyperhive_tokens_total{{agent="cc",kind="cache_read",model="{PRICED}"}}' in metrics
        assert 'hyperhive_cost_usd_total{agent="cc"}' in metrics
    finally:
        hive.stop()
