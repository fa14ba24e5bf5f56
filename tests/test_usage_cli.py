"""The usage verb (issue 15) without a daemon: the window's grammar, the reply
built from a real Ledger on a temp hive.sqlite and a real spend table, and
`hive usage`'s table."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka
import pytest
from peewee import Database

from hyperhive.actors.bridge import Handle
from hyperhive.actors.events import Hub
from hyperhive.actors.ledger import Ledger
from hyperhive.budgets import Budget, window_start
from hyperhive.cli import _parser
from hyperhive.cli_usage import FLEET_ROW, USAGE_COLUMNS, format_usage
from hyperhive.costs import Costs
from hyperhive.errors import BadRequest
from hyperhive.paths import StatePaths
from hyperhive.pricing import DEFAULT_PRICES, cost_usd, price_for
from hyperhive.spend_core import KEEP_SECONDS
from hyperhive.store import usage as store
from hyperhive.store.models import open_hive_db
from hyperhive.store.usage import CallRow
from hyperhive.web.operator.budgets import BudgetService
from hyperhive.web.operator.usage import build_usage, parse_since, usage
from hyperhive.web.tables.spend import Spend

SONNET = "claude-sonnet-4-5-20250929"
HOUR, DAY = 3600.0, 86400.0


# --- the window's grammar ---------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("all", None), ("24h", DAY), ("1h", HOUR), ("7d", 7 * DAY), ("30d", 30 * DAY), ("90d", 90 * DAY),
    ("3660d", 3660 * DAY), ("87840h", 87840 * HOUR),
])
def test_since_takes_all_or_hours_or_days(text: str, seconds: float | None) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", [
    "", "24", "h", "0h", "0d", "01d", "-1d", "1.5h", "1w", "24H", "7D", " 24h", "24h ", "ALL", "all ",
    "1h1d", "3661d", "9999999d", "２４h", "24h\n",
])
def test_any_other_window_is_refused_with_the_grammar(text: str) -> None:
    with pytest.raises(BadRequest, match="since must be 'all' or a whole number of hours or days, like 24h or 7d"):
        parse_since(text)


# --- the reply, from a real Ledger ------------------------------------------------------

@dataclass
class World:
    db: Database
    ledger: pykka.ActorProxy[Ledger]
    costs: Costs

    def call(self, agent: str, at: float, model: str | None, tokens: dict[str, int], cost: float | None,
             turn: int | None = None) -> None:
        store.insert_call(self.db, CallRow(agent, at, model, tokens, cost, turn, 200))


LIMITS = {"alice": Budget(5.0, "day"), "bob": Budget(1.0, "total")}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    db = open_hive_db(tmp_path / "hive.sqlite")
    ledger = Ledger.start(db).proxy()
    book = Handle(ledger)
    spend = Spend(DEFAULT_PRICES, LIMITS.get, Budget(50.0, "week"),
                  record=lambda row: book.tell(Ledger.record_call, row))
    budgets = BudgetService(StatePaths(tmp_path / "state"), spend, Hub(), Budget(50.0, "week"))
    try:
        yield World(db, ledger, Costs(ledger, spend, budgets, lambda: None))
    finally:
        ledger.actor_ref.stop(block=True, timeout=10)
        db.close()


def priced(usage: dict[str, int]) -> float:
    price = price_for(SONNET, DEFAULT_PRICES)
    assert price is not None
    return cost_usd(usage, price)


def cols(input: int, output: int, cache_read: int = 0, cache_write: int = 0) -> dict[str, int]:  # noqa: A002
    return {"input_tokens": input, "output_tokens": output, "cache_read_tokens": cache_read,
            "cache_write_tokens": cache_write}


async def test_the_reply_sums_each_agents_calls_over_the_window(world: World) -> None:
    now = time.time()
    hour_ago = now - HOUR
    old_cost = priced({"input_tokens": 100, "output_tokens": 10})
    world.call("alice", hour_ago, SONNET, cols(1000, 200, 5000, 300), priced({
        "input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 5000,
        "cache_creation_input_tokens": 300}))
    world.call("alice", now - 2 * DAY, SONNET, cols(100, 10), old_cost)
    world.call("bob", now - 3 * DAY, SONNET, cols(100, 10), old_cost)  # a budget, nothing in the last day
    world.call("dave", now - 3 * DAY, SONNET, cols(100, 10), old_cost)  # no budget, nothing in the last day
    # carol's model is not in the table: its cost is the CLI's report at the turn's end.
    store.start_turn(world.db, 1, "carol", now - 700)
    world.call("carol", now - 600, "house-model-1", cols(40, 4), None, turn=1)
    store.end_turn(world.db, 1, now - 500, 0.25, extra=0.25)  # the spend table's share of the report
    # The daemon's boot: the spend table starts from the record; then the gateway reports a call.
    world.costs.spend.load(await Handle(world.ledger).ask(Ledger.load, time.time() - KEEP_SECONDS))
    live = {"model": SONNET, "input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0, "status": 200}
    world.costs.spend.record("alice", live)

    reply = await usage(world.costs, "24h")
    assert reply["since"] == "24h"
    assert [a["name"] for a in reply["agents"]] == ["alice", "bob", "carol"]
    alice, bob, carol = reply["agents"]
    recent_cost = priced({"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 5000,
                          "cache_creation_input_tokens": 300})
    assert alice["calls"] == 2 and alice["turns"] == 0
    assert alice["tokens"] == {"input": 1007, "output": 203, "cache_read": 5000, "cache_write": 300}
    assert alice["cost_usd"] == pytest.approx(recent_cost + priced(live), abs=1e-6)
    assert alice["cost_reported"] is False and alice["unpriced_calls"] == 0
    today = priced(live) + (recent_cost if hour_ago >= window_start("day", now) else 0.0)
    assert alice["today_usd"] == pytest.approx(today, abs=1e-6)
    assert alice["budget"] == {"usd": 5.0, "per": "day", "spent_usd": pytest.approx(today, abs=1e-6)}
    assert alice["standing"] == "ok" and alice["over_budget"] is False
    assert bob == {"name": "bob", "calls": 0, "turns": 0,
                   "tokens": {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}, "cost_usd": 0.0,
                   "cost_reported": False, "unpriced_calls": 0, "today_usd": 0.0,
                   "budget": {"usd": 1.0, "per": "total", "spent_usd": pytest.approx(old_cost, abs=1e-6)},
                   "standing": "ok", "over_budget": False}
    assert carol["calls"] == 1 and carol["turns"] == 1 and carol["cost_reported"] is True
    assert carol["cost_usd"] == pytest.approx(0.25) and carol["budget"] is None
    fleet = reply["fleet"]
    assert fleet["calls"] == 3 and fleet["turns"] == 1 and fleet["cost_reported"] is True
    assert fleet["tokens"] == {"input": 1047, "output": 207, "cache_read": 5000, "cache_write": 300}
    assert fleet["cost_usd"] == pytest.approx(alice["cost_usd"] + carol["cost_usd"], abs=1e-6)
    assert fleet["budget"]["usd"] == 50.0 and fleet["budget"]["per"] == "week"

    week = await usage(world.costs, "7d")
    assert [(a["name"], a["calls"]) for a in week["agents"]] == [("alice", 3), ("bob", 1), ("carol", 1), ("dave", 1)]
    assert week["fleet"]["tokens"]["input"] == 1047 + 300
    every = await usage(world.costs, "all")
    assert every["fleet"]["calls"] == 6


async def test_all_counts_what_the_sweep_archived(world: World) -> None:
    now = time.time()
    world.call("alice", now - 100 * DAY, SONNET, cols(500, 50, 10, 20), 0.5)
    world.call("alice", now - HOUR, SONNET, cols(1, 1), 0.25)
    assert await Handle(world.ledger).ask(Ledger.sweep, now - 90 * DAY) == 1
    [alice] = (await usage(world.costs, "all"))["agents"]
    assert alice["calls"] == 2 and alice["cost_usd"] == pytest.approx(0.75)
    assert alice["tokens"] == {"input": 501, "output": 51, "cache_read": 10, "cache_write": 20}
    [recent] = (await usage(world.costs, "24h"))["agents"]
    assert recent["calls"] == 1


async def test_a_bad_window_is_refused_before_the_ledger_is_asked(world: World) -> None:
    with pytest.raises(BadRequest):
        await usage(world.costs, "a week")


def test_an_empty_record_has_a_fleet_of_zeros() -> None:
    reply = build_usage("24h", {}, {}, {"today_usd": 0.0, "standing": "ok", "over_budget": False})
    assert reply == {"since": "24h", "agents": [], "fleet": {
        "calls": 0, "turns": 0, "tokens": {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0},
        "cost_usd": 0.0, "cost_reported": False, "unpriced_calls": 0, "today_usd": 0.0, "budget": None,
        "standing": "ok", "over_budget": False}}


# --- hive usage's table -------------------------------------------------------------------

def row(name: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": name, "calls": 0, "turns": 0, "cost_usd": 0.0, "cost_reported": False,
                            "unpriced_calls": 0, "today_usd": 0.0, "budget": None, "standing": "ok",
                            "over_budget": False,
                            "tokens": {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}}
    return {**base, **kw}


def test_the_table_has_a_row_per_agent_and_the_fleets_total() -> None:
    reply = {"since": "7d", "agents": [
        row("alice", calls=12, turns=3, cost_usd=1.23456, today_usd=0.5,
            tokens={"input": 12345, "output": 678, "cache_read": 1000000, "cache_write": 9},
            budget={"usd": 5.0, "per": "day", "spent_usd": 0.5}),
        row("bob", calls=1, turns=1, cost_usd=0.1, cost_reported=True, standing="over", over_budget=True,
            budget={"usd": 0.05, "per": "total", "spent_usd": 0.1}),
    ], "fleet": row(FLEET_ROW, calls=13, turns=4, cost_usd=1.33456, cost_reported=True,
                    tokens={"input": 12345, "output": 678, "cache_read": 1000000, "cache_write": 9},
                    budget={"usd": 50.0, "per": "week", "spent_usd": 1.3})}
    lines = format_usage(reply).splitlines()
    assert lines[0] == "usage over the last 7d"
    assert lines[1].split("  ")[0] == "AGENT" and all(c in lines[1] for c in USAGE_COLUMNS)
    alice, bob, fleet = lines[2], lines[3], lines[4]
    assert alice.startswith("alice") and "12,345" in alice and "1,000,000" in alice and "$1.2346" in alice
    assert alice.endswith("$0.50 of $5.00 per day")
    assert "$0.1000*" in bob and bob.endswith("$0.10 of $0.05 in all (over budget)")
    assert fleet.startswith(FLEET_ROW) and fleet.endswith("$1.30 of $50.00 per week") and "13" in fleet
    assert lines[5].startswith("* includes the cost the CLI reported")
    # Columns line up: every number ends where its header does.
    for header in ("CALLS", "INPUT", "COST"):
        end = lines[1].index(header) + len(header)
        assert all(line[end - 1] != " " for line in lines[2:5]), header


def test_an_empty_window_says_so() -> None:
    out = format_usage({"since": "all", "agents": [], "fleet": row(FLEET_ROW)})
    assert out.splitlines()[:2] == ["usage over all time", "(no model calls)"]
    assert out.splitlines()[-1].startswith(FLEET_ROW)


def test_the_verb_takes_since_and_json() -> None:
    ns = _parser().parse_args(["usage", "--since", "7d", "--json"])
    assert (ns.cmd, ns.since, ns.json) == ("usage", "7d", True)
    assert _parser().parse_args(["usage"]).since == "24h"
