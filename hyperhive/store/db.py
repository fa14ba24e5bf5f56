"""Opening sqlite databases the one way that holds up under concurrent writers."""

from __future__ import annotations

from pathlib import Path

from peewee import SqliteDatabase

__all__ = ["PRAGMAS", "open_database"]

# auto_vacuum must come before journal_mode=wal on a new file.
PRAGMAS = [
    ("auto_vacuum", "incremental"),
    ("journal_mode", "wal"),
    ("synchronous", "normal"),
    ("foreign_keys", 1),
    ("busy_timeout", 5000),
]


def open_database(path: Path) -> SqliteDatabase:
    """A WAL database whose every transaction is BEGIN IMMEDIATE.

    A deferred BEGIN that later writes fails at once with "database is locked"
    when another writer holds the lock; IMMEDIATE waits on busy_timeout instead.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = SqliteDatabase(str(path), pragmas=PRAGMAS, lock_type="IMMEDIATE")
    db.connect(reuse_if_open=True)
    return db
