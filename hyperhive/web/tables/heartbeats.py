"""F41: authoritative agent state. Each harness reports idle / thinking /
compacting over its own socket every beat; an agent that missed three beats
is ``unresponsive``, so an idle agent and a dead one never look alike.

The table lives on the IOLoop thread (the agent sockets' ops write it, `ls`
and the dashboard read it): no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["MISSED_BEATS", "REPORTED", "Heartbeats", "activity_of"]

REPORTED = ("idle", "thinking", "compacting")
MISSED_BEATS = 3


@dataclass(frozen=True)
class Beat:
    state: str
    at: float  # monotonic


def activity_of(beat: Beat | None, running: bool, now: float, interval: float, queued: bool = False) -> str | None:
    """What an agent is doing (pure): None when its container is not running;
    ``queued`` when it is otherwise idle and waits for a turn slot (F44)."""
    if not running:
        activity = None
    elif beat is None:
        return "starting"
    elif now - beat.at > MISSED_BEATS * interval:
        return "unresponsive"
    else:
        activity = beat.state
    return "queued" if queued and activity in ("idle", None) else activity


class Heartbeats:
    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._beats: dict[str, Beat] = {}

    def record(self, agent: str, state: str) -> bool:
        """Store a beat; True when the reported state changed."""
        old = self._beats.get(agent)
        self._beats[agent] = Beat(state, self._clock())
        return old is None or old.state != state

    def forget(self, agent: str) -> None:
        self._beats.pop(agent, None)

    def view(self, agent: str, running: bool, queued: bool = False) -> dict[str, Any]:
        """``activity`` and ``heartbeat_age`` (seconds since the last beat) of one agent."""
        now = self._clock()
        beat = self._beats.get(agent)
        return {
            "activity": activity_of(beat, running, now, self.interval, queued),
            "heartbeat_age": None if beat is None else round(now - beat.at, 3),
        }
