"""The Broker actor: owns the messages table and the parked recvs (F1–F4).

Every send is committed before its reply; sends that queue up while a commit
runs are written together in the next one (group commit). A message for an
agent with a parked recv is stored already delivered and handed to that recv
in the same commit, so a wake costs one transaction.

A group commit the store refuses is retried row by row (each row in its own
savepoint of one transaction): the row at fault fails alone, with its own
error, and the others are stored and acked. Replies are bounded: a recv takes
at most ``RECV_BATCH`` messages and about ``RECV_BYTES``, ``recent`` at most
``RECENT_BYTES`` of wire bytes (the oldest rows are left out, and it says so).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import pykka
from peewee import Database, DataError, fn

import hyperhive.logs as logs
from hyperhive.actors.bridge import Reply, answer, claim, fail, resolve
from hyperhive.actors.broker_core import RECV_BATCH, RECV_BYTES, BrokerCore, Waiter, clamp_wait
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import Hub, MessageSent, MessageWoke
from hyperhive.errors import BadRequest, HiveError, Internal, Unavailable
from hyperhive.store.models import Message
from hyperhive.store.retention import delete_delivered_batch, incremental_vacuum
from hyperhive.wire import InboxRow

__all__ = ["Broker", "BrokerProxy"]

_log = logs.get("hyperhive.broker")

_INSERT = (
    "INSERT INTO messages (sender, recipient, body, sent_at, delivered_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
RECENT_CAP = 500  # rows
RECENT_BYTES = 1 << 20  # wire bytes of the rows of one recent reply (the newest row always goes)
MAX_ROW_BYTES = 8 << 20  # sqlite's SQLITE_LIMIT_LENGTH on the Broker's connection: no message is bigger
_ROW_OVERHEAD = 120  # a wire row's bytes beside its body: keys, id, names, times


class _Batch:
    """The replies of one ``send_many``: one slot per message, answered together."""

    def __init__(self, n: int, reply: Reply | None) -> None:
        self.results: list[int | HiveError] = [0] * n
        self.left = n
        self.reply = reply

    def set(self, i: int, value: int | HiveError) -> None:
        self.results[i] = value
        self.left -= 1
        if self.left == 0:
            resolve(self.reply, self.results)


@dataclass
class _Pending:
    sender: str
    to: str
    body: str
    reply: Reply | None
    slot: tuple[_Batch, int] | None = None
    queued: float = field(default_factory=time.monotonic)  # for the wake latency (F45)

    def done(self, value: int | HiveError) -> None:
        if self.slot is not None:
            self.slot[0].set(self.slot[1], value)
        elif isinstance(value, HiveError):
            fail(self.reply, value)
        else:
            resolve(self.reply, value)


def _row(m: Any) -> InboxRow:
    return InboxRow(m.id, m.sender, m.recipient, m.body, m.sent_at, m.delivered_at)


class Broker(pykka.ThreadingActor):
    def __init__(
        self, db: Database, clock: LoopClock, hub: Hub | None = None,
        recv_default: float = 30.0, recv_cap: float = 180.0, max_row_bytes: int = MAX_ROW_BYTES,
    ) -> None:
        super().__init__()
        self._db = db
        self._max_row_bytes = max_row_bytes
        self._clock = clock
        self._hub = hub or Hub()
        self.core = BrokerCore(recv_default=recv_default, recv_cap=recv_cap)
        self._pending: list[_Pending] = []
        self._flush_queued = False
        self._me: Any = None

    def on_start(self) -> None:
        self._me = self.actor_ref.proxy()
        logs.bind_thread(actor="broker")
        # This thread's own connection (peewee keeps one per thread): the store
        # itself refuses a row over the limit, whatever path the body took.
        self._db.connection().setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self._max_row_bytes)

    def on_stop(self) -> None:
        self._flush()
        for w in self.core.drain():
            fail(w.reply, Unavailable("the daemon is shutting down"))

    # --- registry of agents ------------------------------------------------
    def register(self, agent: str, allowed: list[str] | None = None, reply: Reply | None = None) -> None:
        answer(reply, lambda: self.core.register(agent, None if allowed is None else frozenset(allowed)))

    def forget(self, agent: str, reply: Reply | None = None) -> None:
        answer(reply, lambda: self.core.forget(agent))

    # --- send --------------------------------------------------------------
    def send(self, sender: str, to: str, body: str, reply: Reply | None = None) -> None:
        """Queue a message; its reply (the new id) comes after the commit."""
        try:
            if not isinstance(body, str):
                raise BadRequest("body must be a string")
            self.core.check_send(sender, to)
        except HiveError as exc:
            if claim(reply):
                fail(reply, exc)
            return
        self._queue(_Pending(sender, to, body, reply))

    def send_many(self, items: list[tuple[str, str, str]], reply: Reply | None = None) -> None:
        """Queue several ``(sender, to, body)`` sends; ``reply`` gets one result
        per item, in order: the new message id, or the HiveError refusing it."""
        if not claim(reply):
            return
        batch = _Batch(len(items), reply)
        if not items:
            resolve(reply, [])
        for i, (sender, to, body) in enumerate(items):
            try:
                if not isinstance(body, str):
                    raise BadRequest("body must be a string")
                self.core.check_send(sender, to)
            except HiveError as exc:
                batch.set(i, exc)
                continue
            self._queue(_Pending(sender, to, body, None, (batch, i)))

    def _queue(self, p: _Pending) -> None:
        self._pending.append(p)
        if not self._flush_queued:
            self._flush_queued = True
            self._me.flush.defer()

    def flush(self) -> None:
        self._flush_queued = False
        try:
            self._flush()
        except Exception:  # noqa: BLE001 - a tell must never kill the broker
            _log.exception("broker.flush_failed")

    def _flush(self) -> None:
        batch = [p for p in self._pending if claim(p.reply)]
        self._pending = []
        if not batch:
            return
        now = time.time()
        waiters: dict[str, Waiter | None] = {}
        for p in batch:
            if p.to not in waiters:
                waiters[p.to] = self.core.take_waiter(p.to)
        # Rows for an agent with a parked recv are stored delivered, as many as
        # one recv takes; the rest wait undelivered for its next recv.
        taken: dict[str, list[int]] = {}
        params = []
        for p in batch:
            delivered = None
            if waiters[p.to] is not None:
                t = taken.setdefault(p.to, [0, 0])
                size = _body_bytes(p.body)
                if t[0] < RECV_BATCH and (t[0] == 0 or t[1] + size <= RECV_BYTES):
                    t[0] += 1
                    t[1] += size
                    delivered = now
            params.append((p.sender, p.to, p.body, now, delivered))
        results = self._insert(params)
        delivered_rows: dict[str, list[InboxRow]] = {}
        for p, prm, result in zip(batch, params, results, strict=True):
            if isinstance(result, HiveError):
                p.done(result)
                continue
            row = InboxRow(result, p.sender, p.to, p.body, now, prm[4])
            p.done(row.id)
            if prm[4] is not None:
                delivered_rows.setdefault(p.to, []).append(row)
            self._hub.publish(MessageSent(row.to_wire()))
        woke_at = time.monotonic()
        for agent, w in waiters.items():
            if w is None:
                continue
            rows = delivered_rows.get(agent)
            if rows:
                resolve(w.reply, rows)
            else:  # every message for it was refused: it waits on
                self.core.repark(w)
        for p, prm, result in zip(batch, params, results, strict=True):
            if prm[4] is not None and not isinstance(result, HiveError):  # from the send's arrival to its recv
                self._hub.publish(MessageWoke(p.to, woke_at - p.queued))
        _log.debug("broker.send", count=len(batch), woke=len(delivered_rows))

    def _insert(self, params: list[tuple[Any, ...]]) -> list[int | HiveError]:
        """Store the rows in one transaction; the new ids, in order. When the
        store refuses the batch, row by row: each refused row gets its error."""
        try:
            with self._db.atomic():
                cur = self._db.cursor()
                cur.executemany(_INSERT, params)
                last = self._db.execute_sql("SELECT last_insert_rowid()").fetchone()[0]
        except Exception as exc:  # noqa: BLE001 - every sender hears of it
            if len(params) == 1:
                _log.warning("broker.send_refused", error=f"{type(exc).__name__}: {exc}")
                return [_store_error(exc)]
            _log.warning("broker.batch_refused", count=len(params), error=f"{type(exc).__name__}: {exc}")
            return self._insert_each(params)
        first = last - len(params) + 1
        return list(range(first, last + 1))

    def _insert_each(self, params: list[tuple[Any, ...]]) -> list[int | HiveError]:
        out: list[int | HiveError] = []
        try:
            with self._db.atomic():
                cur = self._db.cursor()
                for prm in params:
                    try:
                        with self._db.atomic():  # a savepoint: a refused row leaves nothing behind
                            cur.execute(_INSERT, prm)
                        out.append(int(cur.lastrowid))
                    except Exception as exc:  # noqa: BLE001 - this row's sender hears of it
                        _log.warning("broker.send_refused", error=f"{type(exc).__name__}: {exc}")
                        out.append(_store_error(exc))
        except Exception as exc:  # noqa: BLE001 - the transaction itself failed: nothing is stored
            _log.exception("broker.commit_failed", count=len(params))
            err = _store_error(exc)
            return [err] * len(params)
        return out

    # --- recv --------------------------------------------------------------
    def recv(
        self, agent: str, wait_seconds: float | None = None, system: bool = False,
        reply: Reply | None = None,
    ) -> None:
        """Resolve ``reply`` with the oldest undelivered messages, or park."""
        try:
            wait = clamp_wait(wait_seconds, self.core.recv_default, self.core.recv_cap)
        except HiveError as exc:
            if claim(reply):
                fail(reply, exc)
            return
        if reply is not None and reply.done():
            return
        rows = self._peek(agent)
        if rows or wait <= 0:
            if claim(reply):
                try:
                    resolve(reply, self._mark_delivered(rows))
                except Exception as exc:  # noqa: BLE001
                    _log.exception("broker.recv_failed", agent=agent)
                    fail(reply, Internal(f"recv failed: {exc}"))
            return
        assert reply is not None
        w = self.core.park(agent, system, reply, time.monotonic() + wait)
        self._clock.call_later(wait, self._me.expire.defer, w.id, agent)

    def expire(self, waiter_id: int, agent: str) -> None:
        w = self.core.expire(waiter_id, agent)
        if w is not None and w.take():
            resolve(w.reply, [])

    def drop_system_waiters(self, agent: str) -> None:
        """The agent's harness stopped or died: its parked recvs must not take
        messages before the daemon notices the closed connection."""
        for w in self.core.drop_system(agent):
            if w.take():
                resolve(w.reply, [])

    def requeue(self, ids: list[int]) -> None:
        """Undo a delivery whose recv never reached its caller."""
        try:
            if not ids:
                return
            with self._db.atomic():
                Message.update(delivered_at=None).where(Message.id.in_(ids)).execute()
                agents = {m.recipient for m in Message.select(Message.recipient).where(Message.id.in_(ids))}
            _log.info("broker.requeue", ids=ids)
            for agent in agents:
                self._wake(agent)
        except Exception:  # noqa: BLE001
            _log.exception("broker.requeue_failed", ids=ids)

    def _wake(self, agent: str) -> None:
        rows = self._peek(agent)
        if not rows:
            return
        w = self.core.take_waiter(agent)
        if w is not None:
            resolve(w.reply, self._mark_delivered(rows))

    def _peek(self, agent: str) -> list[Any]:
        """The oldest undelivered messages one recv takes: at most RECV_BATCH,
        and no more than about RECV_BYTES of bodies (at least one message)."""
        sizes = self._db.execute_sql(
            "SELECT id, length(CAST(body AS BLOB)) FROM messages "
            "WHERE recipient = ? AND delivered_at IS NULL ORDER BY id LIMIT ?", (agent, RECV_BATCH),
        ).fetchall()
        if not sizes:
            return []
        ids = _within(sizes, RECV_BYTES)
        return list(Message.select().where(Message.id.in_(ids)).order_by(Message.id))

    def _mark_delivered(self, rows: list[Any]) -> list[InboxRow]:
        if not rows:
            return []
        now = time.time()
        with self._db.atomic():
            Message.update(delivered_at=now).where(
                Message.id.in_([m.id for m in rows]) & Message.delivered_at.is_null()
            ).execute()
        for m in rows:
            m.delivered_at = now
        return [_row(m) for m in rows]

    # --- reads ---------------------------------------------------------------
    def recent(self, agent: str, limit: int = 20, reply: Reply | None = None) -> None:
        """The newest ``limit`` rows to ``agent``, oldest first, within RECENT_BYTES."""
        answer(reply, lambda: self._recent(agent, limit, RECENT_BYTES)[0])

    def recent_page(self, agent: str, limit: int = 20, max_bytes: int = RECENT_BYTES,
                    reply: Reply | None = None) -> None:
        """``(rows, truncated)``: as ``recent``; ``truncated`` when older rows
        within ``limit`` were left out: to keep the reply under ``max_bytes``,
        or past the RECENT_CAP rows one reply holds."""
        answer(reply, lambda: self._recent(agent, limit, max_bytes))

    def _recent(self, agent: str, limit: int, max_bytes: int) -> tuple[list[InboxRow], bool]:
        if limit < 1:
            raise BadRequest(f"limit must be >= 1, got {limit}")
        want = min(limit, RECENT_CAP)
        # Sizes first (newest first): the bodies of rows that cannot fit are never read.
        # One more than taken tells whether rows past the row cap were left out.
        sizes = self._db.execute_sql(
            "SELECT id, length(CAST(body AS BLOB)) FROM messages WHERE recipient = ? ORDER BY id DESC LIMIT ?",
            (agent, want + 1 if limit > want else want),
        ).fetchall()
        ids = _within(sizes[:want], max_bytes)
        rows: list[InboxRow] = []
        used = 0
        # Exact wire sizes now (escapes only make a body longer on the wire).
        for m in Message.select().where(Message.id.in_(ids)).order_by(Message.id.desc()):
            row = _row(m)
            size = len(json.dumps(row.to_wire(), ensure_ascii=False).encode("utf-8", "surrogatepass")) + 1
            if rows and used + size > max_bytes:
                break
            rows.append(row)
            used += size
        rows.reverse()
        return rows, len(rows) < len(sizes)  # rows left out: for bytes, or past the row cap

    def mark_read(self, agent: str, reply: Reply | None = None) -> None:
        """Mark every undelivered message to ``agent`` delivered (the operator read them)."""
        def run() -> int:
            with self._db.atomic():
                return int(Message.update(delivered_at=time.time()).where(
                    (Message.recipient == agent) & Message.delivered_at.is_null()).execute())
        answer(reply, run)

    def stats(self, reply: Reply | None = None) -> None:
        def run() -> dict[str, Any]:
            q = (Message.select(Message.recipient, fn.COUNT(Message.id))
                 .where(Message.delivered_at.is_null()).group_by(Message.recipient).tuples())
            undelivered: dict[str, int] = {str(r[0]): int(r[1]) for r in q}  # type: ignore[index]
            return {"parked": self.core.parked(), "undelivered": undelivered}
        answer(reply, run)

    # --- retention (F22) -----------------------------------------------------
    def vacuum(self, now: float, max_age: float, reply: Reply | None = None) -> None:
        """Delete messages delivered more than ``max_age`` seconds before ``now``
        (undelivered ones are always kept); reply with how many went.

        One batch per message to itself, so sends queued meanwhile are served
        between batches instead of waiting for the whole sweep.
        """
        if claim(reply):
            self.vacuum_step(now - max_age, 0, reply)

    def vacuum_step(self, cutoff: float, removed: int, reply: Reply | None) -> None:
        try:
            deleted, more = delete_delivered_batch(self._db, cutoff)
            removed += deleted
            if more:
                self._me.vacuum_step.defer(cutoff, removed, reply)
                return
            if removed:
                incremental_vacuum(self._db)
            resolve(reply, removed)
        except Exception as exc:  # noqa: BLE001 - a tell must never kill the broker
            _log.exception("broker.vacuum_failed", removed=removed)
            fail(reply, Internal(f"vacuum failed: {exc}"))


def _body_bytes(body: str) -> int:
    return len(body) if body.isascii() else len(body.encode("utf-8", "surrogatepass"))


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


def _store_error(exc: BaseException) -> HiveError:
    """What a sender hears when the store refused its message."""
    if isinstance(exc, HiveError):
        return exc
    if isinstance(exc, (DataError, sqlite3.DataError)):  # e.g. "string or blob too big"
        return BadRequest(f"the message cannot be stored: {exc}")
    if isinstance(exc, UnicodeError):
        return BadRequest(f"the message is not valid Unicode: {exc}")
    return Internal(f"could not store the message: {exc}")


class BrokerProxy(pykka.ActorProxy[Broker]):
    """Typed proxy for the Broker."""
