"""Pure views: actor snapshots in, JSON-ready lists out."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from hyperhive.web.tables.heartbeats import Heartbeats

__all__ = ["build_container_list"]


def build_container_list(
    snapshots: list[dict[str, Any]], stats: dict[str, Any], beats: Heartbeats | None = None,
    queued: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Containers for `hive ls`: manager first, then by name, with inbox figures
    and what each is doing (F41)."""
    parked = stats.get("parked", {})
    undelivered = stats.get("undelivered", {})
    out = []
    for snap in sorted(snapshots, key=lambda s: (s.get("role") != "manager", s["name"])):
        name = snap["name"]
        out.append({
            **snap,
            "parked": parked.get(name, {"tool": 0, "system": 0}),
            "undelivered": int(undelivered.get(name, 0)),
            **(beats.view(name, snap.get("state") == "running", name in queued) if beats is not None else {}),
        })
    return out
