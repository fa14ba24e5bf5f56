"""The Broker's group commit: the sends waiting for the next commit, the
batch one ``send_many`` answers together, and the insert that stores a batch
in one transaction, retried row by row (a savepoint each) when the store
refuses it, so one bad send fails only itself."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field

from peewee import Database, DataError

import hyperhive.logs as logs
from hyperhive.actors.bridge import Reply, fail, resolve
from hyperhive.actors.broker_reads import sql
from hyperhive.errors import BadRequest, HiveError, Internal

__all__ = ["Batch", "Pending", "body_bytes", "insert_rows", "store_error"]

_log = logs.get("hyperhive.broker")

_INSERT = (
    "INSERT INTO messages (sender, recipient, body, sent_at, delivered_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
Row = tuple[str, str, str, float, float | None]  # sender, recipient, body, sent_at, delivered_at


class Batch:
    """The replies of one ``send_many``: one slot per message, answered together."""

    def __init__(self, n: int, reply: Reply[list[int | HiveError]] | None) -> None:
        self.results: list[int | HiveError] = [0] * n
        self.left = n
        self.reply = reply

    def set(self, i: int, value: int | HiveError) -> None:
        self.results[i] = value
        self.left -= 1
        if self.left == 0:
            resolve(self.reply, self.results)


@dataclass
class Pending:
    """A send waiting for the next commit: its own reply, or a slot of a Batch."""
    sender: str
    to: str
    body: str
    reply: Reply[int] | None
    slot: tuple[Batch, int] | None = None
    queued: float = field(default_factory=time.monotonic)  # for the wake latency (F45)

    def done(self, value: int | HiveError) -> None:
        if self.slot is not None:
            self.slot[0].set(self.slot[1], value)
        elif isinstance(value, HiveError):
            fail(self.reply, value)
        else:
            resolve(self.reply, value)


def body_bytes(body: str) -> int:
    return len(body) if body.isascii() else len(body.encode("utf-8", "surrogatepass"))


def insert_rows(db: Database, params: list[Row]) -> list[int | HiveError]:
    """Store the rows in one transaction; the new ids, in order. When the
    store refuses the batch, row by row: each refused row gets its error."""
    try:
        with db.atomic():
            cur = sql(db).cursor()
            cur.executemany(_INSERT, params)
            last = sql(db).execute_sql("SELECT last_insert_rowid()").fetchone()[0]
    except Exception as exc:  # noqa: BLE001 - every sender hears of it
        if len(params) == 1:
            _log.warning("broker.send_refused", error=f"{type(exc).__name__}: {exc}")
            return [store_error(exc)]
        _log.warning("broker.batch_refused", count=len(params), error=f"{type(exc).__name__}: {exc}")
        return _insert_each(db, params)
    first = last - len(params) + 1
    return list(range(first, last + 1))


def _insert_each(db: Database, params: list[Row]) -> list[int | HiveError]:
    out: list[int | HiveError] = []
    try:
        with db.atomic():
            cur = sql(db).cursor()
            for prm in params:
                try:
                    with db.atomic():  # a savepoint: a refused row leaves nothing behind
                        cur.execute(_INSERT, prm)
                    out.append(int(cur.lastrowid))
                except Exception as exc:  # noqa: BLE001 - this row's sender hears of it
                    _log.warning("broker.send_refused", error=f"{type(exc).__name__}: {exc}")
                    out.append(store_error(exc))
    except Exception as exc:  # noqa: BLE001 - the transaction itself failed: nothing is stored
        _log.exception("broker.commit_failed", count=len(params))
        err = store_error(exc)
        return [err] * len(params)
    return out


def store_error(exc: BaseException) -> HiveError:
    """What a sender hears when the store refused its message."""
    if isinstance(exc, HiveError):
        return exc
    if isinstance(exc, (DataError, sqlite3.DataError)):  # e.g. "string or blob too big"
        return BadRequest(f"the message cannot be stored: {exc}")
    if isinstance(exc, UnicodeError):
        return BadRequest(f"the message is not valid Unicode: {exc}")
    return Internal(f"could not store the message: {exc}")
