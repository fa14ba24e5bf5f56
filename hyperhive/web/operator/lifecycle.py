"""`lifecycle_action`: the one path every lifecycle verb takes, whichever
surface asked (CLI, dashboard, the manager's tools). The ContainerActor shows
the transient kind while the verb runs and kicks the agent after a start,
restart or rebuild (F6, F16). With a backend that places agents (issue 18), a
start, restart or rebuild first checks the agent's applied placement against
the cluster as it is now: refused with the reason, nothing started (else the
start would wait for a node that may never come, then fail with a timeout)."""

from __future__ import annotations

from typing import Any

import pykka

from hyperhive.actors.bridge import Handle
from hyperhive.actors.coordinator import Coordinator
from hyperhive.web.operator.checks import Verb, check_lifecycle, wire_snapshot
from hyperhive.web.operator.placement import check_applied_placement

__all__ = ["LIFECYCLE_TIMEOUT", "Verb", "lifecycle_action"]

# A first nixos start builds a whole system: minutes, not seconds. A local
# verb takes milliseconds; the bound only guards a verb that never ends.
LIFECYCLE_TIMEOUT = 900.0


_PLACED_VERBS = ("start", "restart", "rebuild")


async def lifecycle_action(coordinator: pykka.ActorProxy[Coordinator], verb: str, name: object,
                           by: str, *, backend: Any = None) -> dict[str, Any]:
    """Run ``verb`` on agent ``name`` for caller ``by``: ``{"container": snapshot}``."""
    agent = check_lifecycle(verb, name, by)
    if verb in _PLACED_VERBS:
        await check_applied_placement(backend, agent, verb)
    c = Handle(coordinator).within(LIFECYCLE_TIMEOUT)
    if verb == "start":
        snap = await c.ask(Coordinator.start_agent, agent)
    elif verb == "stop":
        snap = await c.ask(Coordinator.stop_agent, agent)
    elif verb == "restart":
        snap = await c.ask(Coordinator.restart_agent, agent)
    elif verb == "rebuild":
        snap = await c.ask(Coordinator.rebuild_agent, agent)
    else:
        snap = await c.ask(Coordinator.kill_agent, agent, by)
    return {"container": wire_snapshot(snap)}
