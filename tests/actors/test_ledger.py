"""The Ledger actor (issue 15): a real pykka actor over a real hive.sqlite.
Writes are tells (batched), reads asks that see every write told before
them; a row sqlite refuses is logged and fails only itself, and the actor
goes on (a tell has nobody to raise to)."""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest
from structlog.testing import capture_logs
from support import wait_for

from hyperhive.actors.bridge import Handle
from hyperhive.actors.ledger import SWEEP_BATCH, Ledger
from hyperhive.store.models import ModelCall, open_hive_db
from hyperhive.store.usage import CallRow

NOW = 1_900_000_000.0
DAY = 86400.0


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Handle[Ledger]]:
    db = open_hive_db(tmp_path / "hive.sqlite")
    proxy: pykka.ActorProxy[Ledger] = Ledger.start(db).proxy()
    try:
        yield Handle(proxy, timeout=10)
    finally:
        proxy.actor_ref.stop(block=True, timeout=10)
        db.close()


def row(agent: str = "a", at: float = NOW, cost: float | None = 1.0, turn: int | None = None,
        model: str | None = "m", **tokens: int) -> CallRow:
    return CallRow(agent, at, model, {"input_tokens": 10, "output_tokens": 2, "cache_read_tokens": 0,
                                      "cache_write_tokens": 0, **tokens}, cost, turn, 200)


async def test_tells_then_asks_see_the_rows_in_order(ledger: Handle[Ledger]) -> None:
    ledger.tell(Ledger.turn_started, 1, "a", NOW)
    ledger.tell(Ledger.record_call, row(turn=1))
    ledger.tell(Ledger.record_call, row(turn=1, cost=None, model="x"))
    ledger.tell(Ledger.turn_ended, 1, NOW + 5, 3.0, 2.0)
    ledger.tell(Ledger.record_call, row("b", cost=0.5, output_tokens=7))
    s = await ledger.ask(Ledger.summary, None)
    assert s["a"] == {"calls": 2, "cost_usd": 3.0, "reported_calls": 1, "unpriced_calls": 0, "turns": 1,
                      "tokens": {"input": 20, "output": 4, "cache_read": 0, "cache_write": 0}}
    assert (s["b"]["calls"], s["b"]["cost_usd"], s["b"]["tokens"]["output"]) == (1, 0.5, 7)
    assert await ledger.ask(Ledger.summary, NOW + 1) == {}
    assert (await ledger.ask(Ledger.series, NOW, 3600.0, 2)) == {"a": [3.0, 0.0], "b": [0.5, 0.0]}
    loaded = await ledger.ask(Ledger.load, NOW - DAY)
    assert loaded.calls == {"a": [(NOW, 1.0), (NOW, 2.0)], "b": [(NOW, 0.5)]} and loaded.last_turn == 1


async def test_a_row_sqlite_refuses_is_logged_and_the_actor_goes_on(ledger: Handle[Ledger]) -> None:
    with capture_logs() as logs:
        ledger.tell(Ledger.record_call, row(input_tokens=2**63))  # past sqlite's INTEGER
        ledger.tell(Ledger.record_call, row(model="m\ud800"))  # a lone surrogate: no UTF-8 for sqlite
        ledger.tell(Ledger.record_call, row("b"))
        s = await ledger.ask(Ledger.summary, None)
    assert set(s) == {"b"}  # the batch failed, then went row by row: only the bad rows are lost
    failed = [e for e in logs if e["event"] == "ledger.write_failed"]
    assert [e["kind"] for e in failed] == ["call", "call"] and all(e["log_level"] == "error" for e in failed)
    assert ledger.proxy.actor_ref.is_alive()
    ledger.tell(Ledger.record_call, row("c"))
    again = await ledger.ask(Ledger.summary, None)
    assert set(again) == {"b", "c"}


async def test_a_name_longer_than_its_column_is_stored_as_is(ledger: Handle[Ledger]) -> None:
    """peewee's max_length is no constraint in sqlite: such a row is kept whole (agent
    names are checked long before, at spawn: ^[a-z][a-z0-9-]{0,30}$)."""
    long = "a" * 1000
    ledger.tell(Ledger.record_call, row(long))
    ledger.tell(Ledger.turn_started, 1, long, NOW)
    s = await ledger.ask(Ledger.summary, None)
    assert s[long]["calls"] == 1 and s[long]["turns"] == 1


