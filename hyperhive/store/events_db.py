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
        with self.db.atomic():
            for kind, data in events:
                row_id = self.model.insert(ts=now, kind=kind, data=json.dumps(data)).execute()
                out.append(EventRow(int(row_id), now, kind, data))
        return out

    def tail(self, limit: int) -> list[EventRow]:
        """The newest ``limit`` events, oldest first."""
        q = self.model.select().order_by(self.model.id.desc()).limit(limit)
        return [EventRow(r.id, r.ts, r.kind, json.loads(r.data)) for r in reversed(list(q))]

    def count(self) -> int:
        return int(self.model.select().count())

    def prune(self, now: float, max_age: float, keep: int) -> int:
        """Drop events older than ``max_age`` seconds, then all but the newest ``keep``.

        Deletes in batches so the harness (the writer) is never locked out for long.
        """
        m = self.model
        removed = 0
        cutoff = now - max_age
        while True:
            with self.db.atomic():
                ids = [r.id for r in m.select(m.id).where(m.ts < cutoff).limit(PRUNE_BATCH)]
                if ids:
                    removed += m.delete().where(m.id.in_(ids)).execute()
            if len(ids) < PRUNE_BATCH:
                break
        newest = list(m.select(m.id).order_by(m.id.desc()).offset(keep).limit(1))
        if newest:
            floor = newest[0].id
            while True:
                with self.db.atomic():
                    ids = [r.id for r in m.select(m.id).where(m.id <= floor).limit(PRUNE_BATCH)]
                    if ids:
                        removed += m.delete().where(m.id.in_(ids)).execute()
                if len(ids) < PRUNE_BATCH:
                    break
        return removed

    def close(self) -> None:
        with _models_lock:
            _models.pop(id(self.db), None)
        self.db.close()
