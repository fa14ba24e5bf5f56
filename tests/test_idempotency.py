"""Issue 16, exactly once across retries: a send's idempotency key, on the Broker
and the SendBatcher with a real sqlite file (no daemon). The daemon, the CLI
and `hive mcp` are in test_idempotency_e2e.py."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import call
from hyperhive.actors.broker import Broker, Duplicate
from hyperhive.actors.broker_commit import insert_rows, stored_keys
from hyperhive.actors.broker_core import MAX_KEY_LEN, check_idempotency_key
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import Event, Hub, MessageSent
from hyperhive.errors import BadRequest
from hyperhive.store.models import Message, open_hive_db
from hyperhive.store.retention import delete_delivered_batch
from hyperhive.web.tables.sends import SendBatcher, sent_reply
from hyperhive.wire import Send, build
from hyperhive.wire_requests import new_idempotency_key


class World:
    def __init__(self, path: Path, max_row_bytes: int = 8 << 20) -> None:
        self.path = path
        self.events: list[Event] = []
        self.hub = Hub()
        self.hub.subscribe(self.events.append)
        self.max_row_bytes = max_row_bytes
        self.db: Any = None
        self.broker: Any = None

    async def start(self) -> World:
        self.db = open_hive_db(self.path)
        self.broker = Broker.start(self.db, LoopClock(IOLoop.current()), self.hub, recv_default=5.0, recv_cap=2.0,
                                   max_row_bytes=self.max_row_bytes).proxy()
        for name in ("a", "b", "c"):
            await call(self.broker.register, name, None)
        return self

    def stop(self) -> None:
        self.broker.actor_ref.stop()
        self.db.close()

    def rows(self) -> list[tuple[int, str, str, str, str | None]]:
        with sqlite3.connect(self.path) as conn:
            out = conn.execute("SELECT id, sender, recipient, body, idempotency_key FROM messages "
                               "ORDER BY id").fetchall()
        conn.close()
        return out

    def sent_events(self) -> int:
        return sum(isinstance(e, MessageSent) for e in self.events)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await World(tmp_path / "hive.sqlite").start()
    yield w
    w.stop()


# --- the key's rules -------------------------------------------------------------

@pytest.mark.parametrize("key", ["k", "x" * MAX_KEY_LEN, " ", "~", "cli-0123456789abcdef", "a b/c:d=e?f", None])
def test_good_keys(key: str | None) -> None:
    assert check_idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * (MAX_KEY_LEN + 1), "café", "a\nb", "a\tb", "\x7f", "\x00", "\ud800", 5,
                                 b"bytes", ["k"]])
def test_bad_keys_are_refused(key: object) -> None:
    with pytest.raises(BadRequest, match="idempotency_key must be"):
        check_idempotency_key(key)


def test_our_clients_keys_are_valid_unique_and_grow_with_time() -> None:
    keys = [new_idempotency_key("mcp") for _ in range(1000)]
    assert all(check_idempotency_key(k) == k and k.startswith("mcp-") for k in keys)
    assert len(set(keys)) == 1000
    assert [k[:20] for k in keys] == sorted(k[:20] for k in keys)  # the time first: the index takes them at its end


def test_the_wire_takes_an_optional_string_key() -> None:
    assert build("send", {"to": "b", "body": "x"}) == Send("b", "x", None)
    assert build("send", {"to": "b", "body": "x", "idempotency_key": "k"}).idempotency_key == "k"  # type: ignore[attr-defined]
    with pytest.raises(BadRequest, match="idempotency_key"):
        build("send", {"to": "b", "body": "x", "idempotency_key": 7})


def test_the_reply_flags_a_retry() -> None:
    assert sent_reply(5) == {"message_id": 5}
    assert sent_reply(Duplicate(5)) == {"message_id": 5, "duplicate": True}
    assert type(sent_reply(Duplicate(5))["message_id"]) is int


async def test_a_bad_key_is_refused_for_its_caller_alone(world: World) -> None:
    sends = SendBatcher(world.broker)
    got = await asyncio.gather(sends.send("a", "b", "one", "k1"), sends.send("a", "b", "bad", "é"),
                               sends.send("a", "b", "two"), return_exceptions=True)
    assert isinstance(got[1], BadRequest) and "idempotency_key" in got[1].message
    assert [r[3] for r in world.rows()] == ["one", "two"]
    # The Broker refuses one too (a caller that is not the batcher).
    [bad] = await call(world.broker.send_many, [("a", "b", "x", "")])
    assert isinstance(bad, BadRequest)
    with pytest.raises(BadRequest):
        await call(world.broker.send, "a", "b", "x", "x" * 200)
    assert len(world.rows()) == 2


# --- a retry stores nothing and gets the original id -----------------------------

async def test_a_retry_in_the_same_batch_is_one_row(world: World) -> None:
    with capture_logs() as logs:
        results = await call(world.broker.send_many, [("a", "b", "m", "k"), ("a", "c", "other", None),
                                                       ("a", "b", "m", "k"), ("a", "b", "m", "k")])
    # Found before the insert: the batch is one executemany, never refused and retried row by row.
    assert not [e for e in logs if e["event"] in ("broker.batch_refused", "broker.send_refused")]
    first = results[0]
    assert type(first) is int and results[2] == results[3] == first
    assert [type(r) for r in results] == [int, int, Duplicate, Duplicate]
    assert world.rows() == [(first, "a", "b", "m", "k"), (results[1], "a", "c", "other", None)]
    await call(world.broker.stats)  # the flush that answered them has finished (one actor, in order)
    assert world.sent_events() == 2  # the retries published nothing


async def test_retries_in_one_loop_turn_through_the_batcher(world: World) -> None:
    sends = SendBatcher(world.broker)
    ids = await asyncio.gather(*(sends.send("a", "b", "same", "burst") for _ in range(20)))
    assert len(set(ids)) == 1 and sum(type(i) is int for i in ids) == 1
    assert len(world.rows()) == 1


async def test_a_retry_after_the_commit_gets_the_original_id(world: World) -> None:
    first = await call(world.broker.send, "a", "b", "hello", "k")
    with capture_logs() as logs:
        again = await call(world.broker.send, "a", "b", "hello", "k")
    assert not [e for e in logs if e["event"] in ("broker.batch_refused", "broker.send_refused")]
    assert again == first and isinstance(again, Duplicate) and not isinstance(first, Duplicate)
    # The key names the send: a different recipient or body is still that send (as NATS's Nats-Msg-Id).
    other = await call(world.broker.send_many, [("a", "c", "changed", "k")])
    assert other == [first] and isinstance(other[0], Duplicate)
    assert world.rows() == [(first, "a", "b", "hello", "k")]
    await call(world.broker.stats)
    assert world.sent_events() == 1


async def test_different_senders_with_the_same_key_are_two_messages(world: World) -> None:
    ab = await call(world.broker.send, "a", "b", "from a", "shared")
    cb = await call(world.broker.send, "c", "b", "from c", "shared")
    same_batch = await call(world.broker.send_many, [("b", "a", "from b", "shared"), ("b", "c", "again", "shared")])
    assert len({ab, cb, same_batch[0]}) == 3 and same_batch[1] == same_batch[0]
    assert [(r[1], r[4]) for r in world.rows()] == [("a", "shared"), ("c", "shared"), ("b", "shared")]


async def test_sends_without_a_key_are_never_taken_for_retries(world: World) -> None:
    results = await call(world.broker.send_many, [("a", "b", "same", None)] * 3)
    assert len(set(results)) == 3 and not any(isinstance(r, Duplicate) for r in results)


async def test_a_retry_across_a_restart_gets_the_original_id(tmp_path: Path) -> None:
    w = await World(tmp_path / "hive.sqlite").start()
    first = await call(w.broker.send, "a", "b", "before", "restart-key")
    w.stop()
    w = await World(tmp_path / "hive.sqlite").start()
    try:
        assert await call(w.broker.send, "a", "b", "before", "restart-key") == first
        assert len(w.rows()) == 1
    finally:
        w.stop()


async def test_a_retry_does_not_wake_a_parked_recv_twice(world: World) -> None:
    parked: cf.Future[Any] = cf.Future()
    world.broker.recv.defer("b", 2.0, False, reply=parked)  # told first: the actor parks it before the sends
    ids = await call(world.broker.send_many, [("a", "b", "once", "k"), ("a", "b", "once", "k")])
    rows = await asyncio.wrap_future(parked)
    assert [(r.id, r.body) for r in rows] == [(ids[0], "once")]
    assert await call(world.broker.send, "a", "b", "once", "k") == ids[0]
    assert await call(world.broker.recv, "b", 0, False) == []  # nothing left to deliver


# --- a refused send leaves its key free --------------------------------------------

async def test_a_refused_send_leaves_the_key_free_and_its_retries_hear_the_same(tmp_path: Path) -> None:
    w = await World(tmp_path / "hive.sqlite", max_row_bytes=64 * 1024).start()
    try:
        too_big = "x" * 100_000
        refused = await call(w.broker.send_many, [("a", "b", too_big, "k"), ("a", "b", too_big, "k"),
                                                   ("a", "c", "fine", "j")])
        assert refused[0].code == refused[1].code == "bad_request" and type(refused[2]) is int
        ok = await call(w.broker.send, "a", "b", "small now", "k")
        assert type(ok) is int
        assert [(r[3], r[4]) for r in w.rows()] == [("fine", "j"), ("small now", "k")]
    finally:
        w.stop()


# --- the store: the unique index, its lookup, the fallback and the vacuum ---------

async def test_the_index_is_unique_per_sender_and_holds_only_keyed_rows(world: World) -> None:
    await call(world.broker.send_many, [("a", "b", "x", None), ("a", "b", "y", "k")])
    with sqlite3.connect(world.path) as conn:
        [(sql,)] = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages_sender_idempotency_key'")
        assert "UNIQUE" in sql and '("sender", "idempotency_key")' in sql and "IS NOT NULL" in sql
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO messages (sender, recipient, body, sent_at, idempotency_key) "
                         "VALUES ('a', 'c', 'z', 1, 'k')")
        conn.execute("INSERT INTO messages (sender, recipient, body, sent_at) VALUES ('a', 'c', 'z', 1)")
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT idempotency_key, id FROM messages "
                            "WHERE sender = ? AND idempotency_key IN (?, ?)", ("a", "k", "j")).fetchall()
    conn.close()
    assert "messages_sender_idempotency_key" in str(plan)


def test_a_key_stored_behind_the_brokers_back_still_answers_the_original(tmp_path: Path) -> None:
    """The Broker looks keys up before it inserts; should a row appear between
    (another writer), the unique index refuses the second and the batch, row by
    row, answers that send with the original id."""
    db = open_hive_db(tmp_path / "hive.sqlite")
    try:
        [orig] = insert_rows(db, [("a", "b", "first", 1.0, None, "k", None)])
        got = insert_rows(db, [("a", "c", "x", 2.0, None, None, None), ("a", "b", "again", 2.0, None, "k", None),
                               ("b", "a", "y", 2.0, None, "k", None)])
        assert got[1] == orig and isinstance(got[1], Duplicate)
        assert type(got[0]) is int and type(got[2]) is int
        assert insert_rows(db, [("a", "d", "alone", 3.0, None, "k", None)]) == [orig]  # a batch of one too
        assert Message.select().count() == 3
        assert stored_keys(db, {("a", "k"), ("b", "k"), ("c", "k")}) == {("a", "k"): orig, ("b", "k"): got[2]}
    finally:
        db.close()


def test_lookups_of_many_keys_come_in_chunks(tmp_path: Path) -> None:
    db = open_hive_db(tmp_path / "hive.sqlite")
    try:
        ids = insert_rows(db, [("a", "b", "m", 1.0, None, f"k{i}", None) for i in range(1200)])
        found = stored_keys(db, {("a", f"k{i}") for i in range(0, 1300)})
        assert found == {("a", f"k{i}"): ids[i] for i in range(1200)}
    finally:
        db.close()


async def test_the_key_goes_with_its_row_when_the_vacuum_deletes_it(world: World) -> None:
    old = await call(world.broker.send, "a", "b", "old", "k")
    await call(world.broker.recv, "b", 0, False)  # delivered
    Message.update(delivered_at=1.0).where(Message.id == old).execute()  # long ago
    assert delete_delivered_batch(world.db, cutoff=2.0) == (1, False)
    assert world.rows() == []
    new = await call(world.broker.send, "a", "b", "new", "k")  # its key was free again
    assert type(new) is int and world.rows() == [(new, "a", "b", "new", "k")]


# `hive mcp`'s key per tool call, sent again after a lost daemon: tests/test_mcp_pipe.py (the pipe)
# and tests/test_idempotency_e2e.py (through the daemon).
