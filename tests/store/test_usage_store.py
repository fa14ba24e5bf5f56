"""hyperhive.store.usage (issue 15) on a real hive.sqlite: exact sums per kind
and per agent, the ``since`` filter, a turn's reported cost shared over its
unpriced calls, the sparkline's buckets, what the spend table loads at
boot, and the retention sweep folding old calls into usage_archive with
every "all time" figure unchanged."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peewee import SqliteDatabase

from hyperhive.spend_core import Account, Windows
from hyperhive.store.models import ModelCall, TurnRecord, UsageArchive, open_hive_db
from hyperhive.store.usage import (
    CallRow,
    archive_batch,
    end_turn,
    insert_call,
    load,
    series,
    start_turn,
    summary,
)

NOW = 1_900_000_000.0
DAY = 86400.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteDatabase]:
    d = open_hive_db(tmp_path / "hive.sqlite")
    try:
        yield d
    finally:
        d.close()


def call(db: Any, agent: str, at: float, cost: float | None, *, inp: int = 0, out: int = 0, cr: int = 0,
         cw: int = 0, turn: int | None = None, model: str | None = "m") -> int:
    return insert_call(db, CallRow(agent, at, model, {"input_tokens": inp, "output_tokens": out,
                                                      "cache_read_tokens": cr, "cache_write_tokens": cw},
                                   cost, turn, 200))


def tokens(i: int = 0, o: int = 0, r: int = 0, w: int = 0) -> dict[str, int]:
    return {"input": i, "output": o, "cache_read": r, "cache_write": w}


def test_summary_sums_each_kind_exactly_per_agent(db: Any) -> None:
    call(db, "a", NOW, 0.25, inp=100, out=20, cr=3000, cw=400)
    call(db, "a", NOW + 1, 0.5, inp=7, out=1, cr=0, cw=9)
    call(db, "b", NOW + 2, 0.125, inp=2**40, out=2**33)  # big counts stay exact (BIGINT)
    start_turn(db, 1, "a", NOW)
    start_turn(db, 2, "a", NOW + 10)
    start_turn(db, 3, "c", NOW + 10)  # turns with no calls still count
    s = summary(db, None)
    assert s == {
        "a": {"calls": 2, "cost_usd": 0.75, "reported_calls": 0, "unpriced_calls": 0,
              "tokens": tokens(107, 21, 3000, 409), "turns": 2},
        "b": {"calls": 1, "cost_usd": 0.125, "reported_calls": 0, "unpriced_calls": 0,
              "tokens": tokens(2**40, 2**33), "turns": 0},
        "c": {"calls": 0, "cost_usd": 0.0, "reported_calls": 0, "unpriced_calls": 0, "tokens": tokens(),
              "turns": 1},
    }
    assert summary(db, NOW + 5) == {"c": s["c"], "a": {**s["a"], "calls": 0, "cost_usd": 0.0,
                                                       "tokens": tokens(), "turns": 1}}


def test_summary_since_filters_calls_and_turns_at_the_boundary(db: Any) -> None:
    for i in range(10):
        call(db, "a", NOW + i, 1.0, inp=1)
        start_turn(db, i + 1, "a", NOW + i)
    assert summary(db, NOW + 7)["a"]["calls"] == 3  # 7, 8, 9: at since counts
    assert summary(db, NOW + 7)["a"]["turns"] == 3
    assert summary(db, NOW + 10) == {}
    assert summary(db, 0.0)["a"]["calls"] == 10
    assert summary(db, None)["a"]["calls"] == 10


def test_an_unpriced_call_counts_as_unpriced_until_its_turn_shares_the_report(db: Any) -> None:
    start_turn(db, 5, "a", NOW)
    call(db, "a", NOW + 1, 0.5, inp=500, turn=5)
    u1 = call(db, "a", NOW + 2, None, inp=10, turn=5, model="x")
    u2 = call(db, "a", NOW + 3, None, inp=10, turn=5, model="x")
    call(db, "a", NOW + 4, None, inp=10, turn=None, model="x")  # outside any turn: stays unpriced
    s = summary(db, None)["a"]
    assert (s["cost_usd"], s["unpriced_calls"], s["reported_calls"]) == (0.5, 3, 0)
    end_turn(db, 5, NOW + 9, 2.0, 1.5)  # the spend table counted $1.50 for the two
    assert {c.id: (c.cost_usd, c.cost_source) for c in ModelCall.select().where(ModelCall.turn == 5)
            if c.cost_source != "priced"} == {u1: (0.75, "reported"), u2: (0.75, "reported")}
    s = summary(db, None)["a"]
    assert (s["cost_usd"], s["unpriced_calls"], s["reported_calls"]) == (2.0, 1, 2)
    t = TurnRecord.get_by_id(5)
    assert (t.ended_at, t.reported_cost_usd) == (NOW + 9, 2.0)


def test_a_turns_share_never_goes_negative_and_no_report_leaves_its_calls_unpriced(db: Any) -> None:
    for turn, reported, extra in ((1, None, 0.0), (2, 0.1, -3.0), (3, 1.0, 0.0)):
        start_turn(db, turn, "a", NOW)
        call(db, "a", NOW, 1.0, inp=1, turn=turn)
        call(db, "a", NOW, None, inp=1, turn=turn, model="x")
        end_turn(db, turn, NOW + 1, reported, extra)
    costs = {c.turn: c.cost_usd for c in ModelCall.select().where(ModelCall.model == "x")}
    assert costs == {1: None, 2: 0.0, 3: 0.0}
    assert summary(db, None)["a"]["cost_usd"] == 3.0
    end_turn(db, 99, NOW, 1.0, 1.0)  # no such turn: nothing happens


def test_start_turn_twice_keeps_the_first(db: Any) -> None:
    start_turn(db, 1, "a", NOW)
    start_turn(db, 1, "b", NOW + 5)
    assert (TurnRecord.get_by_id(1).agent, TurnRecord.get_by_id(1).started_at) == ("a", NOW)


def test_series_buckets_each_agents_cost(db: Any) -> None:
    since, bucket = NOW, 3600.0
    call(db, "a", since - 1, 9.0)  # before: not shown
    call(db, "a", since, 1.0)  # the first bucket's start
    call(db, "a", since + 3599.9, 2.0)
    call(db, "a", since + 3600, 4.0)  # the second's start
    call(db, "a", since + 23 * 3600 + 1, 8.0)  # the last
    call(db, "a", since + 24 * 3600, 16.0)  # past the last: not shown
    call(db, "b", since + 5 * 3600 + 7, 0.5)
    call(db, "b", since + 5 * 3600 + 9, None, model="x")  # unpriced: adds nothing
    call(db, "c", since + 100, None, model="x")
    out = series(db, since, bucket, 24)
    assert set(out) == {"a", "b", "c"}
    assert out["a"][:2] == [3.0, 4.0] and out["a"][23] == 8.0 and sum(out["a"]) == 15.0
    assert out["b"] == [0.0] * 5 + [0.5] + [0.0] * 18
    assert out["c"] == [0.0] * 24
    assert series(db, since + 48 * 3600, bucket, 24) == {}


def test_load_splits_the_calls_at_the_cutoff_and_finds_the_last_turn(db: Any) -> None:
    cutoff = NOW - 8 * DAY
    call(db, "a", cutoff - 1, 2.0)
    call(db, "a", cutoff, 3.0)
    call(db, "a", NOW, 0.5)
    call(db, "a", NOW, None, model="x")  # unpriced: not a call of the running sums
    call(db, "b", cutoff - 100, None, model="x")
    call(db, "c", cutoff - 100, 1.0)
    start_turn(db, 7, "a", NOW)
    start_turn(db, 3, "a", NOW)
    got = load(db, cutoff)
    assert got.calls == {"a": [(cutoff, 3.0), (NOW, 0.5)]}
    assert got.before == {"a": 2.0, "b": 0.0, "c": 1.0}
    assert got.last_turn == 7


def test_load_of_an_empty_database(db: Any) -> None:
    got = load(db, NOW)
    assert (got.calls, got.before, got.last_turn) == ({}, {}, 0)


def test_the_turn_counter_never_goes_back_to_ids_calls_still_name(db: Any) -> None:
    """A turn whose row never made it (or was archived) while calls that name it
    remain: the next turn id must not reuse it, or its end would price them."""
    start_turn(db, 3, "a", NOW)
    call(db, "a", NOW, None, model="x", turn=9)
    assert load(db, NOW - DAY).last_turn == 9


def seed(db: Any, rng: random.Random) -> None:
    """Three agents' calls and turns over 200 days, some priced, some reported, some unpriced.

    The rows `start_turn`, `insert_call` and `end_turn` would leave, written in
    one transaction (a statement for each table): each turn's unpriced call (at
    most one) has the report's share (``extra`` 0.5) or, with no report, no cost."""
    turns: list[tuple[int, str, float, float, float | None]] = []
    calls: list[dict[str, Any]] = []

    def add(agent: str, at: float, cost: float | None, source: str | None, inp: int, out: int = 0, cr: int = 0,
            cw: int = 0, turn: int | None = None, model: str = "m") -> None:
        calls.append({"agent": agent, "at": at, "model": model, "cost_usd": cost, "turn": turn, "status": 200,
                      "cost_source": source, "input_tokens": inp, "output_tokens": out, "cache_read_tokens": cr,
                      "cache_write_tokens": cw})

    turn = 0
    for day in range(200):
        for agent in ("a", "b", "c")[: 1 + day % 3]:
            turn += 1
            at = NOW - (200 - day) * DAY + rng.uniform(0, DAY / 2)
            priced = 0.0
            for k in range(rng.randint(0, 4)):
                cost = rng.choice([0.25, 0.5, 1.0, 0.125])
                priced += cost
                add(agent, at + k, cost, "priced", inp=rng.randint(0, 5000), out=rng.randint(0, 900),
                    cr=rng.randint(0, 10**6), cw=rng.randint(0, 3000), turn=turn)
            reported = None
            if rng.random() < 0.3:
                if rng.random() < 0.5:  # end_turn(turn, at + 60, priced + 0.5, 0.5)
                    reported = priced + 0.5
                    add(agent, at + 50, 0.5, "reported", inp=77, out=7, turn=turn, model="x")
                else:  # end_turn(turn, at + 60, None)
                    add(agent, at + 50, None, None, inp=77, out=7, turn=turn, model="x")
            turns.append((turn, agent, at, at + 60, reported))
    add("d", NOW - 150 * DAY, 0.75, "priced", inp=1)  # an agent the sweep folds away whole
    with db.atomic():
        conn = db.connection()
        conn.executemany("INSERT INTO turns (id, agent, started_at, ended_at, reported_cost_usd)"
                         " VALUES (?, ?, ?, ?, ?)", turns)
        conn.executemany(f"INSERT INTO model_calls ({', '.join(calls[0])})"
                         f" VALUES ({', '.join(':' + c for c in calls[0])})", calls)


