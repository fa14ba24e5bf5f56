"""hyperhive.budgets (issue 15), pure: a budget's JSON form, the calendar
window it counts (local time, across DST changes and at exactly midnight),
where a spend stands, and the operator's question and how its answers read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import local_time_zone

from hyperhive.budgets import (
    Budget,
    budget_question,
    money,
    next_midnight,
    parse_budget,
    raise_answer,
    standing,
    window_start,
)
from hyperhive.errors import BadRequest


# --- parse_budget ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "budget"), [
    ({"usd": 5, "per": "day"}, Budget(5.0, "day")),
    ({"usd": 5}, Budget(5.0, "day")),  # per defaults to day
    ({"usd": 0.5, "per": "week"}, Budget(0.5, "week")),
    ({"usd": 1_000_000, "per": "total"}, Budget(1_000_000.0, "total")),
    ({"usd": 0.000001}, Budget(0.000001, "day")),
    ({"usd": 1.23456789}, Budget(1.234568, "day")),
])
def test_a_good_budget_parses(raw: dict[str, Any], budget: Budget) -> None:
    assert parse_budget(raw) == budget
    assert isinstance(parse_budget(raw).usd, float)


@pytest.mark.parametrize(("raw", "says"), [
    ({"usd": 0}, "budget.usd must be a number of dollars"),
    ({"usd": -1}, "budget.usd must be a number"),
    ({"usd": -0.0}, "budget.usd must be a number"),
    ({"usd": 0.0000001}, "budget.usd must be a number"),  # kept to a millionth of a dollar, it would be 0
    ({"usd": True}, "budget.usd must be a number"),
    ({"usd": False}, "budget.usd must be a number"),
    ({"usd": "5"}, "budget.usd must be a number"),
    ({"usd": None}, "budget.usd must be a number"),
    ({"per": "day"}, "budget.usd must be a number"),  # no usd at all
    ({"usd": [5]}, "budget.usd must be a number"),
    ({"usd": float("nan")}, "budget.usd must be a number"),
    ({"usd": float("inf")}, "budget.usd must be a number"),
    ({"usd": float("-inf")}, "budget.usd must be a number"),
    ({"usd": 1_000_000.01}, "budget.usd must be a number"),
    ({"usd": 10**400}, "budget.usd must be a number"),  # an int no float holds: no OverflowError
    ({"usd": 5, "per": "month"}, "budget.per must be one of day, week, total"),
    ({"usd": 5, "per": "Day"}, "budget.per must be one of"),
    ({"usd": 5, "per": None}, "budget.per must be one of"),
    ({"usd": 5, "per": ["day"]}, "budget.per must be one of"),
    ({"usd": 5, "per": {"day": 1}}, "budget.per must be one of"),
    ({"usd": 5, "per": "day", "hard_cap": 2}, "unknown key(s): hard_cap"),
    ({"usd": 5, "currency": "eur", "cap": 1}, "unknown key(s): cap, currency"),
    (5, "must be an object like"),
    ([5, "day"], "must be an object like"),
    (None, "must be an object like"),
    ("5/day", "must be an object like"),
])
def test_a_bad_budget_is_a_bad_request_that_says_why(raw: Any, says: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_budget(raw)
    assert says in str(info.value)


def test_the_error_names_where_the_budget_came_from() -> None:
    with pytest.raises(BadRequest, match=r"^agent\.json: budget\.usd"):
        parse_budget({"usd": -1}, "agent.json: budget")


# --- window_start -----------------------------------------------------------------------------------
@pytest.fixture
def tz() -> Iterator[Any]:
    """Set the process's local time zone for the test (``tz("Europe/Berlin")``); restored after."""
    with local_time_zone() as use:
        yield use


def local(*fields: int, dst: int = -1) -> float:
    y, mo, d, h, mi = (*fields, 0, 0, 0)[:5]
    return time.mktime((y, mo, d, h, mi, 0, 0, 0, dst))


def test_total_is_all_time() -> None:
    assert window_start("total", 1_900_000_000.0) == 0.0
    assert window_start("total", 0.0) == 0.0


def test_day_and_week_start_at_local_midnight_and_monday(tz: Any) -> None:
    tz("UTC")
    now = 1_718_451_000.0  # 2024-06-15 11:30 UTC, a Saturday
    assert window_start("day", now) == 1_718_409_600.0  # 2024-06-15 00:00
    assert window_start("week", now) == 1_717_977_600.0  # Monday 2024-06-10 00:00
    tz("Asia/Kolkata")  # UTC+5:30: its midnight is 18:30 UTC the day before
    assert window_start("day", now) == 1_718_409_600.0 - 5.5 * 3600


