"""Issue 16, build 4: hive.sqlite commits are synced to disk (synchronous=FULL) unless the
operator opts out with ``--db-synchronous normal``. The pragma is per connection: it is
checked on real connections (each thread's own), and the daemon logs what its own reads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from peewee import SqliteDatabase
from support import Hive, wait_for

from hyperhive.settings import SETTINGS, Settings
from hyperhive.store.db import SYNCHRONOUS, open_database, synchronous_of
from hyperhive.store.models import database, open_hive_db

LEVEL = {"normal": 1, "full": 2}  # what PRAGMA synchronous answers


@pytest.fixture
def opened() -> Iterator[list[SqliteDatabase]]:
    dbs: list[SqliteDatabase] = []
    yield dbs
    for db in dbs:
        db.close()


def pragma(db: SqliteDatabase) -> int:
    level: int = db.execute_sql("PRAGMA synchronous").fetchone()[0]
    return level


@pytest.mark.parametrize("mode", SYNCHRONOUS)
def test_open_database_sets_the_level_asked_for(tmp_path: Path, opened: list[SqliteDatabase], mode: str) -> None:
    db = open_database(tmp_path / "x.sqlite", mode)
    opened.append(db)
    assert pragma(db) == LEVEL[mode]
    assert synchronous_of(db) == mode
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"  # the rest is unchanged


def test_open_database_defaults_to_normal_for_event_logs(tmp_path: Path, opened: list[SqliteDatabase]) -> None:
    opened.append(db := open_database(tmp_path / "events.sqlite"))
    assert pragma(db) == LEVEL["normal"]


def test_open_database_refuses_another_level(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="full, normal"):
        open_database(tmp_path / "x.sqlite", "off")
    assert not (tmp_path / "x.sqlite").exists()


@pytest.mark.parametrize("mode", SYNCHRONOUS)
def test_every_threads_connection_gets_it(tmp_path: Path, opened: list[SqliteDatabase], mode: str) -> None:
    """peewee opens one connection per thread (the Broker commits on its actor thread)."""
    opened.append(db := open_database(tmp_path / "x.sqlite", mode))
    seen: list[int] = []

    def on_a_thread() -> None:
        try:
            seen.append(pragma(db))
        finally:
            db.close()

    t = threading.Thread(target=on_a_thread)
    t.start()
    t.join(10)
    assert seen == [LEVEL[mode]]


def test_hive_db_is_full_by_default(tmp_path: Path, opened: list[SqliteDatabase]) -> None:
    opened.append(db := open_hive_db(tmp_path / "hive.sqlite"))
    assert pragma(db) == LEVEL["full"]


def test_hive_db_opt_out(tmp_path: Path, opened: list[SqliteDatabase]) -> None:
    opened.append(db := open_hive_db(tmp_path / "hive.sqlite", "normal"))
    assert pragma(db) == LEVEL["normal"]
    assert database.obj is db


def test_the_setting_defaults_to_full_and_offers_what_the_store_takes() -> None:
    s = {x.name: x for x in SETTINGS}["db_synchronous"]
    assert Settings().db_synchronous == s.default == "full"
    assert s.choices is not None and set(s.choices) == set(SYNCHRONOUS)
    assert s.scope == "serve"


def _opened(h: Hive) -> dict[str, object]:
    rows = wait_for(lambda: [e for e in h.log_events() if e.get("event") == "store.opened"],
                    timeout=30, what="store.opened")
    assert len(rows) == 1
    return rows[0]


@pytest.mark.e2e
@pytest.mark.parametrize(("args", "want"), [([], "full"), (["--db-synchronous", "normal"], "normal")],
                         ids=["default", "normal"])
def test_the_daemon_opens_hive_sqlite_as_set(tmp_path: Path, args: list[str], want: str) -> None:
    h = Hive(tmp_path / "state", ["--sandbox", "off", *args]).start()
    try:
        row = _opened(h)
        h.admin("send", to="m1nd", body="stored")  # the store works at that level
    finally:
        h.stop()
    assert row["synchronous"] == want
    assert row["path"] == str(h.paths.db)