def totals(db: Any) -> dict[str, float]:
    got = load(db, NOW - 8 * DAY)
    out = {}
    for agent in {*got.calls, *got.before}:
        out[agent] = Account.of(got.calls.get(agent, []), got.before.get(agent, 0.0)).spent("total", Windows())
    return out


def test_the_sweep_folds_old_calls_away_and_all_time_figures_stay(db: Any) -> None:
    seed(db, random.Random(15))
    before_all, before_totals = summary(db, None), totals(db)
    recent = summary(db, NOW - 60 * DAY)
    cutoff = NOW - 90 * DAY
    old = ModelCall.select().where(ModelCall.at < cutoff).count()
    assert old > 300  # several batches of 100
    swept, batches = 0, 0
    while True:
        n, more = archive_batch(db, cutoff, batch=100)
        swept, batches = swept + n, batches + 1
        if not more:
            break
    assert swept == old and batches >= 4
    assert ModelCall.select().where(ModelCall.at < cutoff).count() == 0
    assert TurnRecord.select().where(TurnRecord.started_at < cutoff).count() == 0
    assert UsageArchive.select().count() == 4
    after_all = summary(db, None)
    assert set(after_all) == set(before_all)
    for agent, s in before_all.items():
        for key in ("calls", "turns", "tokens", "reported_calls", "unpriced_calls"):
            assert after_all[agent][key] == s[key], (agent, key)
        assert after_all[agent]["cost_usd"] == pytest.approx(s["cost_usd"], abs=1e-9)
    assert summary(db, NOW - 60 * DAY) == recent  # the recent window is untouched
    after_totals = totals(db)
    assert set(after_totals) == set(before_totals)
    for agent, usd in before_totals.items():
        assert after_totals[agent] == pytest.approx(usd, abs=1e-9)
    assert archive_batch(db, cutoff) == (0, False)  # nothing left to do


