"""The Ledger actor (issue 15): usage in hive.sqlite, written and read off the
IOLoop. The spend table (`web.tables.spend`, on the loop) decides; this
actor keeps the record: one row per model call the gateway saw, one per turn,
and what the retention sweep folds into the archive after
``usage_retention_days``.

Writes are tells (nothing on the loop waits for sqlite); reads are asks.
"""

from __future__ import annotations

from typing import Any

import pykka
from peewee import Database

import hyperhive.logs as logs
from hyperhive.actors.bridge import answers
from hyperhive.store import usage as store
from hyperhive.store.usage import CallRow, Loaded

__all__ = ["Ledger"]

_log = logs.get("hyperhive.ledger")


class Ledger(pykka.ThreadingActor):
    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db

    def on_start(self) -> None:
        logs.bind_thread(actor="ledger")

    # --- writes (tells: a failure is logged, never raised to the loop) -------------
    def record_call(self, row: CallRow) -> None:
        try:
            store.insert_call(self._db, row)
        except Exception:  # noqa: BLE001 - a tell must never kill the actor
            _log.exception("ledger.record_failed", agent=row.agent)

    def turn_started(self, turn: int, agent: str, at: float) -> None:
        try:
            store.start_turn(self._db, turn, agent, at)
        except Exception:  # noqa: BLE001
            _log.exception("ledger.turn_start_failed", agent=agent, turn=turn)

    def turn_ended(self, turn: int, at: float, reported: float | None, extra: float = 0.0) -> None:
        """``extra``: what the spend table counted for the turn's unpriced calls."""
        try:
            store.end_turn(self._db, turn, at, reported, extra)
            if extra:
                _log.info("ledger.reported_cost", turn=turn, usd=round(extra, 6))
        except Exception:  # noqa: BLE001
            _log.exception("ledger.turn_end_failed", turn=turn)

    # --- reads -----------------------------------------------------------------------
    @answers
    def summary(self, since: float | None) -> dict[str, dict[str, Any]]:
        return store.summary(self._db, since)

    @answers
    def series(self, since: float, bucket: float, buckets: int) -> dict[str, list[float]]:
        return store.series(self._db, since, bucket, buckets)

    @answers
    def load(self, cutoff: float) -> Loaded:
        return store.load(self._db, cutoff)

    @answers
    def sweep(self, cutoff: float) -> int:
        """Fold every call older than ``cutoff`` into the archive, in batches: how many went."""
        total, more = 0, True
        while more:
            n, more = store.archive_batch(self._db, cutoff)
            total += n
        if total:
            _log.info("ledger.archived", calls=total)
        return total
