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

Exactly once across retries (issue 16): a send may carry an idempotency key,
unique per sender. A retry (same sender, same key) stores nothing and is
answered with the original id as a ``Duplicate``: at once when the original
was committed before (the key is in sqlite, so also after a restart), with the
original's outcome when both are in the same group commit. The key names the
send: a retry's recipient and body are not compared (NATS JetStream's
``Nats-Msg-Id`` does the same and flags the ack a duplicate).

Storage faults (issue 16): a commit the store cannot make (disk full,
read-only, I/O error) fails every send of its batch with
``storage_unavailable`` (never acknowledged), and the next commit tries again:
the Broker recovers by itself when the storage works again. ``stats()["storage"]``
counts the failed commits by op and says whether the last one failed (the
``/metrics`` counter and the dashboard's banner).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

import pykka
from peewee import Database, fn

import hyperhive.logs as logs
from hyperhive.actors.bridge import Handle, Reply, answers, claim, fail, parks, resolve
from hyperhive.actors.broker_commit import (
    Batch,
    Duplicate,
    Pending,
    answer_retries,
    insert_rows,
    rows_for,
    settle,
)
from hyperhive.actors.broker_core import (
    BrokerCore,
    Waiter,
    check_idempotency_key,
    clamp_wait,
)
from hyperhive.actors.broker_reads import RECENT_BYTES, RECENT_CAP, mark_delivered, peek, recent_page, sql
from hyperhive.actors.broker_taken import TAKEN, InFlight, finish, give_back, load, start
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import Hub, MessageSent, MessageWoke
from hyperhive.actors.handoff import one_handoff
from hyperhive.errors import BadRequest, HiveError, Internal, StorageUnavailable, Unavailable
from hyperhive.names import SYSTEM
from hyperhive.store.faults import storage_fault
from hyperhive.store.models import Message
from hyperhive.store.retention import delete_delivered_batch, incremental_vacuum
from hyperhive.wire import InboxRow

__all__ = ["MAX_ROW_BYTES", "RECENT_BYTES", "RECENT_CAP", "Broker", "Duplicate", "SendItem"]

_log = logs.get("hyperhive.broker")

MAX_ROW_BYTES = 8 << 20  # sqlite's SQLITE_LIMIT_LENGTH on the Broker's connection: no message is bigger
# (sender, to, body) or (sender, to, body, idempotency_key)
SendItem = tuple[str, str, str] | tuple[str, str, str, str | None]


def _check_body(body: object) -> None:
    if not isinstance(body, str):
        raise BadRequest("body must be a string")


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
        self._pending: list[Pending] = []
        self._flush_queued = False
        self._me: Handle[Broker] | None = None
        # Storage faults: failed commits by op, and the last commit's fault (None: it worked).
        self._storage_failures: dict[str, int] = {}
        self._storage_fault: str | None = None
        self.held = InFlight()  # what the harnesses' turns took and did not finish (loaded at start)

    @property
    def me(self) -> Handle[Broker]:
        assert self._me is not None, "the Broker has not started"
        return self._me

    def on_start(self) -> None:
        self._me = Handle(self.actor_ref.proxy())
        logs.bind_thread(actor="broker")
        # This thread's own connection (peewee keeps one per thread): the store
        # itself refuses a row over the limit, whatever path the body took.
        sql(self._db).connection().setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self._max_row_bytes)
        try:
            self.held = load(self._db)  # a harness adopted at boot still holds what it took
        except Exception:  # noqa: BLE001 - the daemon runs on; those marks stay in the store
            _log.exception("inflight.load_failed")

    def on_stop(self) -> None:
        self._flush()
        for w in self.core.drain():
            fail(w.reply, Unavailable("the daemon is shutting down"))

    # --- registry of agents ------------------------------------------------
    @answers
    def register(self, agent: str, allowed: list[str] | None = None) -> None:
        self.core.register(agent, None if allowed is None else frozenset(allowed))

    @answers
    def forget(self, agent: str) -> None:
        self.core.forget(agent)

    # --- send --------------------------------------------------------------
    @parks
    def send(self, reply: Reply[int] | None, sender: str, to: str, body: str, key: str | None = None) -> None:
        """Queue a message; its reply (the new id, or the ``Duplicate`` id of
        the one its ``key`` names) comes after the commit."""
        try:
            _check_body(body)
            check_idempotency_key(key)
            self.core.check_send(sender, to)
        except HiveError as exc:
            if claim(reply):
                fail(reply, exc)
            return
        self._pending.append(Pending(sender, to, body, reply, key=key))
        self._flush_soon()

    @parks
    def send_many(self, reply: Reply[list[int | HiveError]] | None, items: Sequence[SendItem]) -> None:
        """Queue several ``(sender, to, body[, idempotency_key])`` sends; ``reply``
        gets one result per item, in order: the new message id (a ``Duplicate``
        for a retry), or the HiveError refusing it."""
        if not claim(reply):
            return
        batch = Batch(len(items), reply)
        if not items:
            resolve(reply, [])
        for i, item in enumerate(items):
            sender, to, body = item[0], item[1], item[2]
            key = item[3] if len(item) > 3 else None
            try:
                _check_body(body)
                check_idempotency_key(key)
                self.core.check_send(sender, to)
            except HiveError as exc:
                batch.set(i, exc)
                continue
            self._pending.append(Pending(sender, to, body, None, (batch, i), key=key))
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Commit now if nothing waits in the inbox (no send could join this
        commit); else once what waits is taken in, so sends queued meanwhile go
        in the same commit (one flush told at a time)."""
        if not self._pending or self._flush_queued:
            return
        if self.actor_inbox.empty():
            self.flush()
        else:
            self._flush_queued = True
            self.me.tell(Broker.flush)

    def flush(self) -> None:
        self._flush_queued = False
        try:
            with one_handoff():  # every reply of the commit reaches the loop in one wake-up, at the end
                self._flush()
        except Exception:  # noqa: BLE001 - a tell must never kill the broker
            _log.exception("broker.flush_failed")

    def _flush(self) -> None:
        batch = [p for p in self._pending if claim(p.reply)]
        self._pending = []
        batch = answer_retries(self._db, batch)
        if not batch:
            return
        now = time.time()
        waiters: dict[str, Waiter | None] = {}
        for p in batch:
            if p.to not in waiters:
                waiters[p.to] = self.core.take_waiter(p.to)
        params = rows_for(batch, waiters, now)
        results = insert_rows(self._db, params)
        refused = next((r for r in results if isinstance(r, StorageUnavailable)), None)
        self._storage_outcome("send", None if refused is None else refused.message)
        outcomes: list[int | HiveError] = []
        stored: list[tuple[Pending, InboxRow]] = []
        delivered_rows: dict[str, list[InboxRow]] = {}
        for p, prm, result in zip(batch, params, results, strict=True):
            outcomes.append(result)
            if isinstance(result, HiveError | Duplicate):  # refused, or its key was taken meanwhile
                continue
            row = InboxRow(result, p.sender, p.to, p.body, now, prm[4])
            stored.append((p, row))
            if prm[4] is not None:
                delivered_rows.setdefault(p.to, []).append(row)
                if prm[6] is not None:
                    self.held.took(p.to, {row.id: 0})
        # The wakes first, then the acks: all reach the loop in one hand-over (flush's one_handoff).
        woke_at = time.monotonic()
        for agent, w in waiters.items():
            if w is None:
                continue
            rows = delivered_rows.get(agent)
            if rows:
                resolve(w.reply, rows)
            else:  # every message for it was refused: it waits on
                self.core.repark(w)
        for p, outcome in zip(batch, outcomes, strict=True):
            p.done(outcome)
        for p, row in stored:
            self._hub.publish(MessageSent(row.to_wire()))
            if row.delivered_at is not None:  # from arrival to its recv
                self._hub.publish(MessageWoke(p.to, woke_at - p.queued))

    # --- recv --------------------------------------------------------------
    @parks
    def recv(self, reply: Reply[list[InboxRow]] | None, agent: str, wait_seconds: float | None = None,
             system: bool = False) -> None:
        """Resolve ``reply`` with the oldest undelivered messages, or park."""
        try:
            wait = clamp_wait(wait_seconds, self.core.recv_default, self.core.recv_cap)
        except HiveError as exc:
            if claim(reply):
                fail(reply, exc)
            return
        if reply is not None and reply.done():
            return
        rows = peek(self._db, agent)
        if rows or wait <= 0:
            if claim(reply):
                try:
                    resolve(reply, self._deliver(agent, rows, system))
                except Exception as exc:  # noqa: BLE001
                    fault = storage_fault(exc)
                    if fault is None:
                        _log.exception("broker.recv_failed", agent=agent)
                    else:  # the store's state, not a bug: no traceback (nothing was marked delivered)
                        _log.warning("broker.recv_failed", agent=agent, fault=fault)
                        settle(self._db)
                    self._storage_outcome("recv", fault)
                    fail(reply, Internal(f"recv failed: {exc}") if fault is None
                         else StorageUnavailable(f"recv failed: {fault}"))
            return
        assert reply is not None
        w = self.core.park(agent, system, reply, time.monotonic() + wait)
        self._clock.call_later(wait, self.me.tell, Broker.expire, w.id, agent)

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
                Message.update(delivered_at=None, taken=None).where(Message.id.in_(ids)).execute()
                agents = {m.recipient for m in Message.select(Message.recipient).where(Message.id.in_(ids))}
            self.held.release(ids)
            _log.info("broker.requeue", ids=ids)
            for agent in agents:
                self._wake(agent)
        except Exception:  # noqa: BLE001
            _log.exception("broker.requeue_failed", ids=ids)

    def _wake(self, agent: str) -> None:
        rows = peek(self._db, agent)
        if not rows:
            return
        w = self.core.take_waiter(agent)
        if w is not None:
            resolve(w.reply, self._deliver(agent, rows, w.system))

    def _deliver(self, agent: str, rows: list[Any], system: bool) -> list[InboxRow]:
        """Mark ``rows`` delivered; a system recv's are taken by its harness's turn (same commit)."""
        out = mark_delivered(self._db, rows, TAKEN if system else None)
        if system:
            self.held.took(agent, {m.id: m.redeliveries or 0 for m in rows})
        return out

    # --- what the harnesses' turns took (issue 16, broker_taken) ---------------
    def turn_started(self, agent: str) -> None:
        start(self._db, self.held, agent)

    def turn_done(self, agent: str) -> None:
        finish(self._db, self.held, agent)

    def harness_gone(self, agent: str, waiting: Callable[[], None] | None = None) -> None:
        """The agent's harness stopped, died, or was found dead at boot: its parked
        recvs go, and what its turns took and did not finish is delivered again.
        ``waiting()`` then runs if a message waits for it (a hibernated agent wakes)."""
        self.drop_system_waiters(agent)
        if give_back(self._db, self.held, agent):
            self._wake(agent)
        if waiting is not None and peek(self._db, agent):
            waiting()

    def kick(self, agent: str, text: Callable[[int, int], str]) -> None:
        """A (re)start's message from system; ``text(delivered again, given up)``:
        what the agent's last harness left unfinished."""
        self.send(SYSTEM, agent, text(*self.held.interrupted(agent)))

    # --- reads ---------------------------------------------------------------
    @answers
    def recent(self, agent: str, limit: int = 20) -> list[InboxRow]:
        """The newest ``limit`` rows to ``agent``, oldest first, within RECENT_BYTES."""
        return recent_page(self._db, agent, limit, RECENT_BYTES)[0]

    @answers
    def recent_page(self, agent: str, limit: int = 20, max_bytes: int = RECENT_BYTES) -> tuple[list[InboxRow], bool]:
        """``(rows, truncated)``: as ``recent``; ``truncated`` when older rows
        within ``limit`` were left out: to keep the reply under ``max_bytes``,
        or past the RECENT_CAP rows one reply holds."""
        return recent_page(self._db, agent, limit, max_bytes)

    @answers
    def mark_read(self, agent: str) -> int:
        """Mark every undelivered message to ``agent`` delivered (the operator read them)."""
        with self._db.atomic():
            return int(Message.update(delivered_at=time.time()).where(
                (Message.recipient == agent) & Message.delivered_at.is_null()).execute())

    @answers
    def stats(self) -> dict[str, Any]:
        q = (Message.select(Message.recipient, fn.COUNT(Message.id))
             .where(Message.delivered_at.is_null()).group_by(Message.recipient).tuples())
        undelivered: dict[str, int] = {str(r[0]): int(r[1]) for r in q}  # type: ignore[index]
        return {"parked": self.core.parked(), "undelivered": undelivered, "storage": self.storage()}

    def storage(self) -> dict[str, Any]:
        """``{"failures": {op: failed commits}, "failing": the last commit's fault or None}``."""
        return {"failures": dict(self._storage_failures), "failing": self._storage_fault}

    def _storage_outcome(self, op: str, fault: str | None) -> None:
        """Record a commit's outcome: ``fault`` when the store could not write."""
        if fault is not None:
            self._storage_failures[op] = self._storage_failures.get(op, 0) + 1
        elif self._storage_fault is not None:
            _log.info("broker.storage_recovered", op=op)
        self._storage_fault = fault

    # --- retention (F22) -----------------------------------------------------
    @parks
    def vacuum(self, reply: Reply[int] | None, now: float, max_age: float) -> None:
        """Delete messages delivered more than ``max_age`` seconds before ``now``
        (undelivered ones are always kept); reply with how many went.

        One batch per message to itself, so sends queued meanwhile are served
        between batches instead of waiting for the whole sweep.
        """
        if claim(reply):
            self.vacuum_step(now - max_age, 0, reply)

    def vacuum_step(self, cutoff: float, removed: int, reply: Reply[int] | None) -> None:
        try:
            deleted, more = delete_delivered_batch(self._db, cutoff)
            removed += deleted
            if more:
                self.me.tell(Broker.vacuum_step, cutoff, removed, reply)
                return
            if removed:
                incremental_vacuum(self._db)
            resolve(reply, removed)
        except Exception as exc:  # noqa: BLE001 - a tell must never kill the broker
            _log.exception("broker.vacuum_failed", removed=removed)
            fail(reply, Internal(f"vacuum failed: {exc}"))
