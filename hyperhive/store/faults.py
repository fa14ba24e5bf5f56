"""Telling a storage fault from a refused row (issue 16).

A commit can fail because the store cannot write at all: the disk is full
(``SQLITE_FULL``), the filesystem is read-only (``SQLITE_READONLY``), an I/O
error (``SQLITE_IOERR`` and its extended codes), or the file cannot be opened
(``SQLITE_CANTOPEN``). That is no fault of the message: it must not be retried
row by row, and its sender hears ``storage_unavailable`` with the cause.

peewee wraps the sqlite3 error (the original is its ``orig``), and after a
failed COMMIT that sqlite already rolled back, peewee's own ROLLBACK fails
with "cannot rollback - no transaction is active", the storage error being
its ``__context__``: the whole chain is looked at.
"""

from __future__ import annotations

import sqlite3

__all__ = ["storage_fault"]

# primary result code → what it means for the store
_CODES = {
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_READONLY: "the store is read-only",
    sqlite3.SQLITE_IOERR: "an I/O error",
    sqlite3.SQLITE_CANTOPEN: "the store cannot be opened",
}
# The same, by message, for an error that carries no code (sqlite3's own texts).
_TEXTS = (
    ("database or disk is full", "the disk is full"),
    ("attempt to write a readonly database", "the store is read-only"),
    ("disk i/o error", "an I/O error"),
    ("unable to open database file", "the store cannot be opened"),
)
_DEPTH = 8  # links of the exception chain looked at


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    todo = [exc]
    while todo and len(out) < _DEPTH:
        e = todo.pop(0)
        if any(e is seen for seen in out):
            continue
        out.append(e)
        orig = getattr(e, "orig", None)  # peewee keeps the driver's error there
        todo.extend(x for x in (orig, e.args[0] if e.args else None, e.__cause__, e.__context__)
                    if isinstance(x, BaseException))
    return out


def storage_fault(exc: BaseException) -> str | None:
    """The cause, for people (``"the disk is full (database or disk is full)"``),
    when ``exc`` means the store cannot write; None for anything else (a refused
    row, a constraint, a bug)."""
    for e in _chain(exc):
        code = getattr(e, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _CODES:
            return f"{_CODES[code & 0xFF]} ({getattr(e, 'sqlite_errorname', code)}: {e})"
    for e in _chain(exc):
        text = str(e).lower()
        for needle, what in _TEXTS:
            if needle in text:
                return f"{what} ({e})"
    return None
