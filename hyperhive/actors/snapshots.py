"""What the actors tell the rest of the daemon about a container, as data.

``ContainerSnapshot`` is a ContainerActor's state at one moment: the
Coordinator mirrors the latest of each, ``ls`` returns them, the dashboard and
``hive ls`` render them. ``to_wire`` is the JSON form the admin socket and the
dashboard's ``container.state`` patches carry (the same keys as ever).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

__all__ = ["ContainerSnapshot", "Role", "SnapshotLike", "State", "Transient", "as_snapshot"]

Role = Literal["manager", "agent"]
# hibernating (issue 17): no harness, desired state running; the first message for it starts one
State = Literal["stopped", "running", "crashed", "hibernating"]
Transient = Literal["spawning", "starting", "stopping", "restarting", "rebuilding", "killing", "destroying",
                    "hibernating", "waking"]


@dataclass(frozen=True, slots=True)
class ContainerSnapshot:
    name: str
    role: Role
    state: State
    transient: Transient | None = None
    pid: int | None = None
    driver: str = "builtin"
    restarts: int = 0
    last_exit: str | None = None
    sandboxed: bool = False
    started_at: float | None = None  # wall clock; None unless running
    node: dict[str, str] | None = None  # the ray backend (issue 18): {node_id, address} while it runs

    @property
    def running(self) -> bool:
        return self.state == "running"

    def to_wire(self) -> dict[str, Any]:
        out = asdict(self)
        if out["node"] is None:  # a backend without nodes: no key
            del out["node"]
        return out

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ContainerSnapshot:
        """The snapshot in a wire dict (``to_wire``'s keys; others, such as the
        badges or usage a view added, are left out)."""
        return cls(**{k: data[k] for k in _FIELDS if k in data})


_FIELDS = tuple(f.name for f in fields(ContainerSnapshot))
# A snapshot, or its wire dict (a surface still handing dicts around).
SnapshotLike = ContainerSnapshot | Mapping[str, Any]


def as_snapshot(snap: SnapshotLike) -> ContainerSnapshot:
    return snap if isinstance(snap, ContainerSnapshot) else ContainerSnapshot.from_wire(snap)
