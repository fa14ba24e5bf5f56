"""The Broker's group commit: the sends waiting for the next commit, the
batch one ``send_many`` answers together, and the insert that stores a batch
in one transaction, retried row by row (a savepoint each) when the store
refuses it, so one bad send fails only itself.

A storage fault (disk full, read-only, I/O error: `hyperhive.store.faults`) is
no fault of a row: the whole batch fails at once with ``StorageUnavailable``,
never retried row by row, and the connection is left out of any transaction
(sqlite may already have rolled it back), so the next commit starts clean.

A send with an idempotency key that was stored before (same sender, same key)
is not stored again: it is answered ``Duplicate(original id)``, an int."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from peewee import Database, DataError, IntegrityError

import hyperhive.logs as logs
from hyperhive.actors.bridge import Reply, fail, resolve
from hyperhive.actors.broker_core import RECV_BATCH, RECV_BYTES, Waiter
from hyperhive.actors.broker_reads import sql
from hyperhive.actors.broker_taken import TAKEN
from hyperhive.errors import BadRequest, HiveError, Internal, StorageUnavailable
from hyperhive.store.faults import storage_fault

__all__ = ["Batch", "Duplicate", "Pending", "answer_retries", "body_bytes", "insert_rows", "rows_for", "settle",
           "stored_keys", "store_error"]

_log = logs.get("hyperhive.broker")

_INSERT = (
    "INSERT INTO messages (sender, recipient, body, sent_at, delivered_at, idempotency_key, taken) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# sender, recipient, body, sent_at, delivered_at, key, taken (a system recv's wake: broker_taken.TAKEN)
Row = tuple[str, str, str, float, float | None, str | None, int | None]
Key = tuple[str, str]  # sender, idempotency_key
_IN_CHUNK = 500  # keys per lookup (sqlite binds at most 32766 parameters)


class Duplicate(int):
    """The reply to a retried send: the id of the message its key already names
    (nothing was stored). An int, so every caller of an id takes it as one."""


class Batch:
    """The replies of one ``send_many``: one slot per message, answered together."""

    def __init__(self, n: int, reply: Reply[list[int | HiveError]] | None) -> None:
        self.results: list[int | HiveError] = [0] * n
        self.left = n
        self.reply = reply

    def set(self, i: int, value: int | HiveError) -> None:
        self.results[i] = value
        self.left -= 1
        if self.left == 0:
            resolve(self.reply, self.results)


@dataclass
class Pending:
    """A send waiting for the next commit: its own reply, or a slot of a Batch."""
    sender: str
    to: str
    body: str
    reply: Reply[int] | None
    slot: tuple[Batch, int] | None = None
    key: str | None = None  # its idempotency key
    queued: float = field(default_factory=time.monotonic)  # for the wake latency (F45)
    # Retries of this send in the same batch (same sender and key): they get its outcome.
    retries: list[Pending] = field(default_factory=list)

    def done(self, value: int | HiveError) -> None:
        for r in self.retries:
            r.done(value if isinstance(value, HiveError) else Duplicate(value))
        if self.slot is not None:
            self.slot[0].set(self.slot[1], value)
        elif isinstance(value, HiveError):
            fail(self.reply, value)
        else:
            resolve(self.reply, value)


def body_bytes(body: str) -> int:
    return len(body) if body.isascii() else len(body.encode("utf-8", "surrogatepass"))


def rows_for(batch: list[Pending], waiters: Mapping[str, Waiter | None], now: float) -> list[Row]:
    """The rows to insert for ``batch``. Those for an agent with a parked recv
    (``waiters``) are stored delivered, as many as one recv takes (taken too,
    for a system recv's); the rest wait undelivered for its next recv."""
    taken: dict[str, list[int]] = {}
    params: list[Row] = []
    for p in batch:
        delivered, w = None, waiters[p.to]
        if w is not None:
            t = taken.setdefault(p.to, [0, 0])
            size = body_bytes(p.body)
            if t[0] < RECV_BATCH and (t[0] == 0 or t[1] + size <= RECV_BYTES):
                t[0] += 1
                t[1] += size
                delivered = now
        params.append((p.sender, p.to, p.body, now, delivered, p.key,
                       TAKEN if delivered is not None and w is not None and w.system else None))
    return params


def stored_keys(db: Database, keys: set[Key]) -> dict[Key, int]:
    """The ids of the messages already stored under ``keys``: one indexed
    lookup per sender and chunk of keys."""
    by_sender: dict[str, list[str]] = {}
    for sender, key in keys:
        by_sender.setdefault(sender, []).append(key)
    out: dict[Key, int] = {}
    for sender, ks in by_sender.items():
        for i in range(0, len(ks), _IN_CHUNK):
            chunk = ks[i:i + _IN_CHUNK]
            cur = sql(db).execute_sql(
                f"SELECT idempotency_key, id FROM messages WHERE sender = ? AND idempotency_key IN "  # noqa: S608
                f"({', '.join('?' * len(chunk))})", (sender, *chunk))
            out.update({(sender, str(k)): int(mid) for k, mid in cur.fetchall()})
    return out


def answer_retries(db: Database, batch: list[Pending]) -> list[Pending]:
    """The sends of ``batch`` to store. A retry of a send committed before is
    answered now (``Duplicate``), a retry of one in this batch waits for its
    outcome; the first with a key is stored."""
    keyed = {(p.sender, p.key) for p in batch if p.key is not None}
    if not keyed:
        return batch
    try:
        stored = stored_keys(db, keyed)
    except Exception:  # noqa: BLE001 - the unique index still refuses a second row
        _log.exception("broker.key_lookup_failed", count=len(keyed))
        stored = {}
    out: list[Pending] = []
    first: dict[tuple[str, str], Pending] = {}
    for p in batch:
        if p.key is None:
            out.append(p)
            continue
        k = (p.sender, p.key)
        if k in stored:
            p.done(Duplicate(stored[k]))
        elif k in first:
            first[k].retries.append(p)
        else:
            first[k] = p
            out.append(p)
    if len(out) < len(batch):
        _log.debug("broker.retries", count=len(batch) - len(out))
    return out


def insert_rows(db: Database, params: list[Row]) -> list[int | HiveError]:
    """Store the rows in one transaction; the new ids, in order. When the
    store refuses the batch, row by row: each refused row gets its error, and a
    keyed row whose key is taken (stored meanwhile by another writer) the
    original's id as a ``Duplicate``."""
    try:
        with db.atomic():
            cur = sql(db).cursor()
            cur.executemany(_INSERT, params)
            last = sql(db).execute_sql("SELECT last_insert_rowid()").fetchone()[0]
    except Exception as exc:  # noqa: BLE001 - every sender hears of it
        fault = storage_fault(exc)
        if fault is not None:
            return _storage_failed(db, len(params), fault)
        if len(params) == 1:
            dup = _taken(db, params[0], exc)
            if dup is not None:
                return [dup]
            _log.warning("broker.send_refused", error=f"{type(exc).__name__}: {exc}")
            return [store_error(exc)]
        _log.warning("broker.batch_refused", count=len(params), error=f"{type(exc).__name__}: {exc}")
        return _insert_each(db, params)
    first = last - len(params) + 1
    return list(range(first, last + 1))


def _insert_each(db: Database, params: list[Row]) -> list[int | HiveError]:
    out: list[int | HiveError] = []
    try:
        with db.atomic():
            cur = sql(db).cursor()
            for prm in params:
                try:
                    with db.atomic():  # a savepoint: a refused row leaves nothing behind
                        cur.execute(_INSERT, prm)
                    out.append(int(cur.lastrowid))
                except Exception as exc:  # noqa: BLE001 - this row's sender hears of it
                    if storage_fault(exc) is not None:
                        raise  # not this row's fault: the whole transaction fails
                    dup = _taken(db, prm, exc)
                    if dup is not None:
                        out.append(dup)
                        continue
                    _log.warning("broker.send_refused", error=f"{type(exc).__name__}: {exc}")
                    out.append(store_error(exc))
    except Exception as exc:  # noqa: BLE001 - the transaction itself failed: nothing is stored
        fault = storage_fault(exc)
        if fault is not None:
            return _storage_failed(db, len(params), fault)
        _log.exception("broker.commit_failed", count=len(params))
        err = store_error(exc)
        return [err] * len(params)
    return out


def _storage_failed(db: Database, n: int, fault: str) -> list[int | HiveError]:
    _log.error("broker.storage_failed", count=n, cause=fault)
    settle(db)
    return [StorageUnavailable(f"the message was not stored: {fault}")] * n


def settle(db: Database) -> None:
    """Leave this thread's connection out of any transaction after a failed
    commit (sqlite rolls some back itself, not all): the next BEGIN must work."""
    try:
        conn = sql(db).connection()
        if conn.in_transaction:
            conn.rollback()
    except Exception:  # noqa: BLE001 - the next commit reports the store's state
        _log.exception("broker.rollback_failed")


def _taken(db: Database, prm: Row, exc: BaseException) -> Duplicate | None:
    """The original's id when ``exc`` is the unique index refusing a keyed row."""
    if prm[5] is None or not isinstance(exc, (sqlite3.IntegrityError, IntegrityError)):
        return None
    key = (prm[0], prm[5])
    try:
        original = stored_keys(db, {key}).get(key)
    except Exception:  # noqa: BLE001 - then the row is refused with its own error
        _log.exception("broker.key_lookup_failed", count=1)
        return None
    return None if original is None else Duplicate(original)


def store_error(exc: BaseException) -> HiveError:
    """What a sender hears when the store refused its message."""
    if isinstance(exc, HiveError):
        return exc
    fault = storage_fault(exc)
    if fault is not None:
        return StorageUnavailable(f"the message was not stored: {fault}")
    if isinstance(exc, (DataError, sqlite3.DataError)):  # e.g. "string or blob too big"
        return BadRequest(f"the message cannot be stored: {exc}")
    if isinstance(exc, UnicodeError):
        return BadRequest(f"the message is not valid Unicode: {exc}")
    return Internal(f"could not store the message: {exc}")
