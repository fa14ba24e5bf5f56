"""The Broker actor: owns the messages table and the parked recvs (F1–F4).

Every send is committed before its reply; sends that queue up while a commit
runs are written together in the next one (group commit). A message for an
agent with a parked recv is stored already delivered and handed to that recv
in the same commit, so a wake costs one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pykka
from peewee import Database, fn

import hyperhive.logs as logs
from hyperhive.actors.bridge import Reply, answer, claim, fail, resolve
from hyperhive.actors.broker_core import RECV_BATCH, BrokerCore, clamp_wait
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import Hub
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
RECENT_CAP = 500


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
        recv_default: float = 30.0, recv_cap: float = 180.0,
    ) -> None:
        super().__init__()
        self._db = db
        self._clock = clock
        self._hub = hub or Hub()
        self.core = BrokerCore(recv_default=recv_default, recv_cap=recv_cap)
        self._pending: list[_Pending] = []
        self._flush_queued = False
        self._me: Any = None

    def on_start(self) -> None:
        self._me = self.actor_ref.proxy()
        logs.bind_thread(actor="broker")

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
        waiters = {}
        for p in batch:
            if p.to not in waiters:
                waiters[p.to] = self.core.take_waiter(p.to)
        params = [
            (p.sender, p.to, p.body, now, now if waiters.get(p.to) else None) for p in batch
        ]
        try:
            with self._db.atomic():
                cur = self._db.cursor()
                cur.executemany(_INSERT, params)
                last = self._db.execute_sql("SELECT last_insert_rowid()").fetchone()[0]
        except Exception as exc:  # noqa: BLE001
            _log.exception("broker.commit_failed", count=len(batch))
            err = Internal(f"could not store the message: {exc}")
            for p in batch:
                p.done(err)
            for w in waiters.values():
                if w is not None:
                    fail(w.reply, err)
            return
        first = last - len(batch) + 1
        delivered: dict[str, list[InboxRow]] = {}
        for i, (p, prm) in enumerate(zip(batch, params, strict=True)):
            row = InboxRow(first + i, p.sender, p.to, p.body, now, prm[4])
            p.done(row.id)
            if prm[4] is not None:
                delivered.setdefault(p.to, []).append(row)
            self._hub.publish("message.sent", row.to_wire())
        woke_at = time.monotonic()
        for agent, rows in delivered.items():
            w = waiters[agent]
            assert w is not None
            resolve(w.reply, rows)
        for p, prm in zip(batch, params, strict=True):
            if prm[4] is not None:  # from the send's arrival to its recv's resolution
                self._hub.publish("message.woke", {"agent": p.to, "seconds": woke_at - p.queued})
        _log.debug("broker.send", count=len(batch), woke=len(delivered))

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
        if w is not None and claim(w.reply):
            resolve(w.reply, [])

    def drop_system_waiters(self, agent: str) -> None:
        """The agent's harness stopped or died: its parked recvs must not take
        messages before the daemon notices the closed connection."""
        for w in self.core.drop_system(agent):
            if claim(w.reply):
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
        return list(
            Message.select()
            .where((Message.recipient == agent) & (Message.delivered_at.is_null()))
            .order_by(Message.id)
            .limit(RECV_BATCH)
        )

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
        def run() -> list[InboxRow]:
            if limit < 1:
                raise BadRequest(f"limit must be >= 1, got {limit}")
            q = (Message.select().where(Message.recipient == agent)
                 .order_by(Message.id.desc()).limit(min(limit, RECENT_CAP)))
            return [_row(m) for m in reversed(list(q))]
        answer(reply, run)

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


class BrokerProxy(pykka.ActorProxy[Broker]):
    """Typed proxy for the Broker."""
