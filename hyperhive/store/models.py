"""The daemon's tables in hive.sqlite."""

from __future__ import annotations

from pathlib import Path

from peewee import (
    AutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    DatabaseProxy,
    FloatField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)

from hyperhive.store.db import open_database
from hyperhive.store.migrate import ensure_schema

__all__ = ["MODELS", "Approval", "Container", "Message", "ModelCall", "Question", "TurnRecord", "UsageArchive",
           "database", "open_hive_db"]

database = DatabaseProxy()


class _Base(Model):
    class Meta:
        database = database


class Message(_Base):
    """A durable message (F1). Undelivered while delivered_at is NULL.

    ``idempotency_key`` (issue 16, added by migration; NULL: the send had none)
    names the send per sender: a retry with the same key is answered with this
    row's id and stores nothing. Unique per sender through a partial index (only
    keyed rows are in it, so a send without a key pays nothing for it); the key
    goes when the retention sweep deletes its row.

    ``taken`` and ``redeliveries`` (issue 16, added by migration; NULL in older
    rows and when unset, so adding them rewrites no row): a message a harness's
    system recv took is ``taken`` 1, 2 once its turn started, NULL again at that
    turn's end; ``redeliveries`` counts the times it was delivered again because
    its harness went away first (`hyperhive.actors.broker_taken`). A partial
    index holds only the taken rows.
    """

    id = AutoField()
    sender = CharField(max_length=64)
    recipient = CharField(max_length=64)
    body = TextField()
    sent_at = FloatField()
    delivered_at = FloatField(null=True)
    idempotency_key = CharField(max_length=128, null=True)
    taken = IntegerField(null=True)  # NULL | 1 taken by a system recv | 2 its turn started
    redeliveries = IntegerField(null=True)  # delivered again after an unfinished turn (NULL: never)

    class Meta:
        table_name = "messages"
        indexes = ((("recipient", "delivered_at", "id"), False),)


Message.add_index(Message.sender, Message.idempotency_key, unique=True, name="messages_sender_idempotency_key",
                  where=Message.idempotency_key.is_null(False))
Message.add_index(Message.recipient, name="messages_taken", where=Message.taken.is_null(False))


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


class ModelCall(_Base):
    """One model API call through an agent's gateway (issue 15): the tokens the
    API returned, counted at the gateway (the agent cannot under-report), and
    what they cost. ``cost_usd`` is NULL for a model the price table lacks until
    its turn's end brings the CLI's reported cost (``cost_source`` "reported");
    priced calls say "priced". ``turn`` is the `TurnRecord` it ran in (NULL:
    outside any turn)."""

    id = AutoField()
    agent = CharField(max_length=64)
    at = FloatField()
    model = CharField(max_length=128, null=True)
    input_tokens = BigIntegerField(default=0)
    output_tokens = BigIntegerField(default=0)
    cache_read_tokens = BigIntegerField(default=0)
    cache_write_tokens = BigIntegerField(default=0)
    cost_usd = FloatField(null=True)
    cost_source = CharField(max_length=16, null=True)  # priced | reported | dearest (a model the table lacks)
    turn = IntegerField(null=True)
    status = IntegerField(default=0)

    class Meta:
        table_name = "model_calls"
        indexes = ((("agent", "at"), False), (("at",), False), (("turn",), False))


class TurnRecord(_Base):
    """One turn an agent ran (a turn slot granted, then given back); the CLI's
    own ``total_cost_usd`` for it, as reported (a cross-check, and the cost of
    calls to a model the price table lacks)."""

    id = AutoField()
    agent = CharField(max_length=64)
    started_at = FloatField()
    ended_at = FloatField(null=True)
    reported_cost_usd = FloatField(null=True)

    class Meta:
        table_name = "turns"
        indexes = ((("agent", "started_at"), False),)


class UsageArchive(_Base):
    """What the retention sweep folded away: per agent, the sums of the calls
    and turns it deleted (so "total" budgets and ``hive usage --since all``
    still count them)."""

    agent = CharField(max_length=64, primary_key=True)
    calls = BigIntegerField(default=0)
    turns = BigIntegerField(default=0)
    input_tokens = BigIntegerField(default=0)
    output_tokens = BigIntegerField(default=0)
    cache_read_tokens = BigIntegerField(default=0)
    cache_write_tokens = BigIntegerField(default=0)
    cost_usd = FloatField(default=0.0)
    until = FloatField(default=0.0)  # the newest call folded in
    reported_calls = BigIntegerField(default=0)  # of ``calls``: priced at the CLI's reported cost
    unpriced_calls = BigIntegerField(default=0)  # of ``calls``: never priced

    class Meta:
        table_name = "usage_archive"


MODELS = (Message, Container, Question, Approval, ModelCall, TurnRecord, UsageArchive)


def open_hive_db(path: Path, synchronous: str = "full") -> SqliteDatabase:
    """The daemon's hive.sqlite, bound to the models, its schema brought up to date.

    ``full`` (the default) makes every acknowledged commit survive power loss;
    ``normal`` only a process crash (`hyperhive.store.db.SYNCHRONOUS`).
    """
    db = open_database(path, synchronous)
    database.initialize(db)
    ensure_schema(db, MODELS)
    return db
