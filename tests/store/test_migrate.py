"""hyperhive.store: opening the database, and the additive schema migration."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from peewee import CharField, FloatField, IntegerField, Model, SqliteDatabase, TextField

from hyperhive.store.db import open_database
from hyperhive.store.migrate import ensure_schema
from hyperhive.store.models import MODELS, Container, Message, database, open_hive_db

OLD_MESSAGES = """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    sender VARCHAR(64) NOT NULL,
    recipient VARCHAR(64) NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL
)
"""
OLD_ROWS = [
    (1, "alice", "bob", "hello", 100.0),
    (2, "operator", "m1nd", "start", 101.5),
    (7, "bob", "operator", "multi\nline", 102.25),
]


def columns(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def index_columns(path: Path, table: str) -> dict[str, list[str]]:
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name=? AND sql IS NOT NULL", (table,)
        )]
        return {n: [r[2] for r in conn.execute(f"PRAGMA index_info({n})")] for n in names}


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    path = tmp_path / "hive.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_MESSAGES)
        conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?)", OLD_ROWS)
    conn.close()
    return path


@pytest.fixture
def opened() -> Iterator[list[SqliteDatabase]]:
    """Collects every database a test opens and closes them afterwards."""
    dbs: list[SqliteDatabase] = []
    yield dbs
    for db in dbs:
        db.close()


# --- open_hive_db on an older file -----------------------------------------------

def test_migrates_old_messages_table(old_db: Path, opened: list[SqliteDatabase]) -> None:
    assert "delivered_at" not in columns(old_db, "messages")
    assert "containers" not in tables(old_db)

    opened.append(open_hive_db(old_db))

    assert columns(old_db, "messages") == ["id", "sender", "recipient", "body", "sent_at", "delivered_at",
                                           "idempotency_key", "taken", "redeliveries"]
    assert "containers" in tables(old_db)
    assert columns(old_db, "containers") == ["name", "desired", "created_at"]
    assert ["recipient", "delivered_at", "id"] in index_columns(old_db, "messages").values()

    rows = [
        (m.id, m.sender, m.recipient, m.body, m.sent_at, m.delivered_at)
        for m in Message.select().order_by(Message.id)
    ]
    assert rows == [(*r, None) for r in OLD_ROWS]


def test_migrated_tables_are_usable(old_db: Path, opened: list[SqliteDatabase]) -> None:
    opened.append(open_hive_db(old_db))
    new = Message.create(sender="a", recipient="b", body="x", sent_at=200.0)
    assert new.id == 8  # continues after the old rows
    Message.update(delivered_at=201.0).where(Message.id == 1).execute()
    undelivered = [m.id for m in Message.select().where(Message.delivered_at.is_null()).order_by(Message.id)]
    assert undelivered == [2, 7, 8]
    Container.create(name="a", created_at=1.0)
    assert Container.get_by_id("a").desired == "running"


def test_reopen_is_a_no_op(old_db: Path, opened: list[SqliteDatabase]) -> None:
    db = open_hive_db(old_db)
    db.close()
    before_idx = index_columns(old_db, "messages")

    db = open_hive_db(old_db)
    opened.append(db)
    assert ensure_schema(db, MODELS) == []
    assert ensure_schema(db, MODELS) == []
    assert index_columns(old_db, "messages") == before_idx
    assert Message.select().count() == len(OLD_ROWS)


def test_ensure_schema_reports_added_columns(old_db: Path, opened: list[SqliteDatabase]) -> None:
    db = open_database(old_db)
    opened.append(db)
    database.initialize(db)
    assert ensure_schema(db, MODELS) == ["messages.delivered_at", "messages.idempotency_key", "messages.taken",
                                         "messages.redeliveries"]
    assert ensure_schema(db, MODELS) == []


def test_fresh_database(tmp_path: Path, opened: list[SqliteDatabase]) -> None:
    path = tmp_path / "new" / "dir" / "hive.sqlite"
    db = open_hive_db(path)
    opened.append(db)
    assert path.exists()
    assert {"messages", "containers"} <= tables(path)
    assert ["recipient", "delivered_at", "id"] in index_columns(path, "messages").values()
    assert ensure_schema(db, MODELS) == []
    assert Message.select().count() == 0


# --- ensure_schema with other models -----------------------------------------------

# peewee's SqliteMigrator.add_column writes the default into existing rows only
# for a NOT NULL field; ensure_schema also covers a nullable field with a default.
@pytest.mark.parametrize(
    ("make_field", "old_value"),
    [
        pytest.param(lambda: CharField(default="blue"), "blue", id="char-not-null"),
        pytest.param(lambda: CharField(null=True, default="red"), "red", id="char-null"),
        pytest.param(lambda: IntegerField(default=7), 7, id="int"),
        pytest.param(lambda: IntegerField(default=0), 0, id="int-zero"),
        pytest.param(lambda: IntegerField(default=lambda: 41 + 1), 42, id="int-callable-default"),
        pytest.param(lambda: FloatField(null=True, default=1.5), 1.5, id="float-null-default"),
        pytest.param(lambda: FloatField(null=True), None, id="float-null"),
        pytest.param(lambda: TextField(default=""), "", id="text-empty"),
    ],
)
def test_added_column_takes_default(tmp_path: Path, opened: list[SqliteDatabase], make_field, old_value) -> None:
    path = tmp_path / "t.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE widgets (id INTEGER PRIMARY KEY, name VARCHAR(255) NOT NULL)")
        conn.executemany("INSERT INTO widgets (name) VALUES (?)", [("one",), ("two",)])
    conn.close()

    db = open_database(path)
    opened.append(db)

    class Widget(Model):
        name = CharField()
        extra = make_field()

        class Meta:
            database = db
            table_name = "widgets"

    assert ensure_schema(db, [Widget]) == ["widgets.extra"]
    rows = Widget.select().order_by(Widget._meta.primary_key)
    assert [(w.name, w.extra) for w in rows] == [("one", old_value), ("two", old_value)]
    # new rows use the default too, and a second pass adds nothing
    assert Widget.create(name="three").extra == old_value
    assert ensure_schema(db, [Widget]) == []
    assert columns(path, "widgets") == ["id", "name", "extra"]


def test_adds_several_columns_and_indexes(tmp_path: Path, opened: list[SqliteDatabase]) -> None:
    path = tmp_path / "t.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, a TEXT NOT NULL)")
        conn.execute("INSERT INTO things (a) VALUES ('x')")
    conn.close()
    db = open_database(path)
    opened.append(db)

    class Thing(Model):
        a = TextField()
        b = IntegerField(default=3)
        c = CharField(null=True, index=True)

        class Meta:
            database = db
            table_name = "things"

    class Other(Model):
        z = IntegerField()

        class Meta:
            database = db
            table_name = "others"

    assert ensure_schema(db, [Thing, Other]) == ["things.b", "things.c"]
    assert "others" in tables(path)
    assert ["c"] in index_columns(path, "things").values()
    assert [(t.a, t.b, t.c) for t in Thing.select()] == [("x", 3, None)]


def test_not_null_without_default_refused_and_rolled_back(tmp_path: Path, opened: list[SqliteDatabase]) -> None:
    path = tmp_path / "t.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, a TEXT NOT NULL)")
        conn.execute("INSERT INTO things (a) VALUES ('x')")
    conn.close()
    db = open_database(path)
    opened.append(db)

    class Thing(Model):
        a = TextField()
        ok = IntegerField(default=1)
        bad = IntegerField()  # NOT NULL, no default

        class Meta:
            database = db
            table_name = "things"

    class Later(Model):
        z = IntegerField()

        class Meta:
            database = db
            table_name = "later"

    with pytest.raises(ValueError, match="not null but has no default"):  # peewee's migrator refuses it
        ensure_schema(db, [Later, Thing])  # "later" is created first, then rolled back
    # one transaction: nothing of it stuck
    assert columns(path, "things") == ["id", "a"]
    assert "later" not in tables(path)


# --- open_database -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("pragma", "want"),
    [
        ("journal_mode", "wal"),
        ("synchronous", 1),  # NORMAL
        ("foreign_keys", 1),
        ("busy_timeout", 5000),
        ("auto_vacuum", 2),  # INCREMENTAL, set before WAL on a new file
    ],
)
def test_open_database_pragmas(tmp_path: Path, opened: list[SqliteDatabase], pragma: str, want: object) -> None:
    db = open_database(tmp_path / "sub" / "x.sqlite")
    opened.append(db)
    assert db.execute_sql(f"PRAGMA {pragma}").fetchone()[0] == want


def test_open_database_wal_persists_in_file(tmp_path: Path, opened: list[SqliteDatabase]) -> None:
    path = tmp_path / "x.sqlite"
    db = open_database(path)
    db.execute_sql("CREATE TABLE t (x)")
    db.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_open_database_switches_old_file_to_wal(old_db: Path, opened: list[SqliteDatabase]) -> None:
    with sqlite3.connect(old_db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    db = open_database(old_db)
    opened.append(db)
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_open_database_transactions_take_the_write_lock_up_front(
    tmp_path: Path, opened: list[SqliteDatabase]
) -> None:
    path = tmp_path / "x.sqlite"
    db = open_database(path)
    opened.append(db)
    db.execute_sql("CREATE TABLE t (x)")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with db.atomic():
            db.execute_sql("SELECT count(*) FROM t").fetchone()  # only reads so far
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released on commit
        other.execute("ROLLBACK")
    finally:
        other.close()


# --- approvals: files_json (issue 12) -----------------------------------------------

OLD_APPROVALS = """
CREATE TABLE approvals (
    id INTEGER PRIMARY KEY,
    kind VARCHAR(16) NOT NULL,
    agent VARCHAR(64) NOT NULL,
    requested_by VARCHAR(64) NOT NULL,
    requested_at REAL NOT NULL,
    config TEXT,
    prompt TEXT,
    "commit" VARCHAR(64),
    diff_html TEXT,
    status VARCHAR(16) NOT NULL,
    decided_at REAL,
    reason TEXT
)
"""


def test_old_approvals_get_files_json_as_null(tmp_path: Path, opened: list[SqliteDatabase]) -> None:
    from hyperhive.store.models import Approval

    path = tmp_path / "hive.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_APPROVALS)
        conn.execute("INSERT INTO approvals (id, kind, agent, requested_by, requested_at, \"commit\", diff_html, "
                     "status) VALUES (3, 'apply_commit', 'a', 'm1nd', 1.0, ?, '<pre/>', 'pending')", ("ab" * 20,))
    conn.close()
    db = open_database(path)
    opened.append(db)
    database.initialize(db)
    assert "approvals.files_json" in ensure_schema(db, MODELS)
    assert columns(path, "approvals")[-1] == "files_json"
    old = Approval.get_by_id(3)
    assert (old.commit, old.status, old.files_json) == ("ab" * 20, "pending", None)
    new = Approval.create(kind="apply_commit", agent="a", requested_by="m1nd", requested_at=2.0,
                          commit="cd" * 20, files_json='{"prompt.md": "x"}')
    assert Approval.get_by_id(new.id).files_json == '{"prompt.md": "x"}'
    assert ensure_schema(db, MODELS) == []
