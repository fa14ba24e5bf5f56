"""`hive ls`'s human table (pure): the containers of the admin ``ls`` op in,
text out. ``hive ls --json`` prints the containers as they came instead.

Also what every listing verb says when its reply was cut: the reply's
``more`` (rows left out; 0 when the daemon does not say) and the note
``(N more; --limit)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hyperhive.web.dashboard.cost_views import usd_text
from hyperhive.web.dashboard.views import disk_text, memory_text, workspace_text

__all__ = ["LS_COLUMNS", "TODAY_COLUMN", "WORKSPACE_COLUMN", "format_ls", "more_count", "more_note"]

LS_COLUMNS = ("NAME", "ROLE", "STATE", "ACTIVITY", "BEAT", "PID", "RESTARTS", "PARKED", "UNDELIVERED",
              "LAST EXIT", "MEM", "PIDS", "DISK", "BADGES")
# DISK: what the agent's whole dir takes (issue 16, `disk_use`), stopped or not: `1.2G`; `≥1.2G`
# when its walk stopped at a bound (a lower bound); `-` until first measured.
# Before BADGES when any container has a workspace (issue 14): `hive/a +3 *` (see views.workspace_text).
WORKSPACE_COLUMN = "WORKSPACE"
# Before those when the daemon counts costs (issue 15): what the agent spent today (from local
# midnight), `$0.42`; one over its budget (or the fleet's) has the over-budget badge.
TODAY_COLUMN = "TODAY"


def _today(cost: Mapping[str, Any] | None) -> str:
    return usd_text(cost.get("today_usd", 0.0)) if cost else "-"


def _row(c: Mapping[str, Any]) -> tuple[str, ...]:
    running = c.get("state") == "running"
    usage = c.get("usage") if running else None  # a stopped agent has no figures
    pids = None if not usage else usage.get("pids")
    return (
        c["name"], c.get("role", "?"), c.get("transient") or c["state"], c.get("activity") or "-",
        "-" if c.get("heartbeat_age") is None else f"{c['heartbeat_age']:.0f}s ago",
        str(c.get("pid") or "-"), str(c.get("restarts", 0)),
        str(sum((c.get("parked") or {}).values())), str(c.get("undelivered", 0)), c.get("last_exit") or "-",
        memory_text(usage) or "-",  # current/peak, e.g. 112M/180M
        "-" if pids is None else str(pids),
        disk_text(c.get("disk")) or "-",
        ",".join(c.get("badges") or ()) or "-",
    )


def format_ls(containers: Sequence[Mapping[str, Any]]) -> str:
    """The table, columns padded to their widest cell, lines right-stripped, no
    trailing newline (``print`` it)."""
    rows = [LS_COLUMNS, *(_row(c) for c in containers)]
    if any("cost" in c for c in containers):
        cells = [TODAY_COLUMN, *(_today(c.get("cost")) for c in containers)]
        rows = [(*r[:-1], cell, r[-1]) for r, cell in zip(rows, cells, strict=True)]
    if any(c.get("workspace") for c in containers):
        cells = [WORKSPACE_COLUMN, *(workspace_text(c.get("workspace")) or "-" for c in containers)]
        rows = [(*r[:-1], cell, r[-1]) for r, cell in zip(rows, cells, strict=True)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def more_count(reply: Mapping[str, Any]) -> int:
    """How many rows the daemon left out of a listing (0 when it does not say)."""
    more = reply.get("more", 0)
    return more if isinstance(more, int) and not isinstance(more, bool) and more > 0 else 0


def more_note(reply: Mapping[str, Any]) -> str:
    """``(N more; --limit)`` when rows were left out, else empty."""
    more = more_count(reply)
    return f"({more} more; --limit)" if more else ""
