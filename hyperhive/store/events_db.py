"""Each agent's event log: `agents/<name>/state/hyperhive-events.sqlite` (F27, F22).

The harness appends (one writer per file); the host's VacuumSweeper prunes.
Each open database gets its own cached model subclass: `bind_ctx` would rebind
the model class globally, across threads.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peewee import AutoField, CharField, Database, FloatField, Model, TextField

from hyperhive.store.db import open_database
from hyperhive.store.migrate import ensure_schema

__all__ = ["EVENTS_FILE", "EventLog", "EventRow"]

EVENTS_FILE = "hyperhive-events.sqlite"
PRUNE_BATCH = 2000
_INSERT = 'INSERT INTO "events" ("ts", "kind", "data") VALUES (?, ?, ?)'


class _EventBase(Model):
    id = AutoField()
    ts = FloatField(index=True)
    kind = CharField(max_length=32)
    data = TextField()  # JSON object


@dataclass(frozen=True)
class EventRow:
    id: int
    ts: float
    kind: str
    data: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "ts": self.ts, "kind": self.kind, "data": self.data}


_models: dict[int, type[Model]] = {}
_models_lock = threading.Lock()


def _model_for(db: Database) -> type[Model]:
    with _models_lock:
        m = _models.get(id(db))
        if m is None:
            meta = type("Meta", (), {"database": db, "table_name": "events"})
            m = type(f"Event_{id(db):x}", (_EventBase,), {"Meta": meta, "__module__": __name__})
            _models[id(db)] = m
        return m


class EventLog:
    """One agent's events database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_database(path)
        self.model: Any = _model_for(self.db)
        ensure_schema(self.db, [self.model])

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> EventLog:
        return cls(state_dir / EVENTS_FILE)

    def append(self, events: list[tuple[str, dict[str, Any]]], ts: float | None = None) -> list[EventRow]:
        """Store ``(kind, data)`` pairs in one transaction; returns them with ids."""
        if not events:
            return []
        now = time.time() if ts is None else ts
        out: list[EventRow] = []
        raw: Any = self.db  # peewee's execute_sql is untyped
        with self.db.atomic():
            for kind, data in events:  # one row at a time, each its own id (no query building per row)
                row_id = raw.execute_sql(_INSERT, (now, kind, json.dumps(data))).lastrowid
                out.append(EventRow(int(row_id), now, kind, data))
        return out

    def tail(self, limit: int) -> list[EventRow]:
        """The newest ``limit`` events, oldest first."""
        m = self.model
        q = m.select(m.id, m.ts, m.kind, m.data).order_by(m.id.desc()).limit(limit).tuples()
        return [EventRow(i, ts, kind, json.loads(data)) for i, ts, kind, data in reversed(list(q))]

    def count(self) -> int:
        return int(self.model.select().count())

    def prune(self, now: float, max_age: float, keep: int) -> int:
        """Drop events older than ``max_age`` seconds, then all but the newest ``keep``.

        Deletes in batches so the harness (the writer) is never locked out for long.
        """
        m = self.model
        removed = self._delete_batches(m.ts < now - max_age)
        newest = list(m.select(m.id).order_by(m.id.desc()).offset(keep).limit(1).tuples())
        if newest:
            removed += self._delete_batches(m.id <= newest[0][0])
        return removed

    def _delete_batches(self, where: Any) -> int:
        """Delete the rows ``where`` selects, ``PRUNE_BATCH`` a transaction."""
        m = self.model
        removed = 0
        while True:
            with self.db.atomic():
                n = int(m.delete().where(m.id.in_(m.select(m.id).where(where).limit(PRUNE_BATCH))).execute())
            removed += n
            if n < PRUNE_BATCH:
                return removed

    def close(self) -> None:
        with _models_lock:
            _models.pop(id(self.db), None)
        self.db.close()
