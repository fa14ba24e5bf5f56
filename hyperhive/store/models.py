"""The daemon's tables in hive.sqlite."""

from __future__ import annotations

from pathlib import Path

from peewee import (
    AutoField,
    BooleanField,
    CharField,
    DatabaseProxy,
    FloatField,
    Model,
    SqliteDatabase,
    TextField,
)

from hyperhive.store.db import open_database
from hyperhive.store.migrate import ensure_schema

__all__ = ["MODELS", "Approval", "Container", "Message", "Question", "database", "open_hive_db"]

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


class Question(_Base):
    """An operator question (F7–F10, F43). Pending while ``how`` is NULL.

    ``options``, ``multi``, ``deadline_at`` and ``default`` came after the first
    schema: they are added by migration, old rows get the defaults. So did
    ``kind`` (NULL: a question someone asked; ``permission``: a tool call waiting
    for the operator, issue 14) and ``detail`` (a permission's
    ``{tool_name, input, tool_use_id}`` as JSON).
    """

    id = AutoField()
    asker = CharField(max_length=64)
    question = TextField()
    asked_at = FloatField()
    answer = TextField(null=True)
    answered_at = FloatField(null=True)
    options = TextField(default="[]")  # JSON list of strings
    multi = BooleanField(default=False)
    deadline_at = FloatField(null=True)
    default_answer = TextField(null=True, column_name="default")
    how = CharField(max_length=16, null=True)  # answered | cancelled | expired
    kind = CharField(max_length=16, null=True)  # None | permission
    detail = TextField(null=True)  # permission: {"tool_name", "input", "tool_use_id"} (JSON)

    class Meta:
        table_name = "operator_questions"


class Approval(_Base):
    """Something that waits for the operator's yes (F11, F12).

    ``files_json`` (added by migration; NULL in older rows) is what an
    apply_commit approval showed: the commit's files, path → text, read at
    queue time. Approving writes exactly these into ``applied/<agent>/``.
    """

    id = AutoField()
    kind = CharField(max_length=16)  # spawn | apply_commit
    agent = CharField(max_length=64)
    requested_by = CharField(max_length=64)
    requested_at = FloatField()
    config = TextField(null=True)  # spawn: the initial config (JSON)
    prompt = TextField(null=True)  # spawn: the initial prompt
    commit = CharField(max_length=64, null=True)  # apply_commit: the full commit id
    diff_html = TextField(null=True)
    files_json = TextField(null=True)  # apply_commit: {path: text} shown in the diff and applied as is
    status = CharField(max_length=16, default="pending")  # pending|approved|denied|failed
    decided_at = FloatField(null=True)
    reason = TextField(null=True)  # the deny reason or the failure

    class Meta:
        table_name = "approvals"
        indexes = ((("status", "id"), False),)


MODELS = (Message, Container, Question, Approval)


def open_hive_db(path: Path) -> SqliteDatabase:
    """The daemon's hive.sqlite, bound to the models, its schema brought up to date."""
    db = open_database(path)
    database.initialize(db)
    ensure_schema(db, MODELS)
    return db
