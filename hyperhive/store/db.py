"""Opening sqlite databases the one way that holds up under concurrent writers."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

__all__ = ["SYNCHRONOUS", "open_database", "pragmas", "synchronous_of"]

# What each promises, in WAL mode (https://sqlite.org/pragma.html#pragma_synchronous):
#   full:   every commit is synced to disk before it returns: it survives power loss and an OS crash.
#   normal: synced only at checkpoints: survives a process crash; power loss or an OS crash may lose
#           the last commits (never corrupts the file).
SYNCHRONOUS = ("full", "normal")
_LEVELS = {0: "off", 1: "normal", 2: "full", 3: "extra"}


def pragmas(synchronous: str = "normal") -> list[tuple[str, Any]]:
    """The pragmas every connection gets; auto_vacuum must come before journal_mode=wal on a new file."""
    if synchronous not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, got {synchronous!r}")
    return [
        ("auto_vacuum", "incremental"),
        ("journal_mode", "wal"),
        ("synchronous", synchronous),
        ("foreign_keys", 1),
        ("busy_timeout", 5000),
    ]


def open_database(path: Path, synchronous: str = "normal") -> SqliteDatabase:
    """A WAL database whose every transaction is BEGIN IMMEDIATE.

    A deferred BEGIN that later writes fails at once with "database is locked"
    when another writer holds the lock; IMMEDIATE waits on busy_timeout instead.
    ``synchronous`` (`SYNCHRONOUS`) is set on every connection (peewee opens one
    per thread). The default, ``normal``, is for logs that may lose their tail
    (the agents' event logs); hive.sqlite is opened ``full`` unless the operator
    opts out (`open_hive_db`, ``--db-synchronous``).
    """
    given = pragmas(synchronous)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.stat().st_size == 0:
        _create(path, given)
    # auto_vacuum only counts on a new file, and setting it on an existing one takes a
    # write: on a full disk every new connection (one per thread) would fail to open.
    db = SqliteDatabase(str(path), pragmas=[p for p in given if p[0] != "auto_vacuum"], lock_type="IMMEDIATE")
    db.connect(reuse_if_open=True)
    return db


def _create(path: Path, given: list[tuple[str, Any]]) -> None:
    """A new file gets auto_vacuum before journal_mode=wal (its header records both)."""
    conn = sqlite3.connect(path)
    try:
        for name, value in given:
            if name in ("auto_vacuum", "journal_mode"):
                conn.execute(f"PRAGMA {name} = {value}")
    finally:
        conn.close()


def synchronous_of(db: SqliteDatabase) -> str:
    """The calling thread's connection's synchronous level, by name (what the pragma really is)."""
    raw: Any = db  # peewee's calls are untyped
    level = raw.execute_sql("PRAGMA synchronous").fetchone()[0]
    return _LEVELS.get(level, str(level))
