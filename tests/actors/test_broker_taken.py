"""What a harness's turns took (issue 16): the pure table (`InFlight`) as rows of
steps, and its store side on a real hive.sqlite: the taken marks, the
redelivery count, the mirror loaded again as a new daemon's Broker does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peewee import SqliteDatabase

from hyperhive.actors.broker_reads import mark_delivered, peek
from hyperhive.actors.broker_taken import STARTED, TAKEN, InFlight, Lost, finish, give_back, load, start
from hyperhive.store.models import Message, open_hive_db

# One step: (verb, agent, argument). "took" takes {id: redeliveries}; "lost" expects a Lost
# (and then applies it, as the Broker does once it is stored); "holding"/"interrupted" expect.
Step = tuple[str, str, Any]

CASES: dict[str, list[Step]] = {
    "a finished turn keeps nothing": [
        ("took", "a", {1: 0, 2: 0}), ("start", "a", [1, 2]), ("done", "a", [1, 2]),
        ("lost", "a", Lost()), ("interrupted", "a", (0, 0)),
    ],
    "gone mid-turn: handed back once, the kick reads the count once": [
        ("took", "a", {1: 0, 2: 0}), ("start", "a", [1, 2]),
        ("lost", "a", Lost((1, 2))), ("lost", "a", Lost()),
        ("interrupted", "a", (2, 0)), ("interrupted", "a", (0, 0)),
    ],
    "gone before its turn started (a budget, the F44 queue)": [
        ("took", "b", {7: 0}), ("lost", "b", Lost((7,))),
    ],
    "a turn done before any turn started keeps them (a compaction's slot)": [
        ("took", "a", {3: 0}), ("done", "a", []), ("holding", "a", [3]),
        ("took", "a", {3: 0, 4: 0}), ("lost", "a", Lost((3, 4))),  # taken twice (a requeue raced): once
    ],
    "taken during a note's turn: not that turn's": [
        ("took", "a", {1: 0}), ("start", "a", [1]), ("took", "a", {2: 0}),
        ("done", "a", [1]), ("holding", "a", [2]), ("start", "a", [2]), ("done", "a", [2]), ("holding", "a", []),
    ],
    "agents are apart": [
        ("took", "a", {1: 0}), ("took", "b", {2: 0}), ("lost", "a", Lost((1,))), ("holding", "b", [2]),
    ],
    "delivered again once, then given up (its count came with the row)": [
        ("took", "a", {5: 1, 6: 1, 7: 0}), ("start", "a", [5, 6, 7]),
        ("lost", "a", Lost((7,), (5, 6))), ("interrupted", "a", (1, 2)),
    ],
    "requeued (never reached the harness): not held": [
        ("took", "a", {1: 0, 2: 0}), ("release", "", [1]), ("holding", "a", [2]),
    ],
}


@pytest.mark.parametrize("steps", CASES.values(), ids=CASES.keys())
def test_in_flight_table(steps: list[Step]) -> None:
    f = InFlight()
    for verb, agent, arg in steps:
        if verb == "took":
            f.took(agent, arg)
        elif verb == "start":
            assert f.unstarted(agent) == arg
            f.mark_started(agent, arg)
        elif verb == "done":
            assert f.started(agent) == arg
            f.release(arg)
        elif verb == "release":
            f.release(arg)
        elif verb == "lost":
            assert f.lost(agent) == arg
            f.gone(agent, arg)
        elif verb == "holding":
            assert f.holding(agent) == arg
        elif verb == "interrupted":
            assert f.interrupted(agent) == arg


RESTORE: list[tuple[tuple[int, str, int, int | None], str, Lost | list[int]]] = [
    # (a stored row, what to ask, the answer)
    ((1, "a", TAKEN, None), "unstarted", [1]),
    ((1, "a", STARTED, None), "started", [1]),
    ((1, "a", STARTED, None), "lost", Lost((1,))),
    ((1, "a", STARTED, 1), "lost", Lost((), (1,))),  # delivered again before a restart: given up now
    ((1, "a", TAKEN, 0), "lost", Lost((1,))),
]


@pytest.mark.parametrize(("row", "ask", "want"), RESTORE)
def test_restored_rows(row: tuple[int, str, int, int | None], ask: str, want: Lost | list[int]) -> None:
    f = InFlight()
    f.restore([row])
    assert getattr(f, ask)("a") == want


# --- the store's side, on a real file -------------------------------------------------

@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteDatabase]:
    d = open_hive_db(tmp_path / "hive.sqlite")
    yield d
    d.close()


def _send(n: int, to: str = "a") -> list[int]:
    return [Message.create(sender="operator", recipient=to, body=f"m{i}", sent_at=float(i)).id for i in range(n)]


def _taken(ids: list[int]) -> list[tuple[int | None, int | None, bool]]:
    return [(m.taken, m.redeliveries, m.delivered_at is not None)
            for m in Message.select().where(Message.id.in_(ids)).order_by(Message.id)]


def test_a_system_recv_marks_taken_in_its_commit_and_a_turn_clears_them(db: SqliteDatabase) -> None:
    ids = _send(2)
    held = InFlight()
    rows = peek(db, "a")
    mark_delivered(db, rows, TAKEN)
    held.took("a", {m.id: m.redeliveries or 0 for m in rows})
    assert _taken(ids) == [(TAKEN, None, True)] * 2
    start(db, held, "a")
    assert _taken(ids) == [(STARTED, None, True)] * 2
    assert load(db).started("a") == ids  # a new daemon's Broker sees the turn under way
    finish(db, held, "a")
    assert _taken(ids) == [(None, None, True)] * 2 and held.holding("a") == []
    assert load(db).holding("a") == []


def test_give_back_counts_in_the_row_and_gives_up_past_the_limit(db: SqliteDatabase) -> None:
    [msg] = _send(1)
    for round_ in (1, 2):
        held = load(db)  # each round as a new daemon would
        rows = peek(db, "a")
        if round_ == 2:
            assert [m.id for m in rows] == [msg]  # delivered again
        mark_delivered(db, rows, TAKEN)
        held.took("a", {m.id: m.redeliveries or 0 for m in rows})
        start(db, held, "a")
        held = load(db)  # the daemon restarts mid-turn
        woke = give_back(db, held, "a")  # the harness is found dead
        if round_ == 1:
            assert woke and _taken([msg]) == [(None, 1, False)] and held.interrupted("a") == (1, 0)
        else:  # not a third time: left delivered, nothing taken any more
            assert not woke and _taken([msg]) == [(None, 1, True)] and held.interrupted("a") == (0, 1)
    assert peek(db, "a") == [] and load(db).holding("a") == []


def test_a_tool_recv_takes_nothing(db: SqliteDatabase) -> None:
    ids = _send(1)
    mark_delivered(db, peek(db, "a"))
    assert _taken(ids) == [(None, None, True)] and load(db).holding("a") == []


@pytest.mark.parametrize(("again", "gave_up", "says"), [
    (0, 0, "If a turn was under way, it did not finish"),
    (1, 0, "Your last turn was interrupted: 1 message it had taken is delivered to you again"),
    (3, 0, "Your last turn was interrupted: 3 messages it had taken are delivered to you again"),
    (0, 2, "2 messages already delivered again once ended a turn again and are not delivered any more"),
])
def test_the_kick_says_what_was_interrupted(again: int, gave_up: int, says: str) -> None:
    from hyperhive.actors.container_core import kick_text

    text = kick_text("alice", "restarted after a crash", "/s", again, gave_up)
    assert text.startswith("[system] alice, your harness was restarted after a crash.") and says in text
