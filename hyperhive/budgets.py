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

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from hyperhive.errors import BadRequest

__all__ = [
    "PERS", "Budget", "Per", "Standing", "budget_question", "parse_budget", "raise_answer", "standing",
    "window_start",
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
        return f"${self.usd:.2f} in all" if self.per == "total" else f"${self.usd:.2f} per {self.per}"


def _usd(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 < value <= MAX_USD:
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
    midnight = time.mktime((t.tm_year, t.tm_mon, t.tm_mday - days_back, 0, 0, 0, 0, 0, -1))
    return float(midnight)


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
    text = f"{who} has spent ${spent:.2f} of its ${limit.usd:.2f} budget {per}"
    stop = f"{STOP} {who}" if who != "the fleet" else "hold every turn"
    return text, [f"raise to ${limit.usd * 2:.2f}", f"raise by ${base_usd:.2f}", stop]


def raise_answer(answer: str, limit: Budget, base_usd: float, spent: float) -> float | None:
    """The new limit in dollars an answer sets (None: stop, or hold). Free text
    is a limit in dollars (``12``, ``$12.50``, a reason after a comma or a new
    line); a limit at or below what is spent already would hold at once: it is
    taken as no raise (None)."""
    text = answer.strip()
    options = budget_question("x", spent, limit, base_usd)[1]
    if text.startswith(options[0]):
        return round(limit.usd * 2, 6)
    if text.startswith(options[1]):
        return round(limit.usd + base_usd, 6)
    first = text.split(",", 1)[0].split("\n", 1)[0].strip().removeprefix("$").strip()
    try:
        value = float(first)
    except ValueError:
        return None
    if not math.isfinite(value) or not 0 < value <= MAX_USD or value <= spent:
        return None
    return round(value, 6)
