"""The daemon's tables in hive.sqlite."""

from __future__ import annotations

from pathlib import Path

from peewee import (
    AutoField,
    CharField,
    DatabaseProxy,
    FloatField,
    Model,
    TextField,
)

from hyperhive.store.db import open_database
from hyperhive.store.migrate import ensure_schema

__all__ = ["MODELS", "Container", "Message", "database", "open_hive_db"]

database = DatabaseProxy()


class _Base(Model):
    class Meta:
        database = database


class Message(_Base):
    """A durable message (F1). Undelivered while delivered_at is NULL."""

    id = AutoField()
    sender = CharField(max_length=64)
    recipient = CharField(max_length=64)
    body = TextField()
    sent_at = FloatField()
    delivered_at = FloatField(null=True)

    class Meta:
        table_name = "messages"
        indexes = ((("recipient", "delivered_at", "id"), False),)


class Container(_Base):
    """A container the daemon keeps: created by spawn, removed by destroy."""

    name = CharField(max_length=64, primary_key=True)
    desired = CharField(max_length=16, default="running")  # running | stopped
    created_at = FloatField()

    class Meta:
        table_name = "containers"


MODELS = (Message, Container)


def open_hive_db(path: Path):  # type: ignore[no-untyped-def]
    db = open_database(path)
    database.initialize(db)
    ensure_schema(db, MODELS)
    return db
