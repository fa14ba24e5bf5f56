"""hyperhive.web.tables.spend (issue 15), the table itself on a real asyncio
loop with a fake clock and a price table of our own: what a call adds, what
an unpriced model's turn adds, each crossing reported once, the gateway's
refusals and cut, the turn gate (`wait_admitted`), the fleet's budget, and
a restart from the Ledger's record."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from support import local_time_zone

from hyperhive.budgets import Budget
from hyperhive.pricing import Price
from hyperhive.store.usage import CallRow, Loaded
from hyperhive.web.tables.spend import FLEET, Spend

# $1 per 1000 tokens of any kind: a call's cost is its tokens / 1000.
PRICES = {"m": Price(1000.0, 1000.0, 1000.0, 1000.0)}
HOUR = 3600.0


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    with local_time_zone("UTC"):
        yield


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class World:
    """A Spend with a clock, limits, tells and a standing listener we hold."""

    def __init__(self, fleet: Budget | None = None, *, wake_floor: float = 1.0, **limits: Budget) -> None:
        self.clock = Clock(1_718_272_800.0)  # 2024-06-13 10:00 UTC, a Thursday
        self.limits: dict[str, Budget] = dict(limits)
        self.rows: list[CallRow] = []
        self.turns: list[tuple[str, int, str, float, float | None, float]] = []
        self.standings: list[tuple[str, str, float, float]] = []
        self.spend = Spend(PRICES, self.limits.get, fleet, hard_cap_factor=1.5, record=self.rows.append,
                           turns=lambda *a: self.turns.append(a), now=self.clock,
                           wake_floor=wake_floor)
        self.spend.on_standing = lambda who, s, spent, limit: self.standings.append(
            (who, s, round(spent, 6), limit.usd))

    def call(self, agent: str, tokens: int, model: str = "m", **more: int) -> None:
        self.spend.record(agent, {"model": model, "input_tokens": tokens, "output_tokens": 0,
                                  "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "status": 200,
                                  **more})

    def levels(self, who: str = "a") -> list[str]:
        return [s for w, s, _, _ in self.standings if w == who]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# --- counting -------------------------------------------------------------------------------------------
def test_a_priced_call_is_spent_in_the_day_the_week_and_in_all_and_recorded() -> None:
    w = World()
    w.call("a", 1500, output_tokens=250, cache_read_input_tokens=100, cache_creation_input_tokens=150)
    assert w.spend.spent("a", "day") == pytest.approx(2.0)
    assert w.spend.spent("a", "week") == pytest.approx(2.0)
    assert w.spend.spent("a", "total") == pytest.approx(2.0)
    assert w.spend.spent(FLEET, "day") == pytest.approx(2.0)
    assert w.spend.spent("b", "day") == 0.0
    [row] = w.rows
    assert (row.agent, row.at, row.model, row.turn, row.status) == ("a", w.clock.t, "m", None, 200)
    assert row.tokens == {"input_tokens": 1500, "output_tokens": 250, "cache_read_tokens": 100,
                          "cache_write_tokens": 150}
    assert row.cost_usd == pytest.approx(2.0)
    assert w.spend.view("a") == {"today_usd": 2.0, "standing": "ok", "over_budget": False, "waiting": False}


def test_the_day_rolls_over_at_midnight_and_the_week_on_monday() -> None:
    w = World()
    w.call("a", 1000)
    w.clock.t = 1_718_323_200.0  # Friday 00:00
    assert (w.spend.spent("a", "day"), w.spend.spent("a", "week")) == (0.0, 1.0)
    w.call("a", 2000)
    w.clock.t = 1_718_582_400.0  # Monday 00:00
    assert (w.spend.spent("a", "day"), w.spend.spent("a", "week"), w.spend.spent("a", "total")) == (0.0, 0.0, 3.0)


def test_a_call_with_no_tokens_is_not_recorded() -> None:
    w = World()
    w.call("a", 0, status=529)
    assert w.rows == [] and w.spend.spent("a") == 0.0


def test_an_unpriced_model_counts_only_at_its_turns_end_with_what_the_report_says_beyond_the_priced() -> None:
    w = World()
    turn = w.spend.turn_started("a")
    assert w.turns == [("start", turn, "a", w.clock.t, None, 0.0)]
    w.call("a", 1000)  # priced: $1
    w.call("a", 5000, model="other-model")  # unpriced
    w.call("a", 7000, model="other-model")
    assert w.spend.spent("a") == pytest.approx(1.0)
    assert [r.cost_usd for r in w.rows] == [pytest.approx(1.0), None, None]
    assert {r.turn for r in w.rows} == {turn}
    w.spend.turn_ended("a", 3.5)  # the CLI says $3.50 in all: $2.50 was the unpriced calls
    assert w.spend.spent("a") == pytest.approx(3.5)
    assert w.turns[-1][:5] == ("end", turn, "a", w.clock.t, 3.5) and w.turns[-1][5] == pytest.approx(2.5)
    assert not w.spend.in_turn("a")


@pytest.mark.parametrize(("reported", "adds"), [
    (None, 2.0), (0.5, 0.0), (1.0, 0.0), (float("nan"), 0.0), (float("inf"), 0.0), (-3.0, 0.0), (2.5, 1.5),
    (3.0, 2.0), (4.0, 2.0), (1e6, 2.0),  # at most the unpriced tokens at the dearest price known ($2 here)
    # None: no report (a harness gone mid-turn, a CLI that said nothing): at the dearest price (review 15)
])
def test_what_a_turns_report_adds_for_its_unpriced_calls(reported: float | None, adds: float) -> None:
    w = World()
    w.spend.turn_started("a")
    w.call("a", 1000)
    w.call("a", 2000, model="other-model")
    w.spend.turn_ended("a", reported)
    assert w.spend.spent("a") == pytest.approx(1.0 + adds)
    assert w.turns[-1][5] == pytest.approx(adds)


def test_a_report_adds_nothing_to_a_turn_without_unpriced_calls_or_outside_any_turn() -> None:
    w = World()
    w.call("a", 1000, model="other-model")  # outside any turn no report comes: at the dearest price, $1
    assert w.rows[-1].cost_usd == pytest.approx(1.0) and w.rows[-1].source == "dearest"
    w.spend.turn_started("a")
    w.call("a", 1000)
    w.spend.turn_ended("a", 9.0)  # no unpriced call in the turn: the gateway's count stands
    w.spend.turn_ended("a", 9.0)  # no turn at all
    assert w.spend.spent("a") == pytest.approx(2.0)
    assert [t[0] for t in w.turns] == ["start", "end"]


def test_turn_ids_go_up_across_agents() -> None:
    w = World()
    assert [w.spend.turn_started(n) for n in "abc"] == [1, 2, 3]
    w.spend.turn_ended("b")
    assert w.spend.turn_started("b") == 4


# --- crossings ---------------------------------------------------------------------------------------------
def test_each_level_is_reported_once_per_window_in_order() -> None:
    w = World(a=Budget(10.0, "day"))
    for tokens, expect in [(7000, []), (1000, ["warn"]), (500, ["warn"]), (1500, ["warn", "over"]),
                           (4000, ["warn", "over"]), (1000, ["warn", "over", "capped"]),
                           (9000, ["warn", "over", "capped"])]:
        w.call("a", tokens)
        assert w.levels() == expect
    assert w.standings[1] == ("a", "over", 10.0, 10.0)
    w.spend.changed("a")
    w.spend.changed()
    assert w.levels() == ["warn", "over", "capped"]  # nothing new: nothing reported again
    w.clock.t += 24 * HOUR  # the next day: a new window
    w.call("a", 8000)
    assert w.levels() == ["warn", "over", "capped", "warn"]


def test_a_jump_past_every_level_reports_each_once() -> None:
    """One big call from nothing to past the hard cap: warn, over (the operator's
    question hangs on it) and capped, each once, in order."""
    w = World(a=Budget(1.0, "day"))
    w.call("a", 2000)
    assert w.levels() == ["warn", "over", "capped"]
    w.call("a", 2000)
    assert w.levels() == ["warn", "over", "capped"]


def test_a_total_budget_never_rolls_over() -> None:
    w = World(a=Budget(1.0, "total"))
    w.call("a", 1000)
    w.clock.t += 30 * 24 * HOUR
    w.call("a", 1)
    assert w.levels() == ["warn", "over"] and w.spend.standing("a") == "over"


def test_the_fleet_has_its_own_levels() -> None:
    w = World(fleet=Budget(2.0, "day"), a=Budget(10.0, "day"))
    w.call("a", 1000)
    w.call("b", 1000)
    assert w.levels(FLEET) == ["warn", "over"] and w.levels("a") == [] and w.levels("b") == []
    assert w.standings[-1] == (FLEET, "over", 2.0, 2.0)


def test_a_raise_lowers_the_level_so_the_next_crossing_is_reported_again() -> None:
    w = World(a=Budget(1.0, "day"))
    w.call("a", 1000)
    assert w.levels() == ["warn", "over"]
    w.limits["a"] = Budget(2.0, "day")
    w.spend.changed("a")
    assert w.levels() == ["warn", "over"] and w.spend.standing("a") == "ok"
    w.call("a", 1000)
    assert w.levels() == ["warn", "over", "warn", "over"]
    assert w.standings[-1] == ("a", "over", 2.0, 2.0)


def test_a_raise_that_leaves_the_spend_over_asks_again_at_the_new_limit() -> None:
    """Raised to $2 with $2.40 spent: still over, and nobody would ever be asked
    again (its turns would wait for good): the crossing of the new limit is reported."""
    w = World(a=Budget(1.0, "day"))
    w.call("a", 1200)
    assert w.levels() == ["warn", "over"]
    w.spend.turn_started("a")
    w.call("a", 1200)  # inside a turn: allowed on, $2.40 in all (past the $1.50 cap)
    assert w.levels() == ["warn", "over", "capped"]
    w.limits["a"] = Budget(2.0, "day")
    w.spend.changed("a")
    assert w.levels() == ["warn", "over", "capped", "over"]
    assert w.standings[-1] == ("a", "over", 2.4, 2.0)
    w.spend.changed("a")  # the same limit again (an agent.json reload): nothing new
    assert w.levels() == ["warn", "over", "capped", "over"]


def test_a_lowered_budget_reports_the_crossing_it_makes() -> None:
    w = World(a=Budget(10.0, "day"))
    w.call("a", 3000)
    w.limits["a"] = Budget(3.0, "day")
    w.spend.changed("a")
    assert w.levels() == ["warn", "over"]


def test_a_failing_listener_never_breaks_the_count() -> None:
    w = World(a=Budget(1.0, "day"))

    def boom(*_: Any) -> None:
        raise RuntimeError("listener")

    w.spend.on_standing = boom
    w.call("a", 1000)
    w.call("a", 1000)
    assert w.spend.spent("a") == pytest.approx(2.0) and w.spend.standing("a") == "capped"


# --- the gateway ---------------------------------------------------------------------------------------------
def test_over_budget_a_call_outside_a_turn_is_refused_inside_one_allowed_and_past_the_cap_always_refused() -> None:
    w = World(a=Budget(1.0, "day"))
    assert w.spend.refusal("a") is None
    w.call("a", 1000)
    assert w.spend.standing("a") == "over"
    why = w.spend.refusal("a")
    assert why is not None and "a is over its budget ($1.00 per day)" in why and "$1.00 spent" in why
    w.spend.turn_started("a")
    assert w.spend.refusal("a") is None  # the running turn may finish
    w.call("a", 500)
    assert w.spend.standing("a") == "capped"
    assert w.spend.refusal("a") is not None  # past the hard cap: refused in a turn too
    assert w.spend.refusal("b") is None


def test_the_fleets_budget_refuses_every_agent_outside_a_turn() -> None:
    w = World(fleet=Budget(1.0, "day"))
    w.call("a", 1000)
    w.spend.turn_started("c")
    for agent in ("a", "b"):
        why = w.spend.refusal(agent)
        assert why is not None and "the fleet is over its budget" in why
        assert w.spend.blocked(agent) is not None and w.spend.view(agent)["over_budget"] is True
    assert w.spend.refusal("c") is None
    assert w.spend.view("b")["standing"] == "ok"  # b's own standing: it has no budget


@pytest.mark.parametrize(("spent", "so_far", "cut"), [
    (0, 1499, False), (0, 1500, True), (1000, 499, False), (1000, 500, True), (1200, 400, True),
])
def test_a_streaming_call_is_cut_when_it_would_take_the_agent_past_its_hard_cap(
        spent: int, so_far: int, cut: bool) -> None:
    w = World(a=Budget(1.0, "day"))
    if spent:
        w.spend.turn_started("a")
        w.call("a", spent)
    why = w.spend.cut("a", {"model": "m", "input_tokens": so_far, "output_tokens": 0})
    assert (why is not None) == cut
    if cut:
        assert why == "a reached its hard cap ($1.50, 1.5 x $1.00 per day)"


def test_cut_follows_the_fleet_counts_an_unpriced_call_at_the_dearest_price_and_never_cuts_an_unbudgeted_one(
        ) -> None:
    w = World(fleet=Budget(2.0, "day"))
    w.call("a", 2000)
    assert w.spend.cut("b", {"model": "m", "input_tokens": 999}) is None
    assert w.spend.cut("b", {"model": "m", "input_tokens": 1000}) == \
        "the fleet reached its hard cap ($3.00, 1.5 x $2.00 per day)"
    assert w.spend.cut("b", {"model": "other", "input_tokens": 999}) is None
    assert w.spend.cut("b", {"model": "other", "input_tokens": 1000}) is not None
    assert World().spend.cut("a", {"model": "m", "input_tokens": 10**9}) is None


# --- the turn gate ---------------------------------------------------------------------------------------------
async def test_an_agent_under_budget_is_admitted_at_once() -> None:
    w = World(a=Budget(1.0, "day"))
    w.call("a", 900)
    await asyncio.wait_for(w.spend.wait_admitted("a"), 5)
    assert not w.spend.waiting("a")


async def test_an_agent_over_budget_waits_until_a_raise_lets_it_in() -> None:
    w = World(a=Budget(1.0, "day"))
    w.call("a", 1100)
    task = asyncio.ensure_future(w.spend.wait_admitted("a"))
    await settle()
    assert not task.done() and w.spend.waiting("a") and w.spend.view("a")["waiting"] is True
    w.spend.changed("a")  # nothing changed: still waiting
    await settle()
    assert not task.done()
    w.limits["a"] = Budget(1.05, "day")  # a raise the spend is still over: still waiting
    w.spend.changed("a")
    await settle()
    assert not task.done()
    w.limits["a"] = Budget(2.0, "day")
    w.spend.changed("a")
    await asyncio.wait_for(task, 5)
    assert not w.spend.waiting("a")
    w.spend.close()


async def test_a_cancelled_wait_leaves_nothing_behind() -> None:
    w = World(a=Budget(1.0, "day"))
    w.call("a", 1000)
    task = asyncio.ensure_future(w.spend.wait_admitted("a"))
    await settle()
    assert w.spend.waiting("a")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not w.spend.waiting("a")
    w.limits["a"] = Budget(5.0, "day")
    w.spend.changed("a")  # waking nobody is fine
    await settle()
    w.spend.close()


async def test_a_fleet_budget_holds_every_agent_and_its_raise_lets_them_all_in() -> None:
    w = World(fleet=Budget(1.0, "day"))
    w.call("a", 1000)
    tasks = {n: asyncio.ensure_future(w.spend.wait_admitted(n)) for n in "abc"}
    await settle()
    assert not any(t.done() for t in tasks.values())
    w.spend.fleet = Budget(3.0, "day")
    w.spend.changed(FLEET)
    await asyncio.wait_for(asyncio.gather(*tasks.values()), 5)
    w.spend.close()


async def test_forget_cancels_a_removed_agents_wait() -> None:
    w = World(a=Budget(1.0, "day"))
    w.call("a", 1000)
    w.spend.turn_started("a")
    task = asyncio.ensure_future(w.spend.wait_admitted("a"))
    await settle()
    w.spend.forget("a")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert not w.spend.in_turn("a") and not w.spend.waiting("a")
    w.spend.close()


async def test_a_day_budgets_wait_ends_at_local_midnight() -> None:
    w = World(a=Budget(1.0, "day"), wake_floor=0.01)  # the production floor (1 s) over 100
    w.clock.t = 1_718_323_200.0 - 0.005  # Thursday 23:59:59.995
    w.call("a", 1000)
    task = asyncio.ensure_future(w.spend.wait_admitted("a"))
    await settle()
    assert not task.done()
    w.clock.t += 1.0  # Friday: the midnight timer (armed for at least the floor) finds a new day
    await asyncio.wait_for(task, 10)
    w.spend.close()


def test_the_midnight_timer_is_armed_for_at_least_a_second_by_default() -> None:
    assert inspect.signature(Spend).parameters["wake_floor"].default == 1.0


# --- a restart ------------------------------------------------------------------------------------------------
def test_load_restores_the_sums_and_the_turn_counter_and_reports_no_old_crossing() -> None:
    w = World(a=Budget(5.0, "day"), b=Budget(100.0, "total"))
    now = w.clock.t
    w.spend.load(Loaded(calls={"a": [(now - 2 * 24 * HOUR, 2.0), (now - HOUR, 4.5)], "b": [(now - HOUR, 1.0)]},
                        before={"a": 10.0, "c": 3.0}, last_turn=41))
    assert (w.spend.spent("a", "day"), w.spend.spent("a", "week"), w.spend.spent("a", "total")) == (4.5, 6.5, 16.5)
    assert w.spend.spent("b", "total") == 1.0 and w.spend.spent("c", "total") == 3.0
    assert w.spend.spent(FLEET, "total") == pytest.approx(20.5) and w.spend.spent(FLEET, "day") == 5.5
    assert w.spend.agents() == ["a", "b", "c"]
    assert w.spend.turn_started("a") == 42
    assert w.standings == [] and w.spend.standing("a") == "warn"  # reached before the restart: not again
    w.call("a", 500)
    assert w.levels() == ["over"]


def test_a_tiny_budgets_reasons_show_the_digits_that_matter() -> None:
    w = World(a=Budget(0.001, "day"))
    w.call("a", 1)  # $0.001
    assert w.spend.blocked("a") == "a is over its budget ($0.001 per day): $0.001 spent"
    assert w.spend.cut("a", {"model": "m", "input_tokens": 1}) == \
        "a reached its hard cap ($0.0015, 1.5 x $0.001 per day)"
