"""What the daemon last observed of each agent, off the request path: its
badges (F19, file stats), its cgroup usage and its clone's status (issue 14).
One cache per state dir (`observations_for`), shared by the dashboard and
the admin ``ls`` (issue 17: ``hive ls`` at 1000 agents computed all three
afresh on every call, ~0.3 ms per agent).

Who fills it: the dashboard's round (`StateSource.refresh_badges`, every
``BADGE_REFRESH_SECONDS``, 10 s) renews every entry; a container's state
change renews its own; any reader that computed what it did not find (a name
not cached yet, a stale entry) puts it back.

What a reader takes: an entry no older than ``max_age`` (``MAX_AGE_SECONDS``,
twice the round, so a late round is no miss) whose inputs are the ones the
reader has now: for badges the driver and whether it is sandboxed, for usage
the run (its pid: a restarted agent's figures are read afresh). Anything
else is computed by the reader, at once: a just-spawned agent's badges are
there on its first ``ls``. One in the middle of a lifecycle verb (``transient``
set: spawning, starting …) is observed afresh on every read and never cached:
its files may be changing under the verb. So ``hive ls`` shows figures at most one round
old (10 s and the round's own time, at worst ``MAX_AGE_SECONDS``), the ones
the dashboard shows.

Values are kept as they were given (lists, dicts): readers must not mutate
them. Thread-safe: the IOLoop and executor threads read and write it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hyperhive.paths import StatePaths

__all__ = ["MAX_AGE_SECONDS", "Observations", "Table", "forget_observations", "install_observations",
           "observations_for"]

MAX_AGE_SECONDS = 20.0  # twice the dashboard's BADGE_REFRESH_SECONDS

V = TypeVar("V")
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    key: Hashable  # the inputs it was computed from
    value: V
    at: float  # the reader's clock when the computation began


class Table(Generic[V]):
    """One kind of observation per agent name: keyed by its inputs, stamped."""

    def __init__(self, clock: Clock = time.monotonic, max_age: float = MAX_AGE_SECONDS) -> None:
        self.clock = clock
        self.max_age = max_age
        self._lock = threading.Lock()
        self._rows: dict[str, _Entry[V]] = {}

    def known(self, wanted: Iterable[tuple[str, Hashable]], any_age: bool = False) -> dict[str, V]:
        """The entries of ``(name, key)`` with that key and fresh (any age with ``any_age``)."""
        oldest = float("-inf") if any_age else self.clock() - self.max_age
        with self._lock:
            rows = self._rows
            out: dict[str, V] = {}
            for name, key in wanted:
                e = rows.get(name)
                if e is not None and e.key == key and e.at >= oldest:
                    out[name] = e.value
        return out

    def put(self, values: Mapping[str, tuple[Hashable, V]], at: float) -> None:
        """``name → (key, value)``, computed from ``at`` on; a newer entry already there stays."""
        with self._lock:
            for name, (key, value) in values.items():
                old = self._rows.get(name)
                if old is None or old.at <= at:
                    self._rows[name] = _Entry(key, value, at)

    def replace(self, values: Mapping[str, tuple[Hashable, V]], at: float) -> None:
        """Every entry at once (a round over all agents): names left out are dropped."""
        with self._lock:
            self._rows = {name: _Entry(key, value, at) for name, (key, value) in values.items()}

    def drop(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in names:
                self._rows.pop(name, None)

    def values(self) -> dict[str, V]:
        """Every entry's value, whatever its age or key."""
        with self._lock:
            return {name: e.value for name, e in self._rows.items()}


class Observations:
    """The three tables of one state dir."""

    def __init__(self, clock: Clock = time.monotonic, max_age: float = MAX_AGE_SECONDS) -> None:
        self.clock = clock
        self.badges: Table[list[str]] = Table(clock, max_age)  # key: (driver, sandboxed)
        self.usage: Table[dict[str, int | None] | None] = Table(clock, max_age)  # key: the run's pid
        self.workspaces: Table[dict[str, Any] | None] = Table(clock, max_age)  # key: None


_ALL: dict[str, Observations] = {}
_ALL_LOCK = threading.Lock()


def observations_for(paths: StatePaths) -> Observations:
    """The cache of ``paths``' agents (made on first use)."""
    key = str(paths.root)
    with _ALL_LOCK:
        obs = _ALL.get(key)
        if obs is None:
            obs = _ALL[key] = Observations()
        return obs


def install_observations(paths: StatePaths, obs: Observations) -> Observations:
    """Make ``obs`` the cache of ``paths``' agents (a test's, on its own clock)."""
    with _ALL_LOCK:
        _ALL[str(paths.root)] = obs
    return obs


def forget_observations(paths: StatePaths) -> None:
    """Drop ``paths``' cache (a test's state dir, done with)."""
    with _ALL_LOCK:
        _ALL.pop(str(paths.root), None)
