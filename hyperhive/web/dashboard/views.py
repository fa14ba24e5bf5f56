"""Pure views of the operator dashboard: actor snapshots and observed files
in, JSON-ready sections out (F32–F37). No I/O here; ``now`` is an argument."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from hyperhive.actors.questions_core import countdown_chip
from hyperhive.texts import span_text
from hyperhive.wire import InboxRow

if TYPE_CHECKING:  # the CLI's `hive ls` imports the texts here: keep this module light
    from hyperhive.actors.snapshots import ContainerSnapshot
    from hyperhive.tombstones import Tombstone

__all__ = [
    "FLOW_LIMIT",
    "INBOX_LIMIT",
    "build_approval_views",
    "build_container_views",
    "build_flow_views",
    "build_inbox_views",
    "build_question_views",
    "build_tombstone_views",
    "container_row",
    "disk_text",
    "human_age",
    "human_size",
    "memory_text",
    "pids_text",
    "pill_text",
    "short_size",
    "workspace_text",
]

FLOW_LIMIT = 60
INBOX_LIMIT = 50
BODY_PREVIEW = 280


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def short_size(n: int) -> str:
    """A compact size for narrow columns: ``512B``, ``1.5K``, ``112M``, ``2.0G``
    (binary units; one decimal below 10, none above)."""
    size = float(max(0, n))
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            if unit == "B":
                return f"{int(size)}B"
            return f"{size:.1f}{unit}" if round(size, 1) < 10 else f"{size:.0f}{unit}"
        size /= 1024
    raise AssertionError("unreachable")


def memory_text(usage: Mapping[str, Any] | None) -> str | None:
    """An agent's memory, current/peak (``112M/180M``); None when neither is known."""
    if not usage:
        return None
    cur, peak = usage.get("memory_bytes"), usage.get("memory_peak_bytes")
    if cur is None and peak is None:
        return None
    now = "?" if cur is None else short_size(int(cur))
    return now if peak is None else f"{now}/{short_size(int(peak))}"


def pids_text(usage: Mapping[str, Any] | None) -> str | None:
    """The task count of an agent's cgroup as its ``pids`` limit counts it (processes
    and their threads): ``1 pid``, ``7 pids``; None when unknown."""
    n = None if not usage else usage.get("pids")
    if n is None:
        return None
    return f"{int(n)} pid" if int(n) == 1 else f"{int(n)} pids"


def disk_text(disk: Mapping[str, Any] | None) -> str | None:
    """An agent's disk use (``disk_use.DiskUse.to_wire``) for a narrow column: ``1.2G``;
    ``≥1.2G`` when its walk stopped at a bound (a lower bound); None: not measured yet."""
    if not disk or not isinstance(disk.get("bytes"), int):
        return None
    return ("" if disk.get("complete", True) else "≥") + short_size(disk["bytes"])


def human_age(seconds: float) -> str:
    """``42s``, ``3m``, ``1h 2m``, ``1d 1h``."""
    return span_text(seconds, fine=False)


_PILLS = {"running": "● running", "stopped": "○ stopped", "crashed": "✖ crashed", "hibernating": "☾ hibernating"}


def pill_text(state: str, transient: str | None) -> str:
    """F16: ``◐ restarting…`` while a verb runs, else the settled state."""
    if transient:
        return f"◐ {transient}…"
    return _PILLS.get(state, state)


def workspace_text(ws: Mapping[str, Any] | None) -> str | None:
    """An agent's clone in a few characters (issue 14): ``hive/a +3 *`` is branch
    hive/a, 3 commits ahead of the operator's HEAD, uncommitted changes; ``^2``:
    2 commits not pulled yet; ``?``: something could not be checked. None: no workspace."""
    if not ws:
        return None
    parts = [str(ws.get("branch") or "(detached)")]
    if ws.get("ahead"):
        parts.append(f"+{ws['ahead']}")
    if ws.get("dirty"):
        parts.append("*")
    if ws.get("unpulled"):
        parts.append(f"^{ws['unpulled']}")
    if ws.get("reason"):
        parts.append("?")
    return " ".join(parts)


