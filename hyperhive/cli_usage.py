"""`hive usage`'s human table (pure): the admin ``usage`` op's reply in, text
out (issue 15). ``hive usage --json`` prints the reply as it came instead.

One row per agent (calls, turns, the four kinds of tokens, the cost over the
window, today's spend, the budget and where it stands), then the fleet's
total. A cost with ``*`` includes what the CLI reported for a model the price
table lacks; ``?`` marks calls not costed yet (such a call's turn has not
ended)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FLEET_ROW", "USAGE_COLUMNS", "format_usage"]

USAGE_COLUMNS = ("AGENT", "CALLS", "TURNS", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "COST", "TODAY",
                 "BUDGET")
_LEFT = frozenset({0, len(USAGE_COLUMNS) - 1})  # the name and the budget; numbers are right-aligned
FLEET_ROW = "(fleet)"  # not an agent name: those start with a letter


def _usd(value: Any) -> str:
    return f"${float(value or 0.0):.4f}"


def _cost(row: Mapping[str, Any]) -> str:
    marks = ("*" if row.get("cost_reported") else "") + ("?" if row.get("unpriced_calls") else "")
    return _usd(row.get("cost_usd")) + marks


def _budget(row: Mapping[str, Any]) -> str:
    b = row.get("budget")
    if not isinstance(b, Mapping):
        return "-"
    per = "in all" if b.get("per") == "total" else f"per {b.get('per')}"
    text = f"${float(b.get('spent_usd') or 0.0):.2f} of ${float(b.get('usd') or 0.0):.2f} {per}"
    standing = row.get("standing")
    if row.get("over_budget") or standing in ("over", "capped"):
        return f"{text} (over budget)"
    return f"{text} (80%+)" if standing == "warn" else text


def _row(name: str, row: Mapping[str, Any]) -> tuple[str, ...]:
    tokens = row.get("tokens") or {}
    return (name, f"{int(row.get('calls') or 0):,}", f"{int(row.get('turns') or 0):,}",
            *(f"{int(tokens.get(k) or 0):,}" for k in ("input", "output", "cache_read", "cache_write")),
            _cost(row), _usd(row.get("today_usd")), _budget(row))


def _window(since: Any) -> str:
    return "all time" if since == "all" else f"the last {since}"


def format_usage(reply: Mapping[str, Any]) -> str:
    """The table, columns padded to their widest cell, lines right-stripped, no
    trailing newline; the window first, the marks' meaning last (when used)."""
    agents: Sequence[Mapping[str, Any]] = reply.get("agents") or []
    fleet: Mapping[str, Any] = reply.get("fleet") or {}
    rows = [USAGE_COLUMNS, *(_row(str(a.get("name")), a) for a in agents), _row(FLEET_ROW, fleet)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(USAGE_COLUMNS))]
    lines = [f"usage over {_window(reply.get('since'))}"]
    if not agents:
        lines.append("(no model calls)")
    for r in rows:
        lines.append("  ".join(v.ljust(w) if i in _LEFT else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    everyone = [*agents, fleet]
    if any(a.get("cost_reported") for a in everyone):
        lines.append("* includes the cost the CLI reported (a model the price table lacks)")
    if any(a.get("unpriced_calls") for a in everyone):
        lines.append("? some calls are not costed yet (a model the price table lacks; their turn is running)")
    return "\n".join(lines)