async def test_turn_writes_that_fail_are_logged_too(ledger: Handle[Ledger]) -> None:
    with capture_logs() as logs:
        ledger.tell(Ledger.turn_started, 2**63, "a", NOW)
        ledger.tell(Ledger.turn_ended, 2**63, NOW, 1.0, 0.5)
        assert await ledger.ask(Ledger.summary, None) == {}
    failed = [(e["event"], e["kind"]) for e in logs if e["log_level"] == "error"]
    assert failed == [("ledger.write_failed", "start"), ("ledger.write_failed", "end")]


async def test_sweep_folds_every_old_call_in_batches_and_says_how_many(tmp_path: Path) -> None:
    db = open_hive_db(tmp_path / "hive.sqlite")
    proxy: pykka.ActorProxy[Ledger] = Ledger.start(db, sweep_batch=20).proxy()  # the production 2000 over 100
    ledger = Handle(proxy, timeout=10)
    try:
        for i in range(45):  # three batches of 20
            ledger.tell(Ledger.record_call, row(at=NOW - 100 * DAY + i, cost=0.25))
        ledger.tell(Ledger.record_call, row(at=NOW, cost=1.0))
        before = await ledger.ask(Ledger.summary, None)
        with capture_logs() as logs:
            assert await ledger.ask(Ledger.sweep, NOW - 90 * DAY) == 45
        assert [e["calls"] for e in logs if e["event"] == "ledger.archived"] == [45]
        assert await ledger.ask(Ledger.summary, None) == before
        assert ModelCall.select().count() == 1
        assert (await ledger.ask(Ledger.load, NOW - 8 * DAY)).before == {"a": 11.25}
        assert await ledger.ask(Ledger.sweep, NOW - 90 * DAY) == 0
    finally:
        proxy.actor_ref.stop(block=True, timeout=10)
        db.close()


def test_the_sweep_folds_2000_calls_a_transaction_by_default() -> None:
    assert SWEEP_BATCH == 2000 and inspect.signature(Ledger).parameters["sweep_batch"].default == SWEEP_BATCH


async def test_a_read_that_fails_reaches_the_asker(ledger: Handle[Ledger]) -> None:
    ledger.tell(Ledger.record_call, row())
    with pytest.raises(ValueError, match="bucket must be > 0"):
        await ledger.ask(Ledger.series, NOW, 0.0, 24)
    assert (await ledger.ask(Ledger.summary, None))["a"]["calls"] == 1


def test_a_batch_is_written_by_itself_without_a_read(tmp_path: Path) -> None:
    """No ask comes: the timer's flush writes the rows (seen from another connection)."""
    path = tmp_path / "hive.sqlite"
    db = open_hive_db(path)
    proxy: pykka.ActorProxy[Ledger] = Ledger.start(db, 0.05).proxy()
    try:
        Handle(proxy).tell(Ledger.record_call, row())
        Handle(proxy).tell(Ledger.record_call, row("b"))

        def written() -> bool:
            with sqlite3.connect(path) as conn:
                n = int(conn.execute("SELECT COUNT(*) FROM model_calls").fetchone()[0])
            conn.close()
            return n == 2

        wait_for(written, timeout=10, what="the timer's flush")
    finally:
        proxy.actor_ref.stop(block=True, timeout=10)
        db.close()


def test_stop_writes_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "hive.sqlite"
    db = open_hive_db(path)
    proxy: pykka.ActorProxy[Ledger] = Ledger.start(db, 3600.0).proxy()
    Handle(proxy).tell(Ledger.record_call, row())  # the first flush is at once; the rest wait an hour
    Handle(proxy).tell(Ledger.record_call, row("b"))
    Handle(proxy).tell(Ledger.record_call, row("c"))
    proxy.actor_ref.stop(block=True, timeout=10)
    assert {c.agent for c in ModelCall.select()} == {"a", "b", "c"}
    db.close()
