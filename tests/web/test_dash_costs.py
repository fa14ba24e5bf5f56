"""Costs on the operator surfaces (issue 15), on the test's real IOLoop with a
real Ledger on a temp sqlite file and the real spend table: each dashboard
row's cost cell and sparkline, the fleet's, the ``over-budget`` badge (also in
``hive ls``'s rows and table), and gateway.usage events repainting rows at a
throttled rate. Stand-ins: the Coordinator's ``ls`` and the Broker's ``stats``
(plain answers, as tests/web/test_observe.py has them)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka
import pytest
from peewee import Database
from support import async_wait_for
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import Handle
from hyperhive.actors.events import BudgetRaised, ContainerActivity, GatewayUsage, Hub
from hyperhive.actors.ledger import Ledger
from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.badges import OVER_BUDGET, spend_badges
from hyperhive.budgets import Budget
from hyperhive.cli_ls import TODAY_COLUMN, format_ls
from hyperhive.costs import Costs
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.pricing import Price
from hyperhive.store.models import open_hive_db
from hyperhive.web.dashboard.push import Pusher, cost_delay
from hyperhive.web.dashboard.state import StateSource
from hyperhive.web.operator.budgets import BudgetService
from hyperhive.web.rpc.ls_view import build_container_list
from hyperhive.web.tables.spend import Spend

MODEL = "claude-dash-test"
PRICES = {MODEL: Price.of(1000.0, 0.0)}  # $0.001 per input token: 420 tokens are $0.42


class Answer:
    """A pykka proxy method as ``bridge.call`` uses it: ``defer(..., reply=future)``."""

    def __init__(self, value: Callable[[], Any]) -> None:
        self.value = value

    def defer(self, *args: Any, reply: cf.Future[Any], **kwargs: Any) -> None:
        reply.set_running_or_notify_cancel()
        reply.set_result(self.value())


class Actor:
    def __init__(self, **methods: Callable[[], Any]) -> None:
        for name, fn in methods.items():
            setattr(self, name, Answer(fn))


class Client:
    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.at: list[float] = []  # when each came (the IOLoop's clock, which the throttle keeps)

    def write_message(self, data: str) -> None:
        self.got.append(json.loads(data))
        self.at.append(IOLoop.current().time())


def snap(name: str, role: str = "agent") -> ContainerSnapshot:
    return ContainerSnapshot(name=name, role=role, state="running", pid=7, sandboxed=True)  # type: ignore[arg-type]


def source_of(paths: StatePaths, snaps: list[ContainerSnapshot], costs: Costs | None = None,
              usage_of: Callable[[AgentName], Any] | None = None) -> StateSource:
    """The dashboard's state source on the stand-ins (Coordinator, Broker; no Questions, Approvals)."""
    coordinator: Any = Actor(ls=lambda: snaps)
    broker: Any = Actor(stats=lambda: {"parked": {}, "undelivered": {}})
    none: Any = None
    return StateSource(paths, coordinator, broker, none, none, costs=costs, usage_of=usage_of)


@dataclass
class World:
    db: Database
    ledger: pykka.ActorProxy[Ledger]
    spend: Spend
    costs: Costs
    source: StateSource
    limits: dict[str, Budget]
    usage_reads: list[str]

    def call(self, agent: str, tokens: int) -> None:
        """One model call through the gateway, as the daemon's on_usage reports it (on the loop)."""
        self.spend.record(agent, {"model": MODEL, "input_tokens": tokens, "output_tokens": 0, "status": 200})

    async def rows(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in (await self.source.sections(["containers"]))["containers"]}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    paths = StatePaths(tmp_path / "state")
    for name in ("alice", "bob"):
        paths.create_agent(AgentName(name), AgentConfig())
    db = open_hive_db(paths.db)
    ledger = Ledger.start(db).proxy()
    book = Handle(ledger)
    limits = {"alice": Budget(1.0, "day")}
    spend = Spend(PRICES, limits.get, None, record=lambda row: book.tell(Ledger.record_call, row))
    costs = Costs(ledger, spend, BudgetService(paths, spend, Hub(), None), lambda: None)
    snaps = [snap("alice"), snap("bob"), snap("m1nd", "manager")]
    reads: list[str] = []

    def usage_of(name: AgentName) -> dict[str, int]:  # the backend's cgroup figures: a file read each
        reads.append(name)
        return {"memory_bytes": 1, "memory_peak_bytes": 2, "pids": 3}

    source = source_of(paths, snaps, costs, usage_of)
    try:
        yield World(db, ledger, spend, costs, source, limits, reads)
    finally:
        ledger.actor_ref.stop(block=True, timeout=10)
        db.close()