def test_the_sweep_keeps_a_turn_that_still_has_calls_after_the_cutoff(db: Any) -> None:
    cutoff = NOW
    start_turn(db, 1, "a", cutoff - 10)
    call(db, "a", cutoff - 5, 1.0, turn=1)
    call(db, "a", cutoff + 5, 2.0, turn=1)
    start_turn(db, 2, "a", cutoff - 10)
    call(db, "a", cutoff - 5, 4.0, turn=2)
    assert archive_batch(db, cutoff) == (2, False)
    assert [t.id for t in TurnRecord.select()] == [1]
    a = UsageArchive.get_by_id("a")
    assert (a.calls, a.turns, a.cost_usd, a.until) == (2, 1, 5.0, cutoff - 5)
    s = summary(db, None)["a"]
    assert (s["calls"], s["turns"], s["cost_usd"]) == (3, 2, 7.0)


def test_a_second_sweep_adds_to_the_archive(db: Any) -> None:
    call(db, "a", NOW - 10, 1.0, inp=5)
    archive_batch(db, NOW)
    call(db, "a", NOW + 10, 2.0, inp=6)
    archive_batch(db, NOW + 20)
    a = UsageArchive.get_by_id("a")
    assert (a.calls, a.cost_usd, a.input_tokens, a.until) == (2, 3.0, 11, NOW + 10)
    assert load(db, NOW + 30).before == {"a": 3.0}


