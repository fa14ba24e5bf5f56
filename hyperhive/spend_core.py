"""Running sums of what agents spend (issue 15), pure: each account keeps the
costs of its last eight days of calls and its lifetime total, and answers
what was spent in the day, the week and in all at a given time.

The calendar windows come from `budgets.window_start` (local time); a
`Windows` caches their bounds until the next midnight, so the gateway's
check per call is a few additions, not a calendar computation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hyperhive.budgets import Per, next_midnight, window_start

__all__ = ["KEEP_SECONDS", "Account", "Windows"]

KEEP_SECONDS = 8 * 86400.0  # a week's window, plus a day


@dataclass
class Windows:
    """The day's and the week's start at ``now``, recomputed after midnight."""

    day: float = 0.0
    week: float = 0.0
    until: float = -1.0  # the next local midnight

    def at(self, now: float) -> Windows:
        if now >= self.until or now < self.day:
            self.day = window_start("day", now)
            self.week = window_start("week", now)
            self.until = next_midnight(now)
        return self

    def start(self, per: Per) -> float:
        return {"day": self.day, "week": self.week, "total": 0.0}[per]


@dataclass
class Account:
    """One agent's (or the fleet's) spending."""

    calls: deque[tuple[float, float]] = field(default_factory=deque)  # (at, cost), oldest first
    before: float = 0.0  # everything older than what ``calls`` holds
    total: float = 0.0  # in all: ``before`` and ``calls``
    _day: tuple[float, float] = (-1.0, 0.0)  # (window start, sum in it)
    _week: tuple[float, float] = (-1.0, 0.0)

    @classmethod
    def of(cls, calls: list[tuple[float, float]], before: float) -> Account:
        a = cls(deque(calls), before, before + sum(c for _, c in calls))
        return a

    def add(self, at: float, cost: float, now: float) -> None:
        if cost <= 0:
            return
        self.calls.append((at, cost))
        self.total += cost
        for attr in ("_day", "_week"):
            start, total = getattr(self, attr)
            if start >= 0 and at >= start:
                setattr(self, attr, (start, total + cost))
        while self.calls and self.calls[0][0] < now - KEEP_SECONDS:
            self.before += self.calls.popleft()[1]

    def spent(self, per: Per, windows: Windows) -> float:
        if per == "total":
            return self.total
        attr = "_day" if per == "day" else "_week"
        start = windows.start(per)
        cached_start, total = getattr(self, attr)
        if cached_start != start:
            total = sum(c for at, c in self.calls if at >= start)
            setattr(self, attr, (start, total))
        return float(total)
