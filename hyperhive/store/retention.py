"""Retention helpers (F22): batched deletes of delivered messages and giving
freed pages back to the filesystem.

Batches keep each IMMEDIATE transaction short, so writers (a burst of sends,
a harness appending events) wait milliseconds, not the whole sweep.
"""

from __future__ import annotations

import sqlite3

from peewee import Database

from hyperhive.store.models import Message

__all__ = ["VACUUM_BATCH", "delete_delivered_batch", "incremental_vacuum"]

VACUUM_BATCH = 2000


def delete_delivered_batch(db: Database, cutoff: float, batch: int = VACUUM_BATCH) -> tuple[int, bool]:
    """Delete up to ``batch`` messages delivered before ``cutoff`` in one
    IMMEDIATE transaction. Undelivered messages are never touched, however old.

    Returns ``(deleted, more)``; ``more`` is True when a full batch went (call again).
    """
    oldest = (Message.select(Message.id)
              .where(Message.delivered_at.is_null(False) & (Message.delivered_at < cutoff))
              .order_by(Message.id).limit(batch))
    with db.atomic():  # one statement: the ids never come up into Python (nor go back down as parameters)
        deleted = int(Message.delete().where(Message.id.in_(oldest)).execute())
    return deleted, deleted == batch


def incremental_vacuum(db: Database) -> None:
    """Return free pages to the filesystem (the file uses auto_vacuum=incremental).

    Through ``executescript``: ``execute_sql("PRAGMA incremental_vacuum")``
    steps the pragma once and frees a single page (LIBRARY-NOTES §4).
    """
    conn: sqlite3.Connection = db.connection()  # type: ignore[no-untyped-call]  # unannotated in peewee-stubs
    conn.executescript("PRAGMA incremental_vacuum;")