def container_row(
    snap: ContainerSnapshot, stats: Mapping[str, Any], badges: list[str], port: int | None, now: float,
    activity: str | None = None, usage: Mapping[str, Any] | None = None,
    workspace: Mapping[str, Any] | None = None, cost: Mapping[str, Any] | None = None,
    disk: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One container row: identity + meta on the first line, actions on the second.
    ``port`` is the daemon's sticky port (``agents/<name>/port``); the link and
    the cgroup figures (``usage``) show only while the container runs. ``cost``:
    its cost cell (issue 15, `cost_views.cost_cell`; None without the cost parts). ``disk``: its
    dir's disk use (`disk_use.DiskUse.to_wire`; None: not measured yet), running or not."""
    name = snap.name
    started = snap.started_at
    parked = stats.get("parked", {}).get(name, {"tool": 0, "system": 0})
    running = snap.running
    return {
        "name": name,
        "role": snap.role,
        "state": snap.state,
        "transient": snap.transient,
        "pill": pill_text(snap.state, snap.transient),
        "busy": bool(snap.transient),
        "activity": activity,  # F41: idle / thinking / compacting / starting / unresponsive
        "pid": snap.pid,
        "driver": snap.driver,
        "restarts": snap.restarts,
        "last_exit": snap.last_exit,
        "uptime": human_age(now - started) if started else None,
        "badges": list(badges),
        "port": port if running else None,
        "sandboxed": snap.sandboxed,
        **({"node": dict(snap.node)} if snap.node else {}),  # the ray backend: where it runs
        "memory": memory_text(usage) if running else None,
        "pids": pids_text(usage) if running else None,
        "undelivered": int(stats.get("undelivered", {}).get(name, 0)),
        "parked": dict(parked),
        "workspace": dict(workspace) if workspace else None,  # workspace_status's wire form
        "workspace_text": workspace_text(workspace),
        "cost": dict(cost) if cost is not None else None,
        "disk": dict(disk) if disk else None,
        "disk_text": disk_text(disk),
    }


def build_container_views(
    snapshots: Iterable[ContainerSnapshot], stats: Mapping[str, Any],
    badges: Mapping[str, list[str]], ports: Mapping[str, int | None], now: float,
    activity: Mapping[str, str | None] | None = None, usage: Mapping[str, Mapping[str, Any] | None] | None = None,
    workspaces: Mapping[str, Mapping[str, Any] | None] | None = None,
    costs: Mapping[str, Mapping[str, Any]] | None = None,
    disks: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> list[dict[str, Any]]:
    """The containers section: the manager first, then by name."""
    ordered = sorted(snapshots, key=lambda s: (s.role != "manager", s.name))
    act = activity or {}
    use = usage or {}
    work = workspaces or {}
    cost = costs or {}
    disk = disks or {}
    return [container_row(s, stats, badges.get(s.name, []), ports.get(s.name), now, act.get(s.name),
                          use.get(s.name), work.get(s.name), cost.get(s.name), disk.get(s.name))
            for s in ordered]


def build_tombstone_views(tombstones: Iterable[Tombstone]) -> list[dict[str, Any]]:
    """Kept state (F18): size, last-modified age, whether credentials are kept,
    and what a purge would lose of its workspace (issue 14; ``lost`` None: nothing)."""
    return [{
        **t.to_wire(),
        "size": human_size(t.size_bytes),
        "age": human_age(t.age_seconds),
        "workspace_text": workspace_text(t.workspace),
        "lost": (t.workspace or {}).get("lost"),
    } for t in tombstones]


_PERMISSION_VERB = {"command": "run", "diff": "edit", "content": "write", "json": "use"}


def _permission_view(q: Mapping[str, Any]) -> dict[str, Any] | None:
    """A permission question's tool and what it would do (issue 14), for rendering:
    ``shown.kind`` command (monospace), diff (+/- lines), content (a file's text), json."""
    p = q.get("permission")
    if q.get("kind") != "permission" or not isinstance(p, Mapping):
        return None
    shown = dict(p.get("shown") or {})
    kind = str(shown.get("kind", "json"))
    target = shown.get("file") or p.get("tool_name")
    return {"tool_name": p.get("tool_name"), "shown": shown,
            "title": f"{q['asker']} wants to {_PERMISSION_VERB.get(kind, 'use')} {target}"
            + (f" ({p.get('tool_name')})" if shown.get("file") else "")}


def build_question_views(listing: Mapping[str, Any], now: float) -> dict[str, Any]:
    """Pending questions with their input kind and countdown chip; recent resolved
    ones; each agent's tools granted "from now on" (``grants``, with a revoke button)."""
    pending = []
    for q in listing.get("pending", []):
        deadline = q.get("deadline_at")
        pending.append({
            "id": q["id"], "asker": q["asker"], "question": q["question"],
            "options": list(q.get("options") or []),
            "input": "checkbox" if q.get("multi") else "radio",
            "asked_at": q.get("asked_at"), "deadline_at": deadline,
            "chip": countdown_chip(deadline - now) if deadline is not None else None,
            "default": q.get("default"),
            "kind": q.get("kind") or "question", "permission": _permission_view(q),
        })
    resolved = [{
        "id": q["id"], "asker": q["asker"], "question": q["question"], "answer": q.get("answer"),
        "how": q.get("how"), "answered_at": q.get("answered_at"),
        "kind": q.get("kind") or "question", "permission": _permission_view(q),
    } for q in listing.get("resolved", [])[:10]]
    grants = [{"agent": agent, "tools": list(tools)}
              for agent, tools in sorted((listing.get("grants") or {}).items()) if tools]
    return {"pending": pending, "resolved": resolved, "grants": grants}


def _approval(a: Mapping[str, Any]) -> dict[str, Any]:
    cfg = a.get("config")
    return {
        "id": a["id"], "kind": a["kind"], "agent": a["agent"], "requested_by": a.get("requested_by"),
        "requested_at": a.get("requested_at"), "status": a.get("status"),
        "config": cfg, "prompt": a.get("prompt"), "commit": a.get("commit"),
        # Built by config_repo.diff_html from escaped lines only: safe to insert as HTML.
        "diff_html": a.get("diff_html"),
        "reason": a.get("reason"), "decided_at": a.get("decided_at"),
        "title": f"spawn {a['agent']}" if a["kind"] == "spawn"
        else f"apply {str(a.get('commit') or '')[:12]} to {a['agent']}",
    }


def build_approval_views(listing: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, Any]:
    return {
        "pending": [_approval(a) for a in listing.get("pending", [])],
        "decided": [_approval(a) for a in listing.get("decided", [])[:10]],
    }


def _message(m: InboxRow) -> dict[str, Any]:
    body = m.body if len(m.body) <= BODY_PREVIEW else m.body[: BODY_PREVIEW - 1] + "…"
    return {"id": m.id, "from": m.from_, "to": m.to, "body": body, "sent_at": m.sent_at,
            "unread": m.delivered_at is None}


def build_inbox_views(rows: Iterable[InboxRow], limit: int = INBOX_LIMIT) -> dict[str, Any]:
    """The operator's inbox, newest first; unread = not yet marked read."""
    msgs = sorted(rows, key=lambda m: m.id, reverse=True)[:limit]
    views = [_message(m) for m in msgs]
    return {"messages": views, "unread": sum(1 for v in views if v["unread"])}


def build_flow_views(rows: Iterable[InboxRow], limit: int = FLOW_LIMIT) -> list[dict[str, Any]]:
    """Message flow: the latest messages between anyone, newest first."""
    seen: dict[int, InboxRow] = {m.id: m for m in rows}
    return [_message(m) for m in sorted(seen.values(), key=lambda m: m.id, reverse=True)[:limit]]
