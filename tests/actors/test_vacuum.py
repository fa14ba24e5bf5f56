"""F22: retention. Broker.vacuum and the VacuumSweeper on real sqlite files,
and the sweep a real daemon runs at start."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from support import Hive, async_wait_for, wait_for
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import call
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.vacuum import DAY, VacuumSweeper
from hyperhive.paths import StatePaths
from hyperhive.store.events_db import EVENTS_FILE, EventLog
from hyperhive.store.models import Message, open_hive_db

NOW = 1_900_000_000.0


def seed_messages(db: Any, now: float) -> dict[str, int]:
    """Old delivered rows (3 batches' worth), old undelivered rows, and rows to keep."""
    rows = (
        [("a", "b", f"old-{i}", now - 40 * DAY, now - 35 * DAY) for i in range(4500)]
        + [("a", "b", f"waiting-{i}", now - 40 * DAY, None) for i in range(10)]
        + [("a", "b", f"fresh-{i}", now - 40 * DAY, now - 29 * DAY) for i in range(5)]
        + [("a", "b", f"new-{i}", now - DAY, now - DAY) for i in range(7)]
    )
    with db.atomic():
        db.cursor().executemany(
            "INSERT INTO messages (sender, recipient, body, sent_at, delivered_at) VALUES (?, ?, ?, ?, ?)", rows)
    return {"old": 4500, "waiting": 10, "fresh": 5, "new": 7}


def bodies_left(db: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for (body,) in db.execute_sql("SELECT body FROM messages WHERE sender = 'a'").fetchall():
        kind = body.split("-")[0]
        out[kind] = out.get(kind, 0) + 1
    return out


def seed_events(state: Path, name: str, old: int, new: int, now: float) -> Path:
    path = state / "agents" / name / "state" / EVENTS_FILE
    log = EventLog(path)
    rows = ([(now - 8 * DAY, "old", f'{{"i": {i}}}') for i in range(old)]
            + [(now - 60, "new", f'{{"i": {i}}}') for i in range(new)])
    with log.db.atomic():  # the rows as EventLog.append stores them, in one statement
        log.db.connection().executemany("INSERT INTO events (ts, kind, data) VALUES (?, ?, ?)", rows)
    assert log.count() == old + new
    log.close()
    return path


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    db = open_hive_db(tmp_path / "hive.sqlite")
    proxy = Broker.start(db, LoopClock(IOLoop.current())).proxy()
    yield proxy, db
    proxy.actor_ref.stop()
    db.close()


async def test_old_delivered_messages_go_and_undelivered_stay(broker: tuple[Any, Any]) -> None:
    proxy, db = broker
    seed_messages(db, NOW)
    assert await call(proxy.vacuum, NOW, 30 * DAY) == 4500
    assert bodies_left(db) == {"waiting": 10, "fresh": 5, "new": 7}
    # The freed pages went back to the filesystem.
    assert db.execute_sql("PRAGMA freelist_count").fetchone()[0] == 0
    assert await call(proxy.vacuum, NOW, 30 * DAY) == 0


async def test_sends_are_served_between_vacuum_batches(broker: tuple[Any, Any]) -> None:
    proxy, db = broker
    await call(proxy.register, "a", None)
    await call(proxy.register, "b", None)
    seed_messages(db, NOW)
    vacuum: cf.Future[int] = cf.Future()
    proxy.vacuum.defer(NOW, 30 * DAY, reply=vacuum)
    sent: cf.Future[int] = cf.Future()
    # Runs on the broker's thread the moment the send commits.
    vacuum_done_at_send: list[bool] = []
    sent.add_done_callback(lambda _: vacuum_done_at_send.append(vacuum.done()))
    proxy.send.defer("a", "b", "during", reply=sent)
    msg_id = await asyncio.wrap_future(sent)
    assert await asyncio.wrap_future(vacuum) == 4500
    assert vacuum_done_at_send == [False]  # the send did not wait for the whole sweep
    assert Message.get_by_id(msg_id).body == "during"


async def test_the_sweeper_never_opens_an_agents_events_db(tmp_path: Path, broker: tuple[Any, Any]) -> None:
    """The events db lives where the agent writes (it may be a link to a host
    file): its own harness trims it (tests/harness/test_events_prune.py)."""
    proxy, db = broker
    seed_messages(db, NOW)
    state = tmp_path / "state"
    big = seed_events(state, "busy", old=0, new=5000, now=NOW)
    target = tmp_path / "host-file"
    target.write_bytes(b"host bytes")
    linked = state / "agents" / "linked" / "state"
    linked.mkdir(parents=True)
    (linked / EVENTS_FILE).symlink_to(target)
    with capture_logs() as logs:
        sweeper = VacuumSweeper.start(StatePaths(state), proxy, LoopClock(IOLoop.current()), 0,
                                      now=lambda: NOW).proxy()
        await async_wait_for(lambda: sweeper.sweeps.get(timeout=5) >= 1, interval=0.002, what="the start-up sweep")
    sweeper.actor_ref.stop()
    counts = {(e["event"], e.get("agent")): e["count"] for e in logs if e["event"] == "vacuum.messages"}
    assert counts == {("vacuum.messages", None): 4500}
    log = EventLog(big)
    assert log.count() == 5000
    log.close()
    assert target.read_bytes() == b"host bytes"
    assert not list(linked.glob(EVENTS_FILE + "-*"))


async def test_a_sweep_with_nothing_to_do_logs_no_count(tmp_path: Path, broker: tuple[Any, Any]) -> None:
    proxy, _ = broker
    with capture_logs() as logs:
        sweeper = VacuumSweeper.start(StatePaths(tmp_path / "empty"), proxy, LoopClock(IOLoop.current()), 0).proxy()
        assert await call(sweeper.sweep) == {"messages": 0}
    sweeper.actor_ref.stop()
    assert not [e for e in logs if e["event"] in ("vacuum.messages", "vacuum.events")]


async def test_sweeps_repeat_on_the_loop_clock(tmp_path: Path, broker: tuple[Any, Any]) -> None:
    proxy, _ = broker
    sweeper = VacuumSweeper.start(StatePaths(tmp_path / "s"), proxy, LoopClock(IOLoop.current()), 0.01).proxy()
    try:
        await async_wait_for(lambda: sweeper.sweeps.get(timeout=5) >= 3, interval=0.002, what="three sweeps")
    finally:
        sweeper.actor_ref.stop()


@pytest.mark.e2e
def test_the_daemon_sweeps_at_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    now = time.time()
    db = open_hive_db(StatePaths(state).db)
    seed_messages(db, now)
    db.close()
    events = seed_events(state, "gone", old=0, new=5000, now=now)
    hive = Hive(state).start()
    try:
        def counts() -> dict[tuple[str, str | None], int]:
            return {(e["event"], e.get("agent")): e["count"] for e in hive.log_events()
                    if e.get("event") in ("vacuum.messages", "vacuum.events")}

        found = wait_for(lambda: counts(), what="the vacuum count in the daemon's log")
        assert found == {("vacuum.messages", None): 4500}
    finally:
        hive.stop()
    db = open_hive_db(StatePaths(state).db)
    assert bodies_left(db) == {"waiting": 10, "fresh": 5, "new": 7}
    db.close()
    log = EventLog(events)
    assert log.count() == 5000  # a kept state's events db: the daemon never opens it
    log.close()
