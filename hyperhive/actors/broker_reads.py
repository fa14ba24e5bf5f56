"""The Broker's reads of the messages table: what one recv takes (``peek``,
then ``mark_delivered``) and a ``recent`` page, each bounded in wire bytes:
sizes are read first, so the bodies of rows that cannot fit are never read."""

from __future__ import annotations

import json
import time
from typing import Any

from peewee import Database

from hyperhive.actors.broker_core import RECV_BATCH, RECV_BYTES
from hyperhive.errors import BadRequest
from hyperhive.store.models import Message
from hyperhive.wire import InboxRow

__all__ = ["RECENT_BYTES", "RECENT_CAP", "mark_delivered", "peek", "recent_page", "sql", "to_row"]

RECENT_CAP = 500  # rows
RECENT_BYTES = 1 << 20  # wire bytes of the rows of one recent reply (the newest row always goes)
_ROW_OVERHEAD = 120  # a wire row's bytes beside its body: keys, id, names, times


def sql(db: Database) -> Any:
    """The database for a raw call (peewee's are untyped)."""
    return db


def to_row(m: Any) -> InboxRow:
    return InboxRow(m.id, m.sender, m.recipient, m.body, m.sent_at, m.delivered_at)


def peek(db: Database, agent: str) -> list[Any]:
    """The oldest undelivered messages one recv takes: at most RECV_BATCH,
    and no more than about RECV_BYTES of bodies (at least one message)."""
    sizes = sql(db).execute_sql(
        "SELECT id, length(CAST(body AS BLOB)) FROM messages "
        "WHERE recipient = ? AND delivered_at IS NULL ORDER BY id LIMIT ?", (agent, RECV_BATCH),
    ).fetchall()
    if not sizes:
        return []
    ids = _within(sizes, RECV_BYTES)
    return list(Message.select().where(Message.id.in_(ids)).order_by(Message.id))


def mark_delivered(db: Database, rows: list[Any], taken: int | None = None) -> list[InboxRow]:
    """Mark ``rows`` delivered; ``taken`` (a system recv's: `broker_taken.TAKEN`)
    marks them taken by its harness's turn in the same commit."""
    if not rows:
        return []
    now = time.time()
    with db.atomic():
        Message.update(delivered_at=now, taken=taken).where(
            Message.id.in_([m.id for m in rows]) & Message.delivered_at.is_null()
        ).execute()
    for m in rows:
        m.delivered_at = now
    return [to_row(m) for m in rows]


def recent_page(db: Database, agent: str, limit: int, max_bytes: int) -> tuple[list[InboxRow], bool]:
    """The newest ``limit`` rows to ``agent`` (at most RECENT_CAP), oldest first,
    within ``max_bytes``; True when older rows within ``limit`` were left out."""
    if limit < 1:
        raise BadRequest(f"limit must be >= 1, got {limit}")
    want = min(limit, RECENT_CAP)
    # Sizes first (newest first): the bodies of rows that cannot fit are never read.
    # One more than taken tells whether rows past the row cap were left out.
    sizes = sql(db).execute_sql(
        "SELECT id, length(CAST(body AS BLOB)) FROM messages WHERE recipient = ? ORDER BY id DESC LIMIT ?",
        (agent, want + 1 if limit > want else want),
    ).fetchall()
    ids = _within(sizes[:want], max_bytes)
    rows: list[InboxRow] = []
    used = 0
    # Exact wire sizes now (escapes only make a body longer on the wire).
    for m in Message.select().where(Message.id.in_(ids)).order_by(Message.id.desc()):
        row = to_row(m)
        size = len(json.dumps(row.to_wire(), ensure_ascii=False).encode("utf-8", "surrogatepass")) + 1
        if rows and used + size > max_bytes:
            break
        rows.append(row)
        used += size
    rows.reverse()
    return rows, len(rows) < len(sizes)  # rows left out: for bytes, or past the row cap


def _within(sizes: list[tuple[int, int | None]], budget: int) -> list[int]:
    """The ids of the leading rows whose wire sizes (about body + overhead) fit
    in ``budget``; the first row always."""
    ids: list[int] = []
    used = 0
    for msg_id, size in sizes:
        cost = (size or 0) + _ROW_OVERHEAD
        if ids and used + cost > budget:
            break
        ids.append(msg_id)
        used += cost
    return ids