def bar_count(svg: str) -> int:
    return svg.count('class="bar"')


async def test_rows_carry_today_the_budget_and_a_sparkline(world: World) -> None:
    rows = await world.rows()
    assert rows["bob"]["cost"]["today"] == "$0.00" and bar_count(rows["bob"]["cost"]["spark"]) == 0
    assert rows["alice"]["cost"]["budget_text"] == "$0.00/$1.00 per day"
    world.call("alice", 420)
    world.call("bob", 10)
    rows = await world.rows()  # the Ledger has the rows: its tells came first
    alice = rows["alice"]["cost"]
    assert alice["today"] == "$0.42" and alice["standing"] == "ok" and not alice["over_budget"]
    assert alice["budget_text"] == "$0.42/$1.00 per day" and alice["last_24h"] == "$0.42"
    assert bar_count(alice["spark"]) == 1 and "alice: $0.42 in the last 24 h" in alice["spark"]
    assert rows["bob"]["cost"]["today"] == "$0.01" and rows["bob"]["cost"]["budget"] is None
    assert OVER_BUDGET not in rows["alice"]["badges"]
    fleet = (await world.source.sections(["fleet"]))["fleet"]
    assert fleet["today"] == "$0.43" and fleet["budget"] is None and bar_count(fleet["spark"]) == 1
    assert "the fleet: $0.43 in the last 24 h" in fleet["spark"]


async def test_over_budget_shows_its_badge_and_standing(world: World) -> None:
    world.call("alice", 850)
    assert (await world.rows())["alice"]["cost"]["standing"] == "warn"
    world.call("alice", 200)  # $1.05 of $1.00
    rows = await world.rows()
    cell = rows["alice"]["cost"]
    assert cell["standing"] == "over" and cell["over_budget"] and cell["budget_text"] == "$1.05/$1.00 per day"
    assert rows["alice"]["badges"] == [OVER_BUDGET] and rows["bob"]["badges"] == []
    world.limits["alice"] = Budget(2.0, "day")  # raised
    world.spend.changed("alice")
    (row,) = await world.source.container_rows([snap("alice").to_wire()])
    assert row["badges"] == [] and row["cost"]["standing"] == "ok"


async def test_the_fleets_budget_puts_every_agent_over(world: World) -> None:
    world.spend.fleet = Budget(0.5, "day")
    world.call("bob", 600)
    rows = await world.rows()
    assert all(OVER_BUDGET in rows[n]["badges"] for n in ("alice", "bob", "m1nd"))
    fleet = (await world.source.sections(["fleet"]))["fleet"]
    assert fleet["over_budget"] and fleet["standing"] == "over" and fleet["budget_text"] == "$0.60/$0.50 per day"


async def test_without_the_cost_parts_rows_have_no_cost_and_no_fleet(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "state")
    source = source_of(paths, [snap("m1nd", "manager")])
    out = await source.sections(["containers", "fleet"])
    assert out["fleet"] is None and out["containers"][0]["cost"] is None


async def test_the_series_is_read_once_until_a_call(world: World) -> None:
    costs = world.source.costs
    assert costs is not None
    asked: list[float] = []
    real = costs._ledger

    class Counting:
        async def ask(self, method: Any, *args: Any) -> Any:
            asked.append(time.time())
            return await real.ask(method, *args)

    costs._ledger = Counting()  # type: ignore[assignment]
    await world.rows()
    await world.rows()
    await world.source.sections(["fleet"])
    assert len(asked) == 2  # one load: the series and the summary
    world.call("alice", 1)  # the fleet's total moved: read again
    await world.rows()
    assert len(asked) == 4
    world.call("alice", 0)  # no cost: nothing new
    await world.rows()
    assert len(asked) == 4


# --- the push: gateway.usage repaints, throttled ------------------------------------------------
@pytest.mark.parametrize(("last", "now", "delay"), [(None, 5.0, 0.0), (4.0, 5.0, 1.0), (1.0, 5.0, 0.0),
                                                    (5.0, 5.0, 2.0)])
def test_cost_delay(last: float | None, now: float, delay: float) -> None:
    assert cost_delay(last, now, 2.0) == delay


