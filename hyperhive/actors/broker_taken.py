"""What a harness's turns have taken and not finished (issue 16): nothing taken
is lost, across daemon restarts too. On the Broker's thread.

A harness's system ``recv`` hands it messages: the commit that marks them
delivered also marks them taken (``messages.taken`` = TAKEN). Its ``turn_slot``
marks what it holds STARTED, its ``turn_done`` clears the started ones. The
harness going away first (stopped, crashed, or found dead at boot, when it is
not adopted) gives them back: they are undelivered again, for the next turn,
and the next kick says how many. An adopted harness keeps what it held (its
later death gives them back, its turn_done clears them): the taken marks are
in hive.sqlite, and `InFlight` is their mirror, loaded when the Broker starts.

Once only: a message whose turn ends the harness every time (a command that
kills it, runs it out of memory) must not crash it forever. A message is
delivered again at most `MAX_REDELIVERIES` times (``messages.redeliveries``,
so also across restarts); after that it is left delivered
(``inflight.gave_up``, logged with its ids).

`InFlight` decides (pure, table-tested); the functions below write each
decision in one transaction, and the mirror follows only once it is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from peewee import Database, fn

import hyperhive.logs as logs
from hyperhive.actors.broker_reads import sql
from hyperhive.store.models import Message

__all__ = ["MAX_REDELIVERIES", "STARTED", "TAKEN", "InFlight", "Lost", "finish", "give_back", "load", "start"]

_log = logs.get("hyperhive.inflight")
MAX_REDELIVERIES = 1
TAKEN, STARTED = 1, 2  # messages.taken: a system recv took it; the turn on it started
_LOAD_CAP = 200_000  # taken rows the mirror loads at start (more: logged, the rest stay in the store)
_IN_CHUNK = 500  # ids per UPDATE (sqlite binds at most 32766 parameters)


@dataclass(frozen=True)
class Lost:
    """What a gone harness held: delivered again, or given up (delivered too often)."""

    redeliver: tuple[int, ...] = ()
    gave_up: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.redeliver or self.gave_up)


@dataclass
class _Held:
    started: bool
    redeliveries: int


class InFlight:
    def __init__(self) -> None:
        self._held: dict[str, dict[int, _Held]] = {}  # agent → id → its state
        self._interrupted: dict[str, tuple[int, int]] = {}  # agent → (delivered again, given up) at its last end

    def restore(self, rows: Iterable[tuple[int, str, int, int | None]]) -> None:
        """The store's taken rows: ``(id, recipient, taken, redeliveries)``."""
        for msg_id, agent, state, n in rows:
            self._held.setdefault(agent, {})[msg_id] = _Held(state == STARTED, n or 0)

    def took(self, agent: str, taken: dict[int, int]) -> None:
        """A system recv handed these ids (→ their redeliveries so far) to the harness."""
        if taken:
            held = self._held.setdefault(agent, {})
            for msg_id, n in taken.items():
                held.setdefault(msg_id, _Held(False, n))

    def unstarted(self, agent: str) -> list[int]:
        """The ids a turn starting now is on (held, their turn not started)."""
        return sorted(i for i, h in self._held.get(agent, {}).items() if not h.started)

    def started(self, agent: str) -> list[int]:
        """The ids a turn that ends now was on."""
        return sorted(i for i, h in self._held.get(agent, {}).items() if h.started)

    def mark_started(self, agent: str, ids: Iterable[int]) -> None:
        held = self._held.get(agent, {})
        for i in ids:
            if i in held:
                held[i].started = True

    def release(self, ids: Iterable[int]) -> None:
        """No longer held (finished, or put back undelivered), whoever held them."""
        gone = set(ids)
        for agent in [a for a, held in self._held.items() if gone & held.keys()]:
            held = self._held[agent]
            for i in gone & held.keys():
                del held[i]
            if not held:
                del self._held[agent]

    def holding(self, agent: str) -> list[int]:
        return sorted(self._held.get(agent, {}))

    def lost(self, agent: str) -> Lost:
        """The harness is gone: what to deliver again, and what not (the decision only)."""
        held = self._held.get(agent, {})
        again = tuple(sorted(i for i, h in held.items() if h.redeliveries < MAX_REDELIVERIES))
        return Lost(again, tuple(sorted(i for i in held if i not in again)))

    def gone(self, agent: str, lost: Lost) -> None:
        """``lost`` is stored: the agent holds none of it; its next kick says so."""
        self.release((*lost.redeliver, *lost.gave_up))
        if lost:
            self._interrupted[agent] = (len(lost.redeliver), len(lost.gave_up))

    def interrupted(self, agent: str) -> tuple[int, int]:
        """(delivered again, given up) at the agent's last harness's end (read once)."""
        return self._interrupted.pop(agent, (0, 0))


