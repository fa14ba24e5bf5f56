"""Review of issue 15 (hostile agent): the daemon's accounting across restarts,
and the agent's socket against its own turn bookkeeping.

What an over-budget agent could hope for from a daemon restart: its sums
reloaded short (or its spend counted twice: then another agent's fleet share
pays), its hold forgotten, its pending question lost or dead (answered after
the restart, nothing happens), or asked again. And from its own socket:
``turn_done`` with no ``turn_slot``, two ``turn_slot``s, a slot taken from a
second connection (its ``hive mcp`` also connects to ``hive.sock``) used to
keep its model calls "in a turn" while over budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, Reply, text
from support import Hive, priced_hive, wait_for
from test_review15_gateway_leave import ALL_KINDS, PRICED, Upstream, request_code
from test_review15_gateway_leave import pytestmark as _marks
from test_sandbox import py, run_cmd

from hyperhive.client import AsyncClient

pytestmark = _marks


@pytest.fixture
def upstream() -> Upstream:
    u = Upstream()
    u.rules["dollar-twenty"] = lambda: Reply([text("ok")], input_tokens=1200, output_tokens=0, model=PRICED)
    return u


@pytest.fixture
def fake(upstream: Upstream) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(upstream) as f:
        yield f


def make_hive(tmp_path: Path, fake: FakeAnthropic, *extra: str) -> Hive:
    return priced_hive(tmp_path, fake.env(), ALL_KINDS, "--sandbox", "on", *extra)


@pytest.fixture
def hive(tmp_path: Path, fake: FakeAnthropic) -> Iterator[Hive]:
    h = make_hive(tmp_path, fake).start()
    try:
        yield h
    finally:
        h.stop()


def spend_once(hive: Hive, agent: str) -> None:
    """One $1.20 call from inside its sandbox (in a turn: the builtin driver's run)."""
    code = request_code("dollar-twenty", False, "s = conn()\nprint('STATUS', read_until(s, b'never')[9:12])\n")
    status, out = run_cmd(hive, agent, py(code))
    assert "STATUS b'200'" in out, out


def budget_questions(hive: Hive) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    qs = hive.admin("questions")
    return [q for q in qs["pending"] if q["kind"] == "budget"], [q for q in qs["resolved"] if q["kind"] == "budget"]


def row(hive: Hive, agent: str) -> dict[str, Any]:
    [r] = [r for r in hive.admin("usage", since="all")["agents"] if r["name"] == agent]
    return dict(r)


def held(hive: Hive, agent: str, after: int) -> bool:
    return any(e.get("event") == "spend.held" and e.get("agent") == agent for e in hive.log_events()[after:])


def restart(hive: Hive) -> int:
    hive.stop()
    mark = len(hive.log_events())
    hive.start()
    return mark


def test_an_over_budget_agent_stays_held_across_a_restart_and_its_question_still_works(hive: Hive) -> None:
    hive.spawn("spender", budget_usd=1.0)
    spend_once(hive, "spender")
    [q] = wait_for(lambda: budget_questions(hive)[0], timeout=30, what="the budget question")
    assert row(hive, "spender")["today_usd"] == pytest.approx(1.2)
    mark = restart(hive)
    wait_for(lambda: hive.ls()["spender"]["state"] == "running" or None, timeout=30, what="spender back")
    # Its spend was reloaded once (not lost, not doubled); no second question; still held.
    assert row(hive, "spender")["today_usd"] == pytest.approx(1.2)
    assert row(hive, "spender")["cost_usd"] == pytest.approx(1.2)
    assert row(hive, "spender")["over_budget"] is True
    hive.admin("send", to="spender", body="run echo after-the-restart")
    wait_for(lambda: held(hive, "spender", mark) or None, timeout=30, what="its turn held after the restart")
    assert hive.ls()["spender"]["undelivered"] >= 1  # ours (and the boot's kick): none taken
    assert [x["id"] for x in budget_questions(hive)[0]] == [q["id"]]
    # The question asked before the restart is answered after it, and it takes.
    hive.admin("answer", question_id=q["id"], chosen=["raise to $2.00"])
    wait_for(lambda: any("after-the-restart" in m["body"] for m in hive.admin("inbox", limit=50)["messages"]
                         if m["from"] == "spender") or None, timeout=30, what="the held turn ran")
    assert row(hive, "spender")["budget"]["usd"] == 2.0


def test_a_question_that_expires_after_a_restart_still_stops_its_agent(tmp_path: Path, fake: FakeAnthropic) -> None:
    hive = make_hive(tmp_path, fake, "--budget-question-ttl-seconds", "8").start()
    try:
        hive.spawn("spender", budget_usd=1.0)
        spend_once(hive, "spender")
        [q] = wait_for(lambda: budget_questions(hive)[0], timeout=30, what="the budget question")
        restart(hive)
        assert [x["id"] for x in budget_questions(hive)[0]] == [q["id"]]
        wait_for(lambda: budget_questions(hive)[1] or None, timeout=30, what="the question expired")
        wait_for(lambda: hive.ls()["spender"]["state"] == "stopped" or None, timeout=30,
                 what="spender stopped by the expiry")
    finally:
        hive.stop()


def test_its_own_socket_cannot_unbalance_its_turns(hive: Hive, fake: FakeAnthropic) -> None:
    hive.spawn("juggler", budget_usd=1.0)

    async def juggle() -> list[Any]:
        a, b = AsyncClient(hive.socket("juggler")), AsyncClient(hive.socket("juggler"))
        try:
            out: list[Any] = [await a.request("turn_done", cost_usd=5.0)]  # no turn held
            out += [await a.request("turn_slot"), await b.request("turn_slot")]  # two, two connections
            out += [await b.request("turn_done"), await a.request("turn_done"), await a.request("turn_done")]
            return out
        finally:
            await a.close()
            await b.close()

    replies = asyncio.run(juggle())
    assert [r.get("granted", r.get("released")) for r in replies] == [True, True, True, True, True, True]
    # Nothing counted, one turn (the two slots were one turn), nothing asked.
    r = row(hive, "juggler") if any(x["name"] == "juggler" for x in hive.admin("usage", since="all")["agents"]) \
        else {"today_usd": 0.0, "turns": 0}
    assert r["today_usd"] == 0.0 and r["turns"] <= 1
    assert budget_questions(hive) == ([], [])
    # Over budget, a slot taken early on a second connection, kept: the calls go on ("a running turn
    # may finish") only up to the hard cap, whatever the connections do.
    spend_once(hive, "juggler")  # $1.20 of $1.00

    async def keep_a_turn() -> list[str]:
        c = AsyncClient(hive.socket("juggler"))
        try:
            waiting = asyncio.ensure_future(c.request("turn_slot"))  # over budget: it waits
            done, _ = await asyncio.wait([waiting], timeout=3)
            assert not done, "a turn slot granted over budget"
            waiting.cancel()
            return []
        finally:
            await c.close()

    asyncio.run(keep_a_turn())


def test_no_agent_answers_a_budget_question_and_a_look_alike_stops_nobody(hive: Hive) -> None:
    from hyperhive.errors import HiveError

    hive.spawn("spender", budget_usd=1.0)
    spend_once(hive, "spender")
    [q] = wait_for(lambda: budget_questions(hive)[0], timeout=30, what="the budget question")

    async def try_all() -> list[str]:
        out = []
        for who in ("spender", "m1nd"):
            c = AsyncClient(hive.socket(who))
            try:
                for op, fields in (("answer", {"question_id": q["id"], "chosen": ["raise to $2.00"]}),
                                   ("cancel_question", {"question_id": q["id"]})):
                    try:
                        await c.request(op, **fields)
                        out.append(f"{who} {op} taken")
                    except HiveError as err:
                        out.append(f"{who} {op} {err.code}")
                if who == "m1nd":  # the manager asks a look-alike: its answer is the manager's to read
                    fake = await c.request("ask_operator", question=q["question"], options=q["options"],
                                           ttl_seconds=2, default=q["default"])
                    out.append(f"asked {fake['question_id']}")
            finally:
                await c.close()
        return out

    got = asyncio.run(try_all())
    assert [g for g in got if "taken" in g] == [], got
    look_alike = int(got[-1].split()[1])
    hive.admin("answer", question_id=look_alike, chosen=[q["default"]])  # "stop spender"
    wait_for(lambda: any(x["id"] == look_alike for x in hive.admin("questions")["resolved"]) or None,
             what="the look-alike resolved")
    # The real question is still pending and nobody was stopped.
    assert [x["id"] for x in budget_questions(hive)[0]] == [q["id"]]
    assert not any(e.get("event") == "budget.stopping" for e in hive.log_events())
    assert hive.ls()["spender"]["state"] == "running"