async def test_calls_repaint_the_row_and_the_fleet_at_a_throttled_rate(world: World) -> None:
    await world.rows()  # the mirror and the files' cache, as the dashboard's first state request fills them
    reads = len(world.usage_reads)
    interval = 0.05
    pusher = Pusher(IOLoop.current(), world.source, cost_interval=interval)
    client = Client()
    pusher.clients.add(client)  # type: ignore[arg-type]
    try:
        world.call("alice", 100)
        start = IOLoop.current().time()  # the first repaint cannot come before this
        pusher.on_event(GatewayUsage("alice", {"model": MODEL}))
        await async_wait_for(lambda: client.got, interval=0.001, what="the first repaint (at once)")
        [patch] = client.got
        assert [r["name"] for r in patch["rows"]] == ["alice"] and patch["rows"][0]["cost"]["today"] == "$0.10"
        assert patch["sections"]["fleet"]["today"] == "$0.10"
        # A burst from two agents: one repaint, after the interval, with both rows.
        for i in range(20):
            world.call("alice" if i % 2 else "bob", 10)
            pusher.on_event(GatewayUsage("alice" if i % 2 else "bob", {"model": MODEL}))
        await async_wait_for(lambda: len(client.got) == 2, interval=0.001, what="the throttled repaint")
        assert client.at[1] - start >= interval - 0.001  # at least the interval after the first
        second = client.got[1]
        assert sorted(r["name"] for r in second["rows"]) == ["alice", "bob"]
        rows = {r["name"]: r["cost"] for r in second["rows"]}
        assert rows["alice"]["today"] == "$0.20" and rows["bob"]["today"] == "$0.10"
        assert second["sections"]["fleet"]["today"] == "$0.30"
        assert bar_count(rows["bob"]["spark"]) == 1  # the series was read again
        await async_wait_for(lambda: pusher._cost_timer is None, what="the timer done")
        assert len(client.got) == 2
        assert len(world.usage_reads) == reads  # a repaint for costs alone reads no file
    finally:
        pusher.close()


async def test_budget_events_repaint_the_row_or_for_the_fleet_every_row(world: World) -> None:
    await world.source.snapshots()
    pusher = Pusher(IOLoop.current(), world.source)
    client = Client()
    pusher.clients.add(client)  # type: ignore[arg-type]
    pusher.on_event(BudgetRaised("alice", 2.0, "day", 1.0))
    await async_wait_for(lambda: client.got, what="alice's repaint")
    assert [r["name"] for r in client.got[0]["rows"]] == ["alice"] and "fleet" in client.got[0]["sections"]
    pusher.on_event(BudgetRaised("", 2.0, "day", 1.0))
    await async_wait_for(lambda: len(client.got) == 2, what="every row")
    assert {"containers", "fleet"} <= set(client.got[1]["sections"])  # (storage rides with the containers)
    pusher.on_event(ContainerActivity("bob"))  # the budget service's standing change
    await async_wait_for(lambda: len(client.got) == 3, what="bob's row")
    assert [r["name"] for r in client.got[2]["rows"]] == ["bob"] and "cost" in client.got[2]["rows"][0]


# --- hive ls ------------------------------------------------------------------------------------
def test_ls_rows_get_the_spend_view_and_the_badge() -> None:
    snaps = [{**snap("bob").to_wire(), "badges": ["needs-login"]}, snap("alice").to_wire()]
    views = {"alice": {"today_usd": 0.42, "standing": "ok", "over_budget": False},
             "bob": {"today_usd": 1.5, "standing": "over", "over_budget": True,
                     "budget": {"usd": 1.0, "per": "day", "spent_usd": 1.5}}}
    rows = {r["name"]: r for r in build_container_list(snaps, {}, costs=views)}
    assert rows["bob"]["badges"] == ["needs-login", OVER_BUDGET] and rows["bob"]["cost"] == views["bob"]
    assert rows["alice"].get("badges", []) == [] and rows["alice"]["cost"]["today_usd"] == 0.42
    plain = build_container_list(snaps, {})
    assert all("cost" not in r for r in plain)
    assert spend_badges(None) == [] and spend_badges({"over_budget": False}) == []

    table = format_ls(list(rows.values())).splitlines()
    header = table[0].split()
    assert header[-2:] == [TODAY_COLUMN, "BADGES"]
    at = table[0].index(TODAY_COLUMN)
    assert table[1][at:].split() == ["$0.42", "-"]
    assert table[2][at:].split() == ["$1.50", "needs-login,over-budget"]
    assert TODAY_COLUMN not in format_ls(plain)  # a daemon that counts no costs: the old table
