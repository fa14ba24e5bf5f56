"""Where a new agent may run (issue 18), checked before anything is created or queued.

Every path that puts a placement into an agent.json goes through here:

- ``hive spawn --cpus/--memory-mb/--resources`` (the flags as typed:
  `check_spawn_placement`);
- a spawn request (``request_spawn``: the manager's MCP tool and its socket,
  ``hive request-spawn``, the dashboard's form): its ``cpus``, ``memory_mb``,
  ``resources`` (`wire_placement` for JSON, `form_placement` for the form's
  text), checked at request time by `check_placement_on`; what is approved is
  the config shown, placement included;
- a config proposed or queued for apply (``propose_config``,
  ``request_apply_commit``) whose agent.json carries a placement
  (`check_config_placement`);
- a revive (``revive``): the kept agent.json it would run with.

Hours may pass between a request and its approval, and the cluster may lose
the nodes that offered a resource: so ``approve`` checks the placement the
approved work would run with once more, against the cluster as it is then
(`check_approved_placement`). Refused, nothing is made and the approval stays
pending: the operator sees why (the reply, the dashboard's toast), and may
approve it again once the cluster can hold it, or deny it (which tells the manager).

With the ray backend the placement is checked against the cluster
(`RayBackend.check`: an unknown resource, or one no node could ever hold, is
refused). Any other backend refuses a spawn that asks for a placement: it runs
every agent on this host, and an operator who asked for a GPU should not
believe one was reserved. (An agent.json that carries a ``placement`` is still
accepted and ignored by those without placement: a config may move between
hives; `check_config_placement` checks it only where there is a cluster.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from hyperhive.errors import BadRequest
from hyperhive.paths import AgentConfig
from hyperhive.placement import Placement, parse_placement_flags, parse_placement_json

__all__ = ["check_applied_placement", "check_approved_placement", "check_config_placement", "check_placement_on",
           "check_spawn_placement", "form_placement", "wire_placement"]

STILL_PENDING = ("nothing was made and the approval stays pending: approve it again once the cluster "
                 "can hold it, or deny it")


async def check_spawn_placement(backend: Any, cpus: str | None, memory_mb: str | None,
                                resources: str | None) -> Placement | None:
    """The placement the flags ask for, checked by ``backend`` (off the loop: it asks
    the cluster); None when they ask for none."""
    if cpus is None and memory_mb is None and resources is None:
        return None
    return await check_placement_on(backend, parse_placement_flags(cpus, memory_mb, resources),
                                    "--cpus, --memory-mb and --resources place")


def wire_placement(cpus: float | None, memory_mb: int | None,
                   resources: dict[str, Any] | None) -> Placement | None:
    """A request's ``cpus``, ``memory_mb``, ``resources`` (an object name → number,
    as agent.json has it) as one placement; None when it asks for none."""
    raw = {k: v for k, v in (("cpus", cpus), ("memory_mb", memory_mb), ("resources", resources)) if v is not None}
    if not raw:
        return None
    placement = parse_placement_json(raw, where="the spawn request")
    return None if placement.empty else placement


def form_placement(cpus: str, memory_mb: str, resources: str) -> Placement | None:
    """The dashboard's spawn form: the three fields as typed, as the spawn flags
    (an empty field: not given)."""
    c, m, r = (v.strip() or None for v in (cpus, memory_mb, resources))
    if c is None and m is None and r is None:
        return None
    return parse_placement_flags(c, m, r)


async def check_placement_on(backend: Any, placement: Placement | None,
                             what: str = "a placement (cpus, memory_mb, resources) puts") -> Placement | None:
    """Refuse ``placement`` unless ``backend`` places agents and its cluster can hold
    it (asked off the loop); None passes. ``what``: how the refusal names what was asked."""
    if placement is None:
        return None
    check = getattr(backend, "check", None)
    if check is None:
        kind = getattr(backend, "kind", "this")
        raise BadRequest(f"{what} an agent on a node of a Ray cluster: "
                         f"the {kind} backend runs every agent on this host (use hive serve --backend ray)")
    await asyncio.get_running_loop().run_in_executor(None, check, placement)
    return placement


async def check_config_placement(backend: Any, config: AgentConfig | None, where: str) -> None:
    """A proposed agent.json's placement, checked by a backend that places agents
    (refused with ``where`` named); accepted as it is by one that does not."""
    placement = None if config is None else config.placement
    if placement is None or placement.empty or getattr(backend, "check", None) is None:
        return
    try:
        await check_placement_on(backend, placement)
    except BadRequest as exc:
        raise BadRequest(f"{where}: placement {placement.describe()}: {exc.message}") from None


async def check_approved_placement(backend: Any, config: AgentConfig | None, where: str) -> None:
    """At approval: ``config``'s placement checked again, against the cluster as it
    is now (refused with ``where`` named and the approval's fate); as
    `check_config_placement`, accepted as it is by a backend that places nothing."""
    try:
        await check_config_placement(backend, config, where)
    except BadRequest as exc:
        raise BadRequest(f"{exc.message}; {STILL_PENDING}") from None


async def check_applied_placement(backend: Any, agent: str, verb: str) -> None:
    """Before the operator's or m1nd's start, restart or rebuild: the agent's applied
    placement (``backend.applied_placement``, read off the loop), checked against the
    cluster as it is now; a backend that places nothing has none to check."""
    applied = getattr(backend, "applied_placement", None)
    if applied is None or getattr(backend, "check", None) is None:
        return
    placement = await asyncio.get_running_loop().run_in_executor(None, applied, agent)
    await check_config_placement(backend, AgentConfig(placement=placement),
                                 f"{agent}'s agent.json ({verb}: nothing was started)")
