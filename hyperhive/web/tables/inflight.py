"""Messages a harness has taken but not finished (issue 16): nothing taken is
lost. On the IOLoop thread.

A harness's system ``recv`` hands it messages (the broker marks them
delivered); its turn on them ends with ``turn_done``. Until then they are
held here, per agent. When the harness goes away first (its turn was still
waiting for a slot, or it died in the middle: its container stopped or
crashed), `lost` hands back their ids for the broker to deliver again with the
next turn, and `interrupted` tells the restart's kick how many there were.

Once only: a message whose turn ends the harness every time (a command that
kills it, runs it out of memory) must not crash it forever. A message is
delivered again at most `MAX_REDELIVERIES` times; after that it is left
delivered (``inflight.gave_up``, logged with its id).
"""

from __future__ import annotations

import hyperhive.logs as logs

__all__ = ["InFlight"]

_log = logs.get("hyperhive.inflight")
MAX_REDELIVERIES = 1
_REMEMBERED = 10_000  # redelivered ids kept (oldest forgotten first)


class InFlight:
    def __init__(self) -> None:
        self._taken: dict[str, list[int]] = {}  # agent → ids its harness took, its turn not done
        self._started: set[str] = set()  # agents whose turn on them has started
        self._interrupted: dict[str, int] = {}  # agent → how many were given back at its last end
        self._redelivered: dict[int, int] = {}  # message id → times delivered again (insertion order: oldest first)

    def took(self, agent: str, ids: list[int]) -> None:
        """A system recv handed ``ids`` to the harness (kept with any it still holds)."""
        if ids:
            self._taken.setdefault(agent, []).extend(i for i in ids if i not in self._taken.get(agent, ()))

    def turn_started(self, agent: str) -> None:
        if self._taken.get(agent):
            self._started.add(agent)

    def turn_done(self, agent: str) -> None:
        """The turn that held them ended: they were handled."""
        if agent in self._started:
            self._started.discard(agent)
            self._taken.pop(agent, None)

    def holding(self, agent: str) -> list[int]:
        return list(self._taken.get(agent, ()))

    def lost(self, agent: str) -> list[int]:
        """The harness is gone: the ids to deliver again (their turn never finished)."""
        taken = self._taken.pop(agent, [])
        was_started = agent in self._started
        self._started.discard(agent)
        ids = [i for i in taken if self._redelivered.get(i, 0) < MAX_REDELIVERIES]
        if gave_up := [i for i in taken if i not in ids]:
            _log.error("inflight.gave_up", agent=agent, ids=gave_up, times=MAX_REDELIVERIES + 1)
        for i in ids:
            self._redelivered[i] = self._redelivered.get(i, 0) + 1
        while len(self._redelivered) > _REMEMBERED:
            del self._redelivered[next(iter(self._redelivered))]
        if ids:
            self._interrupted[agent] = len(ids)
            _log.warning("inflight.redeliver", agent=agent, ids=ids, turn_started=was_started)
        return ids

    def interrupted(self, agent: str) -> int:
        """How many messages the agent's last harness left unfinished (read once)."""
        return self._interrupted.pop(agent, 0)