# --- the store's side ----------------------------------------------------------------

def load(db: Database) -> InFlight:
    """The mirror of the taken marks (through their partial index)."""
    rows = sql(db).execute_sql(
        "SELECT id, recipient, taken, redeliveries FROM messages WHERE taken IS NOT NULL ORDER BY id LIMIT ?",
        (_LOAD_CAP + 1,)).fetchall()
    if len(rows) > _LOAD_CAP:
        _log.warning("inflight.load_capped", loaded=_LOAD_CAP)
    f = InFlight()
    f.restore((int(r[0]), str(r[1]), int(r[2]), r[3]) for r in rows[:_LOAD_CAP])
    if rows:
        _log.info("inflight.restored", messages=min(len(rows), _LOAD_CAP))
    return f


def _update(ids: Iterable[int], **values: Any) -> None:
    ordered = sorted(ids)
    for k in range(0, len(ordered), _IN_CHUNK):
        Message.update(**values).where(Message.id.in_(ordered[k:k + _IN_CHUNK])).execute()


def start(db: Database, held: InFlight, agent: str) -> None:
    """A turn starts: what the agent holds is that turn's (one UPDATE; none when it holds nothing)."""
    ids = held.unstarted(agent)
    if _stored(db, "turn_started", agent, ids, taken=STARTED):
        held.mark_started(agent, ids)


def finish(db: Database, held: InFlight, agent: str) -> None:
    """Its turn ended: the messages it was on are handled."""
    ids = held.started(agent)
    if _stored(db, "turn_done", agent, ids, taken=None):
        held.release(ids)


def _stored(db: Database, op: str, agent: str, ids: list[int], **values: Any) -> bool:
    if not ids:
        return False
    try:
        with db.atomic():
            _update(ids, **values)
    except Exception as exc:  # noqa: BLE001 - a tell must never kill the broker; the mirror stays
        _log.error("inflight.store_failed", op=op, agent=agent, ids=ids, error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def give_back(db: Database, held: InFlight, agent: str) -> bool:
    """The agent's harness is gone: what it held is delivered again (at most
    MAX_REDELIVERIES times, counted in the row), the rest left delivered.
    One transaction. True when some went back (the caller wakes a waiter)."""
    lost = held.lost(agent)
    if not lost:
        return False
    try:
        with db.atomic():
            _update(lost.redeliver, delivered_at=None, taken=None,
                    redeliveries=fn.COALESCE(Message.redeliveries, 0) + 1)
            _update(lost.gave_up, taken=None)
    except Exception as exc:  # noqa: BLE001 - kept as taken: the next daemon gives them back
        _log.error("inflight.store_failed", op="give_back", agent=agent, error=f"{type(exc).__name__}: {exc}")
        return False
    held.gone(agent, lost)
    if lost.gave_up:
        _log.error("inflight.gave_up", agent=agent, ids=list(lost.gave_up), times=MAX_REDELIVERIES + 1)
    if lost.redeliver:
        _log.warning("inflight.redeliver", agent=agent, ids=list(lost.redeliver))
    return bool(lost.redeliver)
