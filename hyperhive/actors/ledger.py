"""The Ledger actor (issue 15): usage in hive.sqlite, written and read off the
IOLoop. The spend table (`web.tables.spend`, on the loop) decides; this
actor keeps the record: one row per model call the gateway saw, one per turn,
and what the retention sweep folds into the archive after
``usage_retention_days``.

Writes are tells (nothing on the loop waits for sqlite); reads are asks.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
from peewee import Database

import hyperhive.logs as logs
from hyperhive.actors.bridge import Handle, answers
from hyperhive.store import usage as store
from hyperhive.store.faults import storage_fault
from hyperhive.store.usage import CallRow, Loaded

__all__ = ["Ledger"]

_log = logs.get("hyperhive.ledger")
FLUSH_SECONDS = 0.25
RETRY_SECONDS = 5.0  # after a storage fault (a full disk): the rows wait, at most MAX_PENDING of them
MAX_PENDING = 100_000
SWEEP_BATCH = 2000  # calls the sweep folds per transaction


class Ledger(pykka.ThreadingActor):
    """Writes are batched: each tell queues its write, and the queue is written
    in one transaction at most every ``interval`` seconds (a row per model call,
    from every agent: one commit each would cost more than the rest of the
    counting). Every read flushes first, so it sees every write told before it;
    the daemon's stop flushes what is left. A daemon killed outright loses at
    most ``interval`` seconds of rows (the calls themselves went through)."""

    def __init__(self, db: Database, interval: float = FLUSH_SECONDS, *, sweep_batch: int = SWEEP_BATCH) -> None:
        super().__init__()
        self._db = db
        self._interval = interval
        self._sweep_batch = sweep_batch
        self._pending: list[tuple[str, Any]] = []
        self._me: Handle[Ledger] | None = None
        self._last_flush = 0.0
        self._timer: threading.Timer | None = None

    def on_start(self) -> None:
        self._me = Handle(self.actor_ref.proxy())
        logs.bind_thread(actor="ledger")

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()

    # --- writes (tells: a failure is logged, never raised to the loop) -------------
    def record_call(self, row: CallRow) -> None:
        self._queue("call", row)

    def turn_started(self, turn: int, agent: str, at: float) -> None:
        self._queue("start", (turn, agent, at))

    def turn_ended(self, turn: int, at: float, reported: float | None, extra: float = 0.0) -> None:
        """``extra``: what the spend table counted for the turn's unpriced calls."""
        self._queue("end", (turn, at, reported, extra))

    def _queue(self, kind: str, what: Any) -> None:
        if not self._pending and self._me is not None:
            wait = self._last_flush + self._interval - time.monotonic()
            if wait <= 0:
                self._me.tell(Ledger.flush)
            else:
                self._timer = threading.Timer(wait, self._me.tell, (Ledger.flush,))
                self._timer.daemon = True
                self._timer.start()
        self._pending.append((kind, what))

    def flush(self) -> None:
        """Write everything queued, in order, in one transaction (row by row if the batch fails)."""
        self._last_flush = time.monotonic()
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            with self._db.atomic():
                self._write(pending)
        except Exception as exc:  # noqa: BLE001 - retried one by one: a bad row fails only itself
            if (fault := storage_fault(exc)) is not None:  # the store's state: kept, written once it works
                self._pending = (pending + self._pending)[-MAX_PENDING:]
                _log.warning("ledger.storage_unavailable", fault=fault, waiting=len(self._pending))
                self._retry_later()
                return
            for one in pending:
                try:
                    with self._db.atomic():
                        self._write([one])
                except Exception:  # noqa: BLE001 - a tell must never kill the actor
                    _log.exception("ledger.write_failed", kind=one[0])

    def _retry_later(self) -> None:
        if self._me is not None and (self._timer is None or not self._timer.is_alive()):
            self._timer = threading.Timer(RETRY_SECONDS, self._me.tell, (Ledger.flush,))
            self._timer.daemon = True
            self._timer.start()

    def _write(self, pending: list[tuple[str, Any]]) -> None:
        calls: list[CallRow] = []
        for kind, what in pending:
            if kind == "call":
                calls.append(what)
                continue
            store.insert_calls(self._db, calls)  # before a turn's end: its calls are in
            calls = []
            if kind == "start":
                store.start_turn(self._db, *what)
            else:
                store.end_turn(self._db, *what)
        store.insert_calls(self._db, calls)

    # --- reads -----------------------------------------------------------------------
    @answers
    def summary(self, since: float | None) -> dict[str, dict[str, Any]]:
        self.flush()
        return store.summary(self._db, since)

    @answers
    def series(self, since: float, bucket: float, buckets: int) -> dict[str, list[float]]:
        self.flush()
        return store.series(self._db, since, bucket, buckets)

    @answers
    def load(self, cutoff: float) -> Loaded:
        self.flush()
        return store.load(self._db, cutoff)

    @answers
    def sweep(self, cutoff: float) -> int:
        """Fold every call older than ``cutoff`` into the archive, in batches: how many went."""
        self.flush()
        total, more = 0, True
        while more:
            n, more = store.archive_batch(self._db, cutoff, self._sweep_batch)
            total += n
        if total:
            _log.info("ledger.archived", calls=total)
        return total
