"""What the actors tell the rest of the daemon about a container, as data.

``ContainerSnapshot`` is a ContainerActor's state at one moment: the
Coordinator mirrors the latest of each, ``ls`` returns them, the dashboard and
``hive ls`` render them. ``to_wire`` is the JSON form the admin socket and the
dashboard's ``container.state`` patches carry (the same keys as ever).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["ContainerSnapshot", "Role", "State", "Transient"]

Role = Literal["manager", "agent"]
State = Literal["stopped", "running", "crashed"]
Transient = Literal["spawning", "starting", "stopping", "restarting", "rebuilding", "killing", "destroying"]


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

    @property
    def running(self) -> bool:
        return self.state == "running"

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)
