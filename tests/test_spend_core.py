"""hyperhive.spend_core (issue 15), pure: an account's running sums per day,
week and in all, read at injected times across midnights, week starts and a
DST change, and the trimming of calls past eight days (the total stays)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
from support import local_time_zone

from hyperhive.budgets import window_start
from hyperhive.spend_core import KEEP_SECONDS, Account, Windows

HOUR = 3600.0
DAY = 86400.0


@pytest.fixture(autouse=True)
def berlin() -> Iterator[None]:
    """Every test here runs in Europe/Berlin local time (restored after)."""
    with local_time_zone("Europe/Berlin"):
        yield


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return time.mktime((y, mo, d, h, mi, 0, 0, 0, -1))


def spent(account: Account, now: float) -> tuple[float, float, float]:
    w = Windows().at(now)
    return (account.spent("day", w), account.spent("week", w), account.spent("total", w))


def test_windows_hold_the_day_and_week_until_the_next_midnight() -> None:
    w = Windows()
    tue = local(2024, 6, 11, 15)
    assert w.at(tue) is w
    assert (w.day, w.week, w.until) == (local(2024, 6, 11), local(2024, 6, 10), local(2024, 6, 12))
    assert (w.start("day"), w.start("week"), w.start("total")) == (w.day, w.week, 0.0)
    w.at(local(2024, 6, 12) - 0.001)
    assert w.day == local(2024, 6, 11)
    w.at(local(2024, 6, 12))  # exactly midnight: the new day
    assert (w.day, w.until) == (local(2024, 6, 12), local(2024, 6, 13))
    w.at(local(2024, 6, 17, 0, 30))  # next Monday
    assert (w.day, w.week) == (local(2024, 6, 17), local(2024, 6, 17))
    w.at(tue)  # a clock set back: recomputed too
    assert (w.day, w.week) == (local(2024, 6, 11), local(2024, 6, 10))


def test_windows_across_a_dst_change() -> None:
    w = Windows().at(local(2024, 3, 30, 23))  # Saturday; the change is Sunday at 02:00
    assert w.until == local(2024, 3, 31)
    w.at(local(2024, 3, 31, 4))
    assert w.day == local(2024, 3, 31) and w.until - w.day == 23 * HOUR
    w.at(local(2024, 4, 1, 0, 1))
    assert w.day == w.week == local(2024, 4, 1)


def test_sums_per_day_week_and_total_across_midnights() -> None:
    a = Account()
    mon = local(2024, 6, 10, 12)
    a.add(mon, 1.0, mon)
    assert spent(a, mon) == (1.0, 1.0, 1.0)
    tue_late = local(2024, 6, 11, 23, 59)
    a.add(tue_late, 2.0, tue_late)
    assert spent(a, tue_late) == (2.0, 3.0, 3.0)
    wed = local(2024, 6, 12)  # midnight: Tuesday's call is yesterday's
    assert spent(a, wed) == (0.0, 3.0, 3.0)
    a.add(wed, 0.5, wed)
    assert spent(a, wed + 1) == (0.5, 3.5, 3.5)
    next_mon = local(2024, 6, 17, 9)
    assert spent(a, next_mon) == (0.0, 0.0, 3.5)
    a.add(next_mon, 4.0, next_mon)
    assert spent(a, next_mon) == (4.0, 4.0, 7.5)


def test_one_windows_object_reused_as_time_goes_on() -> None:
    """The spend table keeps one Windows and one Account per agent: the cached
    sums must follow each new window."""
    a, w = Account(), Windows()
    t = local(2024, 6, 10, 20)
    for _ in range(3):
        a.add(t, 1.0, t)
        t += 2 * HOUR  # 20:00, 22:00, then 00:00 Tuesday
    assert a.spent("day", w.at(t - 2 * HOUR - 1)) == 3.0  # Monday 23:59:59 (everything since its midnight)
    assert a.spent("day", w.at(t - 2 * HOUR)) == 1.0  # Tuesday 00:00: its call only
    assert a.spent("week", w.at(t)) == 3.0
    a.add(t, 1.0, t)  # Tuesday 02:00
    assert a.spent("day", w.at(t)) == 2.0
    assert a.spent("week", w.at(t)) == 4.0


def test_a_zero_or_negative_cost_is_not_a_call() -> None:
    a = Account()
    a.add(100.0, 0.0, 100.0)
    a.add(100.0, -5.0, 100.0)
    assert not a.calls and a.total == 0.0


def test_calls_past_eight_days_are_trimmed_into_before_and_the_total_stays() -> None:
    a = Account()
    start = local(2024, 6, 1, 12)
    for i in range(20):
        t = start + i * DAY
        a.add(t, 1.0, t)
    now = start + 19 * DAY
    assert a.total == 20.0
    assert a.before == 11.0 and len(a.calls) == 9  # what is older than eight days (the one at exactly 8 stays)
    assert all(at >= now - KEEP_SECONDS for at, _ in a.calls)
    assert spent(a, now) == (1.0, float(time.localtime(now).tm_wday + 1), 20.0)


def test_of_restores_an_account_as_the_spend_table_loads_it() -> None:
    now = local(2024, 6, 12, 10)  # a Wednesday
    calls = [(now - 3 * DAY, 1.0), (now - DAY, 2.0), (now - HOUR, 4.0)]
    a = Account.of(calls, before=10.0)
    assert spent(a, now) == (4.0, 6.0, 17.0)
    a.add(now, 1.0, now)
    assert spent(a, now) == (5.0, 7.0, 18.0)


def test_running_sums_match_a_recount_at_random_times() -> None:
    """The cached sums against a sum from scratch, for a month of random calls and reads."""
    rng = random.Random(15)
    a, w = Account(), Windows()
    every: list[tuple[float, float]] = []
    t = local(2024, 3, 20)  # across the DST change of March 31
    for _ in range(2000):
        t += rng.expovariate(1 / (20 * 60))
        cost = rng.choice([0.0, 0.001, 0.25, 1.0, 3.5])
        a.add(t, cost, t)
        if cost > 0:
            every.append((t, cost))
        if rng.random() < 0.3:
            w.at(t)
            for per in ("day", "week"):
                start = window_start(per, t)
                assert a.spent(per, w) == pytest.approx(sum(c for at, c in every if at >= start), abs=1e-9)
            assert a.spent("total", w) == pytest.approx(sum(c for _, c in every), abs=1e-9)
