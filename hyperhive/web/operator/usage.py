"""The usage verb (issue 15): what each agent's model calls used and cost over
a window, and the fleet's total. One reply for every surface: the admin
socket's ``usage`` (`hive usage`) and the manager's ``usage`` tool.

The figures are the Ledger's record (every call the API gateway saw, in
hive.sqlite; ``all`` includes what the retention sweep archived); today's
spend and the budgets are the spend table's, as `hive ls` shows them.

The window's grammar (`parse_since`): ``all``, or a whole number followed by
``h`` (hours) or ``d`` (days): ``24h``, ``7d``, ``90d``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hyperhive.actors.bridge import Handle
from hyperhive.actors.ledger import Ledger
from hyperhive.errors import BadRequest
from hyperhive.web.tables.spend import FLEET

if TYPE_CHECKING:
    from hyperhive.costs import Costs

__all__ = ["ALL", "TOKEN_KINDS", "build_usage", "parse_since", "usage"]

ALL = "all"
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")
_SINCE = re.compile(r"([1-9][0-9]{0,5})([hd])")
_UNIT = {"h": 3600, "d": 86400}
MAX_SECONDS = 3660 * 86400  # ten years and some: further back than anything is kept


def parse_since(text: str) -> float | None:
    """How many seconds back the window reaches (None: all of it); BadRequest otherwise."""
    if text == ALL:
        return None
    m = _SINCE.fullmatch(text)
    seconds = int(m.group(1)) * _UNIT[m.group(2)] if m is not None else 0
    if m is None or seconds > MAX_SECONDS:
        raise BadRequest(f"since must be 'all' or a whole number of hours or days, like 24h or 7d "
                         f"(at most {MAX_SECONDS // 86400}d), got {text[:40]!r}")
    return float(seconds)


def _zero() -> dict[str, Any]:
    return {"calls": 0, "turns": 0, "tokens": dict.fromkeys(TOKEN_KINDS, 0), "cost_usd": 0.0,
            "cost_reported": False, "unpriced_calls": 0}


def _figures(s: Mapping[str, Any]) -> dict[str, Any]:
    tokens = s.get("tokens") or {}
    return {"calls": int(s.get("calls", 0)), "turns": int(s.get("turns", 0)),
            "tokens": {k: int(tokens.get(k, 0)) for k in TOKEN_KINDS},
            "cost_usd": round(float(s.get("cost_usd", 0.0)), 6),
            "cost_reported": int(s.get("reported_calls", 0)) > 0, "unpriced_calls": int(s.get("unpriced_calls", 0))}


def build_usage(since: str, summary: Mapping[str, Mapping[str, Any]], views: Mapping[str, Mapping[str, Any]],
                fleet_view: Mapping[str, Any]) -> dict[str, Any]:
    """The reply, pure: the Ledger's ``summary`` per agent, the spend table's
    ``views`` (`Spend.view`) of every agent it knows, and the fleet's view.
    An agent with no call in the window is listed only when it has a budget."""
    names = sorted({*summary, *(n for n, v in views.items() if v.get("budget") is not None)} - {FLEET})
    agents: list[dict[str, Any]] = []
    fleet = _zero()
    for name in names:
        row = _figures(summary[name]) if name in summary else _zero()
        view = views.get(name) or {}
        agents.append({"name": name, **row, "today_usd": round(float(view.get("today_usd", 0.0)), 6),
                       "budget": view.get("budget"), "standing": view.get("standing", "ok"),
                       "over_budget": bool(view.get("over_budget", False))})
        for k in ("calls", "turns", "unpriced_calls"):
            fleet[k] += row[k]
        for kind in TOKEN_KINDS:
            fleet["tokens"][kind] += row["tokens"][kind]
        fleet["cost_usd"] += row["cost_usd"]
        fleet["cost_reported"] = fleet["cost_reported"] or row["cost_reported"]
    fleet["cost_usd"] = round(fleet["cost_usd"], 6)
    fleet.update(today_usd=round(float(fleet_view.get("today_usd", 0.0)), 6), budget=fleet_view.get("budget"),
                 standing=fleet_view.get("standing", "ok"), over_budget=bool(fleet_view.get("over_budget", False)))
    return {"since": since, "agents": agents, "fleet": fleet}


async def usage(costs: Costs, since: str) -> dict[str, Any]:
    """Per agent (by name): calls, turns, tokens by kind, cost (``cost_reported``:
    some of it is the CLI's reported cost, for a model the price table lacks;
    ``unpriced_calls``: calls not costed yet), today's spend and its budget
    (``budget``: ``{usd, per, spent_usd}`` or None); ``fleet``: the sums, with
    the fleet's budget."""
    back = parse_since(since)
    summary = await Handle(costs.ledger).ask(Ledger.summary, None if back is None else time.time() - back)
    spend = costs.spend
    views = {name: spend.view(name) for name in {*summary, *spend.agents()} - {FLEET}}
    return build_usage(since, summary, views, spend.view(FLEET))
