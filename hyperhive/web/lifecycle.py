"""`lifecycle_action`: the one path every lifecycle verb takes, whichever
surface asked (CLI, dashboard, the manager's tools). The ContainerActor shows
the transient kind while the verb runs and kicks the agent after a start,
restart or rebuild (F6, F16)."""

from __future__ import annotations

from typing import Any, Literal

from hyperhive.actors.bridge import call
from hyperhive.errors import Forbidden
from hyperhive.names import MANAGER, validate_name

__all__ = ["LIFECYCLE_TIMEOUT", "Verb", "lifecycle_action"]

Verb = Literal["start", "stop", "restart", "rebuild", "kill"]
# A first nixos start builds a whole system: minutes, not seconds. A local
# verb takes milliseconds; the bound only guards a verb that never ends.
LIFECYCLE_TIMEOUT = 900.0
_METHODS: dict[str, str] = {
    "start": "start_agent", "stop": "stop_agent", "restart": "restart_agent",
    "rebuild": "rebuild_agent", "kill": "kill_agent",
}


async def lifecycle_action(coordinator: Any, verb: Verb, name: str, by: str) -> dict[str, Any]:
    """Run ``verb`` on agent ``name`` for caller ``by``; returns the container snapshot.

    The manager may not act on itself (F13): it would cut off its own harness.
    """
    agent = validate_name(name)
    if by == MANAGER and agent == MANAGER:
        raise Forbidden(f"the manager cannot {verb} itself; ask the operator")
    method = getattr(coordinator, _METHODS[verb])
    if verb == "kill":
        return await call(method, agent, by, timeout=LIFECYCLE_TIMEOUT)  # type: ignore[no-any-return]
    return await call(method, agent, timeout=LIFECYCLE_TIMEOUT)  # type: ignore[no-any-return]
