"""Storage faults (issue 16): the classifier on real sqlite errors, and the
Broker's commit path on a real full tmpfs (root only): the whole batch fails
``storage_unavailable`` (never row by row), nothing is stored, and the next
commit after space is freed works on the same connection."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest
from support import fill_disk, small_tmpfs

from hyperhive.actors.broker_commit import insert_rows
from hyperhive.errors import StorageUnavailable, Unavailable, from_wire
from hyperhive.store.faults import storage_fault
from hyperhive.store.models import open_hive_db


def _error(run: object) -> BaseException:
    try:
        run()  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the error is what is tested
        return exc
    raise AssertionError("no error")


def test_a_full_database_is_a_storage_fault(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.sqlite")
    conn.execute("CREATE TABLE t (b TEXT)")
    conn.commit()
    conn.execute("PRAGMA max_page_count = 3")

    def fill() -> None:
        for _ in range(100):
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 2000,))

    exc = _error(fill)
    assert getattr(exc, "sqlite_errorname", None) == "SQLITE_FULL"
    fault = storage_fault(exc)
    assert fault is not None and fault.startswith("the disk is full") and "database or disk is full" in fault


def test_a_read_only_store_is_a_storage_fault(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (b TEXT)").connection.commit()
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    exc = _error(lambda: ro.execute("INSERT INTO t VALUES ('x')"))
    fault = storage_fault(exc)
    assert fault is not None and fault.startswith("the store is read-only"), fault


def test_peewee_wrapping_and_a_failed_rollback_keep_the_cause() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    full.sqlite_errorname = "SQLITE_FULL"
    wrapped = peewee.OperationalError(full)
    rollback = peewee.OperationalError(sqlite3.OperationalError("cannot rollback - no transaction is active"))
    rollback.__context__ = wrapped  # what peewee's atomic() raises after sqlite rolled back itself
    assert (storage_fault(rollback) or "").startswith("the disk is full")
    io = sqlite3.OperationalError("disk I/O error")  # no code: the text is enough
    assert (storage_fault(io) or "").startswith("an I/O error")
    ext = sqlite3.OperationalError("disk I/O error")
    ext.sqlite_errorcode = sqlite3.SQLITE_IOERR_WRITE
    assert (storage_fault(ext) or "").startswith("an I/O error")


def test_other_errors_are_not_storage_faults() -> None:
    assert storage_fault(sqlite3.IntegrityError("UNIQUE constraint failed: messages.x")) is None
    assert storage_fault(sqlite3.DataError("string or blob too big")) is None
    assert storage_fault(peewee.OperationalError("cannot rollback - no transaction is active")) is None
    assert storage_fault(ValueError("x")) is None
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
    assert storage_fault(busy) is None


def test_storage_unavailable_crosses_the_wire() -> None:
    err = from_wire(StorageUnavailable("the message was not stored: the disk is full").to_wire())
    assert isinstance(err, StorageUnavailable) and isinstance(err, Unavailable)
    assert err.code == "storage_unavailable" and err.status == 503


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with small_tmpfs(tmp_path / "mnt", "4m") as mnt:
        yield mnt


def test_a_full_disk_fails_the_whole_batch_and_the_next_commit_works(small_fs: Path) -> None:
    db: Any = open_hive_db(small_fs / "hive.sqlite")  # peewee's calls are untyped
    try:
        assert insert_rows(db, [("operator", "a", "before", 1.0, None, None, None)]) == [1]
        fill_disk(small_fs / "filler")
        for n in (1, 3, 40):
            out = insert_rows(db, [("operator", "a", "y" * 4000, 1.0, None, f"k{n}-{i}", None) for i in range(n)])
            assert all(isinstance(r, StorageUnavailable) for r in out), out
            assert "the disk is full" in str(out[0])
            assert not db.connection().in_transaction and not db.in_transaction()
        assert db.execute_sql("SELECT COUNT(*) FROM messages").fetchone()[0] == 1
        (small_fs / "filler").unlink()
        assert insert_rows(db, [("operator", "a", "after", 1.0, None, "k1-0", None)] * 1) == [2]  # the key was free
        assert db.execute_sql("SELECT COUNT(*) FROM messages").fetchone()[0] == 2
    finally:
        db.close()