def test_at_exactly_midnight_the_new_window_begins(tz: Any) -> None:
    tz("Europe/Berlin")
    midnight = local(2024, 6, 11)  # a Tuesday
    assert window_start("day", midnight) == midnight
    assert window_start("day", midnight - 0.001) == local(2024, 6, 10)
    monday = local(2024, 6, 10)
    assert window_start("week", monday) == monday
    assert window_start("week", monday - 0.001) == local(2024, 6, 3)
    assert window_start("week", midnight) == monday


def test_a_day_with_a_spring_forward_starts_at_its_midnight_and_has_23_hours(tz: Any) -> None:
    tz("Europe/Berlin")  # 2024-03-31: 02:00 CET -> 03:00 CEST
    start = local(2024, 3, 31)
    next_day = local(2024, 4, 1)
    assert next_day - start == 23 * 3600
    for now in (start, start + 3600, start + 2 * 3600, start + 12 * 3600, next_day - 1):
        assert window_start("day", now) == start, time.localtime(now)
    assert window_start("day", next_day) == next_day
    # the week from Monday 2024-03-25 (CET) holds the change: it is 167 hours long
    assert window_start("week", next_day - 1) == local(2024, 3, 25)
    assert next_day - local(2024, 3, 25) == 7 * 24 * 3600 - 3600


def test_a_day_with_a_fall_back_has_25_hours(tz: Any) -> None:
    tz("Europe/Berlin")  # 2024-10-27: 03:00 CEST -> 02:00 CET
    start = local(2024, 10, 27)
    next_day = local(2024, 10, 28)
    assert next_day - start == 25 * 3600
    for now in (start, start + 2.5 * 3600, start + 3.5 * 3600, next_day - 1):  # both 02:30s
        assert window_start("day", now) == start
    assert window_start("week", next_day - 1) == local(2024, 10, 21)
    assert window_start("week", next_day) == next_day  # a Monday


def test_a_day_whose_midnight_does_not_exist_starts_at_its_first_hour(tz: Any) -> None:
    tz("America/Santiago")  # 2024-09-08: 00:00 -04 -> 01:00 -03
    first = local(2024, 9, 8, 1)
    assert time.localtime(first).tm_hour == 1
    for now in (first, first + 3600, first + 22 * 3600):
        assert window_start("day", now) == first
    assert window_start("day", first - 1) == local(2024, 9, 7)  # 23:59:59 the day before


def test_a_day_whose_midnight_comes_twice_starts_at_the_first(tz: Any) -> None:
    tz("America/Havana")  # 2024-11-03: 01:00 CDT -> 00:00 CST, so 00:00-01:00 comes twice
    first = local(2024, 11, 3, dst=1)
    second = local(2024, 11, 3, dst=0)
    assert second - first == 3600
    for now in (first, first + 1800, second, second + 1800, second + 12 * 3600):
        assert window_start("day", now) == first
        assert window_start("day", now) <= now


def test_week_across_month_and_year_ends(tz: Any) -> None:
    tz("UTC")
    assert window_start("week", local(2025, 1, 1, 12)) == local(2024, 12, 30)  # a Wednesday
    assert window_start("week", local(2024, 3, 2, 12)) == local(2024, 2, 26)  # a leap February


# --- standing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("spent", "expect"), [
    (0.0, "ok"), (7.99, "ok"), (8.0, "warn"), (9.99, "warn"), (10.0, "over"), (14.99, "over"),
    (15.0, "capped"), (1e9, "capped"),
])
def test_where_a_spend_stands(spent: float, expect: str) -> None:
    assert standing(spent, Budget(10.0, "day"), 1.5) == expect


def test_no_budget_is_always_ok_and_the_thresholds_move_with_their_settings() -> None:
    assert standing(1e12, None, 1.5) == "ok"
    b = Budget(10.0, "week")
    assert standing(5.0, b, 2.0, warn_at=0.5) == "warn"
    assert standing(15.0, b, 2.0) == "over"
    assert standing(20.0, b, 2.0) == "capped"
    assert standing(10.0, b, 1.0) == "capped"  # a factor of 1: the budget is the cap


