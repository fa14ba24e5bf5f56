"""Review of issue 15 (hostile agent): calls to a model the price table lacks.

The issue says calls the CLI makes outside a turn count too, and a call to
a model the price table lacks costs what the CLI reports. The spend table
counted such a call only when its turn ended, at the report (bounded by the
dearest price). So:
- outside a turn (a process the agent left behind, its shell, its own relay)
  a call to an unpriced model was never counted at all: no report ever comes;
- in a turn the calls counted for nothing until the turn's end, so the hard
  cap never stopped them, and a turn that never ended never paid;
- a turn that ended with no report (the builtin driver, a CLI that died, a
  harness gone) counted them as $0.

Any model id the API answers with that the table does not match is one: a
model released after the daemon's price table (``claude-opus-5``...).

Fixed (hyperhive/web/tables/spend.py, hyperhive/store/usage.py): outside a
turn such a call costs the dearest price the table knows, at once (cost
source "dearest"); in a turn the gate (refusal, cut) counts it at the dearest
price until the turn ends; a turn that ends with no report counts it so.

Still open (xfail below): the report itself is the agent's word
(``turn_done{cost_usd}`` on its own socket): a report of $0 makes a turn's
unpriced calls free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, Reply, text
from support import Hive, priced_hive, wait_for
from test_review15_gateway_leave import ALL_KINDS, Upstream, request_code
from test_review15_gateway_leave import pytestmark as _marks
from test_sandbox import py, run_cmd

from hyperhive.client import AsyncClient

pytestmark = _marks

UNPRICED = "claude-future-9"  # no row names it, no row is a prefix of it
DEAREST_CALL = 0.6  # 600 input tokens at the dearest price known ($1000 per million: PRICED's)


@pytest.fixture
def upstream() -> Upstream:
    u = Upstream()
    u.rules["unpriced-call"] = lambda: Reply([text("from a model nobody priced")], input_tokens=600,
                                             output_tokens=0, model=UNPRICED)
    return u


@pytest.fixture
def fake(upstream: Upstream) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(upstream) as f:
        yield f


@pytest.fixture
def hive(tmp_path: Path, fake: FakeAnthropic) -> Iterator[Hive]:
    h = priced_hive(tmp_path, fake.env(), ALL_KINDS, "--sandbox", "on").start()
    try:
        yield h
    finally:
        h.stop()


def calls_code(n: int, out: str | None = None) -> str:
    """``n`` unpriced calls one after another; their statuses printed (or written to ``out``)."""
    report = f"open({out!r}, 'w').write(repr(got))\n" if out else "print('STATUSES', got)\n"
    return request_code("unpriced-call", False,
                        f"got = []\nfor i in range({n}):\n"
                        " s = conn()\n got.append(read_until(s, b'never')[9:12].decode())\n s.close()\n" + report)


def left_behind(hive: Hive, agent: str, code: str) -> Path:
    """Start ``code`` in a process of the agent's own that outlives the turn it was started in;
    it runs once the returned path exists."""
    go = hive.paths.workspace(agent) / "go"
    later = ("import os, sys, time\nif os.fork():\n sys.exit(0)\nos.setsid()\n"
             "for fd in (0, 1, 2):\n os.close(fd)\n"
             f"while not os.path.exists({str(go)!r}):\n time.sleep(0.05)\n" + code)
    status, out = run_cmd(hive, agent, py(later))
    wait_for(lambda: hive.ls()[agent]["parked"]["system"] >= 1 or None, timeout=30, what="its turn over")
    return go


def view(hive: Hive, agent: str) -> dict[str, float]:
    for row in hive.admin("usage", since="all")["agents"]:
        if row["name"] == agent:
            return {"cost": float(row["cost_usd"]), "today": float(row["today_usd"])}
    return {"cost": 0.0, "today": 0.0}


def test_unpriced_calls_outside_a_turn_count_and_stop_at_the_budget(hive: Hive) -> None:
    hive.spawn("free", budget_usd=1.0)
    results = hive.paths.workspace("free") / "statuses.txt"
    go = left_behind(hive, "free", calls_code(3, str(results)))
    go.write_text("")
    got = wait_for(lambda: results.read_text() if results.exists() else None, timeout=30, what="its calls")
    # $0.60 each at the dearest price: the second takes it over its $1.00, the third is refused.
    assert got == "['200', '200', '400']", got
    assert view(hive, "free")["today"] == pytest.approx(2 * DEAREST_CALL)
    wait_for(lambda: view(hive, "free")["cost"] == pytest.approx(2 * DEAREST_CALL) or None, timeout=10,
             what="the calls in hive usage")


def test_unpriced_calls_in_a_turn_stop_at_the_hard_cap_and_count_with_no_report(hive: Hive) -> None:
    hive.spawn("free", budget_usd=1.0)
    status, out = run_cmd(hive, "free", py(calls_code(5)))  # the builtin driver reports no cost
    # $0.60, $1.20, $1.80 (over its $1.50 hard cap): the fourth and fifth are refused.
    assert "STATUSES ['200', '200', '200', '400', '400']" in out, out
    wait_for(lambda: view(hive, "free")["today"] == pytest.approx(3 * DEAREST_CALL) or None, timeout=30,
             what="its turn's calls counted when it ended")
    wait_for(lambda: view(hive, "free")["cost"] == pytest.approx(3 * DEAREST_CALL) or None, timeout=10,
             what="the calls in hive usage")


@pytest.mark.xfail(strict=True, reason=(
    "the cost of a turn's unpriced calls is the agent's own report (turn_done cost_usd on its socket): $0 "
    "makes them free. Fix (hyperhive/web/tables/spend.py turn_ended): count them at the dearest price known "
    "whatever the report says (the report stays a cross-check beside it, as the issue has it for priced calls), "
    "or let the operator price the model (--prices); a spec decision, so not made here."))
def test_a_report_of_nothing_does_not_make_unpriced_calls_free(hive: Hive) -> None:
    hive.spawn("liar")
    results = hive.paths.workspace("liar") / "statuses.txt"
    go = left_behind(hive, "liar", calls_code(3, str(results)))

    async def turn() -> None:
        c = AsyncClient(hive.socket("liar"))  # its own socket, a second connection beside its harness's
        try:
            assert (await c.request("turn_slot"))["granted"] is True
            go.write_text("")
            await asyncio.to_thread(wait_for, lambda: results.exists() or None, 30, 0.02, "its calls")
            await c.request("turn_done", cost_usd=0.0)
        finally:
            await c.close()

    asyncio.run(turn())
    assert results.read_text() == "['200', '200', '200']"
    assert view(hive, "liar")["today"] >= 3 * DEAREST_CALL - 1e-9
