"""Budgets (issue 15), pure: what one is, the window it counts, where a spend
stands against it, and the operator's question when it is crossed.

A budget is ``{"usd": 5, "per": "day" | "week" | "total"}``: the dollars an
agent (or the fleet) may spend per calendar day, per week (from Monday), or
in all, in the daemon's local time. Where spending stands:

- ``ok``: under ``warn_at`` (80 %) of the budget;
- ``warn``: past it (a ``BudgetWarning`` goes to the notify command, once a
  window);
- ``over``: at or past the budget: no new turn starts, and the operator is
  asked once a window;
- ``capped``: at or past ``hard_cap_factor`` × the budget: the running turn is
  cancelled too (the gateway cuts its call and refuses the next).
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from hyperhive.errors import BadRequest

__all__ = [
    "PERS", "Budget", "Per", "Standing", "budget_question", "money", "next_midnight", "parse_budget", "raise_answer",
    "standing", "window_start",
]

Per = Literal["day", "week", "total"]
PERS: tuple[Per, ...] = ("day", "week", "total")
Standing = Literal["ok", "warn", "over", "capped"]
MAX_USD = 1_000_000.0
STOP = "stop"


@dataclass(frozen=True)
class Budget:
    usd: float
    per: Per

    def to_wire(self) -> dict[str, Any]:
        return {"usd": self.usd, "per": self.per}

    def text(self) -> str:
        return f"{money(self.usd)} in all" if self.per == "total" else f"{money(self.usd)} per {self.per}"


def money(usd: float) -> str:
    """Dollars as the operator reads them: to the cent, or to the digit that
    matters for a sum a cent would round away ($0.0015, never $0.00)."""
    cents = f"{usd:.2f}"
    if usd == 0 or abs(usd) >= 1 or float(cents) == round(usd, 6):
        return f"${cents}"
    return f"${usd:.6f}".rstrip("0")


def _usd(value: Any, where: str) -> float:
    # The range first: math.isfinite raises OverflowError on an int past a float's range.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_USD \
            or not math.isfinite(value) or round(float(value), 6) == 0:  # kept to a millionth: not 0
        raise BadRequest(f"{where} must be a number of dollars in (0, {MAX_USD:g}], got {value!r}")
    return round(float(value), 6)


def parse_budget(raw: Any, where: str = "budget") -> Budget:
    """A budget from its JSON form; BadRequest with the reason otherwise."""
    if not isinstance(raw, dict):
        raise BadRequest(f'{where} must be an object like {{"usd": 5, "per": "day"}}')
    unknown = set(raw) - {"usd", "per"}
    if unknown:
        raise BadRequest(f"{where} has unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    per = raw.get("per", "day")
    if per not in PERS:
        raise BadRequest(f"{where}.per must be one of {', '.join(PERS)}, got {per!r}")
    return Budget(_usd(raw.get("usd"), f"{where}.usd"), per)


def window_start(per: Per, now: float) -> float:
    """When the window holding ``now`` began: local midnight today, Monday's, or the epoch."""
    if per == "total":
        return 0.0
    t = time.localtime(now)
    days_back = t.tm_wday if per == "week" else 0
    return _day_start(t.tm_year, t.tm_mon, t.tm_mday - days_back)


def next_midnight(now: float) -> float:
    """When the local day after the one holding ``now`` begins."""
    t = time.localtime(now)
    return _day_start(t.tm_year, t.tm_mon, t.tm_mday + 1)


def _day_start(year: int, month: int, day: int) -> float:
    """The first instant of a local date (``day`` may be out of range: mktime
    carries it into the month before or after): its midnight; the first of two
    when a DST change repeats it; the hour a change that skips it begins the
    day with. ``mktime`` with ``isdst=-1`` guesses between the two midnights
    by its previous call, so each reading is tried and the earliest that falls
    on the date is taken.

    Kept per zone and date: in a zone with no DST (UTC) glibc's ``mktime``
    with ``isdst=1`` searches years either side for one (~25 us a call, a
    hundred times the others). The zone is the ``TZ`` variable, which is what
    the C library itself reads its zone by (unset: /etc/localtime, read once)."""
    return _day_start_in(os.environ.get("TZ"), year, month, day)


@functools.lru_cache(maxsize=1024)
def _day_start_in(zone: str | None, year: int, month: int, day: int) -> float:
    """`_day_start` in the local zone, which ``zone`` names (it only keys the cache)."""
    noon = time.localtime(time.mktime((year, month, day, 12, 0, 0, 0, 0, -1)))
    date = (noon.tm_year, noon.tm_mon, noon.tm_mday)
    starts = []
    for isdst in (0, 1, -1):
        at = time.mktime((year, month, day, 0, 0, 0, 0, 0, isdst))
        lt = time.localtime(at)
        if (lt.tm_year, lt.tm_mon, lt.tm_mday) == date:
            starts.append(at)
    return float(min(starts)) if starts else float(time.mktime((year, month, day, 0, 0, 0, 0, 0, -1)))


def standing(spent: float, budget: Budget | None, hard_cap_factor: float, warn_at: float = 0.8) -> Standing:
    if budget is None:
        return "ok"
    if spent >= budget.usd * hard_cap_factor:
        return "capped"
    if spent >= budget.usd:
        return "over"
    return "warn" if spent >= budget.usd * warn_at else "ok"


def budget_question(who: str, spent: float, limit: Budget, base_usd: float) -> tuple[str, list[str]]:
    """The operator's question when ``who`` (an agent, or "the fleet") crosses
    its ``limit`` (the configured budget, ``base_usd``, or what the operator
    raised it to), and its options: twice the limit, the limit plus the
    configured budget, or stop (the fleet: hold every turn)."""
    per = "in all" if limit.per == "total" else f"per {limit.per}"
    text = f"{who} has spent {money(spent)} of its {money(limit.usd)} budget {per}"
    stop = f"{STOP} {who}" if who != "the fleet" else "hold every turn"
    return text, [f"raise to {money(limit.usd * 2)}", f"raise by {money(base_usd)}", stop]


# Free text: a sum of dollars ("12", "$12.50", "1,000"), alone or after "raise to" / "raise by",
# then nothing, or a reason after a comma, a semicolon, a new line or a space.
_AMOUNT = re.compile(r"(?:raise\s+(?P<how>to|by)\s+)?\$?\s*(?P<usd>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)"
                     r"(?:$|[\s,;])", re.IGNORECASE)


def raise_answer(answer: str, limit: Budget, base_usd: float, spent: float) -> float | None:
    """The new limit in dollars an answer sets (None: stop, or hold). An option
    (with or without text after it) is that raise; free text is a limit in
    dollars (``12``, ``$12.50``, ``1,000``, ``raise to $12``, ``raise by $5``,
    a reason after a comma or a new line); a limit at or below what is spent
    already would hold at once: it is taken as no raise (None), as is anything
    else."""
    text = answer.strip()
    options = budget_question("x", spent, limit, base_usd)[1]
    if text.casefold().startswith(options[0].casefold()):
        return round(limit.usd * 2, 6)
    if text.casefold().startswith(options[1].casefold()):
        return round(limit.usd + base_usd, 6)
    m = _AMOUNT.match(text)
    if m is None:
        return None
    value = float(m["usd"].replace(",", ""))
    if (m["how"] or "").lower() == "by":
        value += limit.usd
    if not math.isfinite(value) or not 0 < value <= MAX_USD or value <= spent:
        return None
    return round(value, 6)
