"""Pure views of what agents spend (issue 15): the dashboard's cost cell of
an agent's row and of the fleet, and the dollar texts `hive ls` shows too.

In: the spend table's ``view`` (`web.tables.spend.Spend.view`: today's cost,
the standing, the budget) and the Ledger's hourly series; out: JSON-ready
dicts with the texts and the sparkline's SVG (`sparkline`). ``now`` is an
argument; no I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hyperhive.web.dashboard.sparkline import clean, sparkline

__all__ = [
    "BUCKETS", "BUCKET_SECONDS", "SPARK_HEIGHT", "SPARK_WIDTH", "budget_text", "cost_cell", "fleet_series",
    "reported_agents", "spark_cell", "spark_since", "usd_text",
]

BUCKET_SECONDS = 3600.0
BUCKETS = 24
SPARK_WIDTH = 96  # 4 px an hour
SPARK_HEIGHT = 16
_PER = {"day": "per day", "week": "per week", "total": "in all"}


def spark_since(now: float) -> float:
    """The first hour of the sparkline: 24 whole hours, the last one the hour ``now`` is in."""
    return math.floor(now / BUCKET_SECONDS) * BUCKET_SECONDS - (BUCKETS - 1) * BUCKET_SECONDS


def usd_text(usd: Any) -> str:
    """``$0.42``; ``<$0.01`` for a fraction of a cent (so a spend never reads as none);
    ``$1,234`` from a thousand on; ``$?`` for anything that is no amount."""
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd):
        return "$?"
    if usd <= 0:
        return "$0.00"
    if usd < 0.005:
        return "<$0.01"
    return f"${usd:,.2f}" if usd < 1000 else f"${usd:,.0f}"


def budget_text(budget: Mapping[str, Any] | None) -> str | None:
    """``$4.10/$5.00 per day``: spent in the budget's window, of its limit."""
    if not budget:
        return None
    return f"{usd_text(budget.get('spent_usd'))}/{usd_text(budget.get('usd'))} " \
           f"{_PER.get(str(budget.get('per')), str(budget.get('per')))}"


def fleet_series(series: Mapping[str, Sequence[float]], buckets: int = BUCKETS) -> list[float]:
    """Every agent's series added up, bucket by bucket (agents destroyed since count too)."""
    out = [0.0] * buckets
    for values in series.values():
        for i, v in enumerate(clean(values[:buckets])):
            out[i] += v
    return out


def spark_cell(series: Sequence[float] | None, who: str = "") -> dict[str, str]:
    """The last 24 hours: ``last_24h`` (the total) and ``spark`` (the SVG, titled with it).
    A series shorter than 24 hours is padded with quiet ones."""
    values = clean(list(series or [])[:BUCKETS])
    values += [0.0] * (BUCKETS - len(values))
    total = usd_text(math.fsum(values))
    whose = f"{who}: " if who else ""
    return {"last_24h": total,
            "spark": sparkline(values, SPARK_WIDTH, SPARK_HEIGHT, title=f"{whose}{total} in the last 24 h")}


def cost_cell(view: Mapping[str, Any], series: Sequence[float] | None, *, reported: bool = False,
              who: str = "", spark: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One cost cell: today's cost (``today``), the budget as spent/limit with its
    standing (ok, warn, over, capped), ``over_budget`` (no turn starts: its own
    budget or the fleet's), and the last 24 hours as a sparkline (``spark``:
    `spark_cell`'s, made already; else made of ``series``). ``reported``: some
    of it is the CLI's reported cost (a model the price table lacks)."""
    budget = view.get("budget")
    return {
        "today_usd": view.get("today_usd", 0.0),
        "today": usd_text(view.get("today_usd", 0.0)),
        "reported": reported,
        "standing": str(view.get("standing") or "ok"),
        "over_budget": bool(view.get("over_budget")),
        "budget": dict(budget) if budget else None,
        "budget_text": budget_text(budget),
        **(spark if spark is not None else spark_cell(series, who)),
    }


def reported_agents(summary: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The agents whose cost (in the Ledger's ``summary``) is partly the CLI's report, or not priced."""
    return {a for a, s in summary.items() if s.get("reported_calls") or s.get("unpriced_calls")}