def test_an_archive_table_from_before_the_call_kinds_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE usage_archive (agent VARCHAR(64) PRIMARY KEY, calls INTEGER NOT NULL, "
                     "turns INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, "
                     "cache_read_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL, "
                     "cost_usd REAL NOT NULL, until REAL NOT NULL)")
        conn.execute("INSERT INTO usage_archive VALUES ('a', 3, 1, 10, 20, 30, 40, 1.5, 99.0)")
    conn.close()
    db = open_hive_db(path)
    try:
        s = summary(db, None)["a"]
        assert (s["calls"], s["reported_calls"], s["unpriced_calls"], s["cost_usd"]) == (3, 0, 0, 1.5)
    finally:
        db.close()


def test_a_full_batch_says_there_may_be_more(db: Any) -> None:
    for i in range(10):
        call(db, "a", NOW - 100 + i, 1.0)
    assert archive_batch(db, NOW, batch=4) == (4, True)
    assert archive_batch(db, NOW, batch=4) == (4, True)
    assert archive_batch(db, NOW, batch=4) == (2, False)
    for i in range(4):
        call(db, "b", NOW - 50 + i, 1.0)
    assert archive_batch(db, NOW, batch=4) == (4, True)  # exactly a batch: one more look finds nothing
    assert archive_batch(db, NOW, batch=4) == (0, False)
    for i in range(5):  # turns alone (no calls) fill batches too
        start_turn(db, 100 + i, "c", NOW - 10)
    assert archive_batch(db, NOW, batch=4) == (0, True)
    assert archive_batch(db, NOW, batch=4) == (0, False)
    assert UsageArchive.get_by_id("c").turns == 5
    assert summary(db, None)["a"]["calls"] == 10 and summary(db, None)["c"]["turns"] == 5
