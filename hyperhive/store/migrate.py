"""Additive schema migration: create missing tables, add missing columns.

Old rows take each new column's default. A NOT NULL column without a default
cannot be added to a table with rows; peewee's migrator refuses it.
"""

from __future__ import annotations

from collections.abc import Iterable

from peewee import Database, Model
from playhouse.migrate import SqliteMigrator, migrate

import hyperhive.logs as logs

__all__ = ["ensure_schema"]

_log = logs.get("hyperhive.store")


def ensure_schema(db: Database, models: Iterable[type[Model]]) -> list[str]:
    """Bring ``models``' tables up to date; return the ``table.column`` names added."""
    added: list[str] = []
    migrator = SqliteMigrator(db)
    with db.atomic():
        for model in models:
            table = model._meta.table_name
            if not db.table_exists(table):
                db.create_tables([model])
                continue
            have = {c.name for c in db.get_columns(table)}
            ops = []
            for f in model._meta.sorted_fields:
                if f.column_name not in have:
                    ops.append(migrator.add_column(table, f.column_name, f))
                    if f.null and f.default is not None:
                        # peewee fills old rows only for NOT NULL columns
                        ops.append(migrator.apply_default(table, f.column_name, f))
                    added.append(f"{table}.{f.column_name}")
            if ops:
                migrate(*ops)
            model.create_table(safe=True)  # indexes the model declares
    if added:
        _log.info("store.migrated", columns=added)
    return added