# --- the question and its answers -------------------------------------------------------------------
def test_the_question_says_what_was_spent_of_what_and_offers_the_raises_and_a_stop() -> None:
    text, options = budget_question("a", 5.2, Budget(5.0, "day"), 5.0)
    assert text == "a has spent $5.20 of its $5.00 budget per day"
    assert options == ["raise to $10.00", "raise by $5.00", "stop a"]
    text, options = budget_question("a", 12.0, Budget(10.0, "week"), 5.0)  # raised once before
    assert text == "a has spent $12.00 of its $10.00 budget per week"
    assert options == ["raise to $20.00", "raise by $5.00", "stop a"]
    text, options = budget_question("the fleet", 101.0, Budget(100.0, "total"), 100.0)
    assert text == "the fleet has spent $101.00 of its $100.00 budget in all"
    assert options == ["raise to $200.00", "raise by $100.00", "hold every turn"]


def test_a_tiny_budget_is_shown_to_the_digit_that_matters() -> None:
    text, options = budget_question("a", 0.0012, Budget(0.001, "day"), 0.001)
    assert text == "a has spent $0.0012 of its $0.001 budget per day"
    assert options == ["raise to $0.002", "raise by $0.001", "stop a"]
    assert money(0.5) == "$0.50" and money(1.2) == "$1.20" and money(0) == "$0.00"
    assert money(12.345) == "$12.35" and money(0.0125) == "$0.0125"
    assert Budget(0.001, "total").text() == "$0.001 in all"


LIMIT = Budget(10.0, "day")  # raised from a configured $5


@pytest.mark.parametrize(("answer", "usd"), [
    ("raise to $20.00", 20.0),
    ("raise by $5.00", 15.0),
    ("stop a", None),
    ("raise to $20.00, and look at why", 20.0),  # an option with the free text after it
    ("raise by $5.00, 100", 15.0),  # the option wins over the text
    ("stop a, 100", None),
    ("  raise to $20.00  ", 20.0),
    ("Raise To $20.00", 20.0),
    ("12", 12.0),
    ("$12.50", 12.5),
    ("$ 12.50", 12.5),
    ("12.", 12.0),
    (".5e2", None),
    ("12, because it is close", 12.0),
    ("12\nit is close", 12.0),
    ("12 dollars", 12.0),
    ("$1,000", 1000.0),
    ("1,000.50, because", 1000.5),
    ("raise to $30", 30.0),  # the option's words with another sum
    ("raise by $2.50", 12.5),
    ("raise by 1", None),  # to $11: at or below the $11.50 spent
    ("11.50", None),  # exactly what is spent: it would hold at once
    ("8", None),  # below what is spent
    ("0", None),
    ("-20", None),
    ("inf", None),
    ("nan", None),
    ("Infinity", None),
    ("1e400", None),
    ("1e3", None),
    ("1000001", None),  # over the most a budget may be
    ("yes", None),
    ("", None),
    ("twelve", None),
    ("12abc", None),
    ("1.2.3", None),
    ("$", None),
    ("raise to", None),
    ("raise to $", None),
])
def test_how_an_answer_reads(answer: str, usd: float | None) -> None:
    assert raise_answer(answer, LIMIT, 5.0, spent=11.5) == usd


def test_a_tiny_limits_options_read_back_as_their_raises() -> None:
    limit = Budget(0.001, "day")
    _, options = budget_question("a", 0.0012, limit, 0.001)
    assert raise_answer(options[0], limit, 0.001, 0.0012) == 0.002
    assert raise_answer(options[1], limit, 0.001, 0.0012) == 0.002
    assert raise_answer(options[2], limit, 0.001, 0.0012) is None
    assert raise_answer("$0.005", limit, 0.001, 0.0012) == 0.005


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Santiago", "America/Havana", "Australia/Lord_Howe",
                                  "America/New_York", "UTC"])
def test_every_half_hour_of_a_year_lies_in_its_own_dates_day_and_monday_week(tz: Any, zone: str) -> None:
    """A whole year, every DST change in it included (Lord Howe's are half an hour)."""
    tz(zone)
    now, end = local(2024, 1, 1), local(2025, 1, 1)
    while now < end:
        day, week, until = window_start("day", now), window_start("week", now), next_midnight(now)
        assert day <= now < until, (zone, time.localtime(now))
        d, n = time.localtime(day), time.localtime(now)
        assert (d.tm_year, d.tm_mon, d.tm_mday) == (n.tm_year, n.tm_mon, n.tm_mday)
        assert window_start("day", until) == until
        assert week <= day and time.localtime(week).tm_wday == 0 and day - week < 7 * 86400 + 3600
        now += 5400  # 1.5 h: every hour and half hour of the day, in turn
