"""The taken marks' schema (issue 16): a hive.sqlite from before them (the
messages table exactly as the daemon made it then) opens, gains the two
columns and the partial index without rewriting a row, and works with them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from peewee import SqliteDatabase

from hyperhive.actors.broker_reads import mark_delivered, peek
from hyperhive.actors.broker_taken import STARTED, TAKEN, give_back, load, start
from hyperhive.store.models import Message, open_hive_db

# The messages table and its indexes as the daemon created them before the taken marks.
BEFORE = (
    'CREATE TABLE "messages" ("id" INTEGER NOT NULL PRIMARY KEY, "sender" VARCHAR(64) NOT NULL, '
    '"recipient" VARCHAR(64) NOT NULL, "body" TEXT NOT NULL, "sent_at" REAL NOT NULL, "delivered_at" REAL, '
    '"idempotency_key" VARCHAR(128))',
    'CREATE INDEX "message_recipient_delivered_at_id" ON "messages" ("recipient", "delivered_at", "id")',
    'CREATE UNIQUE INDEX "messages_sender_idempotency_key" ON "messages" ("sender", "idempotency_key") '
    'WHERE ("idempotency_key" IS NOT NULL)',
)
ROWS = [
    (1, "operator", "a", "read", 100.0, 101.0, None),
    (2, "b", "a", "waiting", 102.0, None, "k-1"),
    (3, "operator", "a", "waiting too", 103.0, None, None),
]


@pytest.fixture
def before(tmp_path: Path) -> Path:
    path = tmp_path / "hive.sqlite"
    with sqlite3.connect(path) as conn:
        for stmt in BEFORE:
            conn.execute(stmt)
        conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)", ROWS)
    conn.close()
    return path


@pytest.fixture
def opened(before: Path) -> Iterator[SqliteDatabase]:
    db = open_hive_db(before)
    yield db
    db.close()


def test_an_older_file_gains_the_columns_and_the_partial_index(before: Path, opened: SqliteDatabase) -> None:
    with sqlite3.connect(before) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(messages)")]
        index = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages_taken'").fetchone()
        rows = conn.execute("SELECT id, sender, recipient, body, sent_at, delivered_at, idempotency_key, "
                            "taken, redeliveries FROM messages ORDER BY id").fetchall()
    conn.close()
    assert cols[-2:] == ["taken", "redeliveries"]
    assert index is not None and "WHERE" in index[0] and '"taken" IS NOT NULL' in index[0]
    assert rows == [(*r, None, None) for r in ROWS]  # old rows: nothing taken, never delivered again
    assert load(opened).holding("a") == []


def test_the_marks_round_trip_through_a_reopen(before: Path, opened: SqliteDatabase) -> None:
    rows = peek(opened, "a")
    assert [m.id for m in rows] == [2, 3]
    mark_delivered(opened, rows, TAKEN)
    held = load(opened)
    start(opened, held, "a")
    opened.close()
    db = open_hive_db(before)  # a new daemon on the file
    try:
        held = load(db)
        assert held.started("a") == [2, 3]
        assert [(m.id, m.taken) for m in Message.select().where(Message.taken.is_null(False))] == \
            [(2, STARTED), (3, STARTED)]
        assert give_back(db, held, "a")
        assert [(m.id, m.taken, m.redeliveries, m.delivered_at) for m in
                Message.select().where(Message.id.in_([2, 3])).order_by(Message.id)] == \
            [(2, None, 1, None), (3, None, 1, None)]
    finally:
        db.close()
