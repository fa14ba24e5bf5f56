"""Where a new agent may run (issue 18): the spawn flags ``--cpus``,
``--memory-mb`` and ``--resources``, checked before anything is created.

With the ray backend the placement is checked against the cluster
(`RayBackend.check`: an unknown resource, or one no node could ever hold, is
refused) and written into the agent's agent.json. Any other backend refuses
spawn flags that ask for a placement: it runs every agent on this host, and an
operator who asked for a GPU should not believe one was reserved. (An
agent.json that carries a ``placement`` is still read by every backend and
ignored by those without placement: a config may move between hives.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from hyperhive.errors import BadRequest
from hyperhive.placement import Placement, parse_placement_flags

__all__ = ["check_spawn_placement"]


async def check_spawn_placement(backend: Any, cpus: str | None, memory_mb: str | None,
                                resources: str | None) -> Placement | None:
    """The placement the flags ask for, checked by ``backend`` (off the loop: it asks
    the cluster); None when they ask for none."""
    if cpus is None and memory_mb is None and resources is None:
        return None
    placement = parse_placement_flags(cpus, memory_mb, resources)
    check = getattr(backend, "check", None)
    if check is None:
        kind = getattr(backend, "kind", "this")
        raise BadRequest(f"--cpus, --memory-mb and --resources place an agent on a node of a Ray cluster: "
                         f"the {kind} backend runs every agent on this host (use hive serve --backend ray)")
    await asyncio.get_running_loop().run_in_executor(None, check, placement)
    return placement
