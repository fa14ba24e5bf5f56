"""The ops of the admin socket (the CLI's). Whoever reaches it is the operator.

Each op is an adapter: the request dataclass (already decoded and type-checked
by ``wire``) in, the operator service's reply out (``hyperhive.web.operator``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hyperhive.actors.refs import ApprovalsRef, BrokerRef, CoordinatorRef, QuestionsRef
from hyperhive.errors import BadRequest, Unavailable
from hyperhive.names import OPERATOR
from hyperhive.paths import StatePaths
from hyperhive.web.operator import agents, messages, permissions
from hyperhive.web.operator.agents import observe_ls
from hyperhive.web.operator.lifecycle import lifecycle_action
from hyperhive.web.rpc.gate_ops import operator_gate_ops, usage_op
from hyperhive.web.rpc.jsonlines import Op
from hyperhive.web.tables.heartbeats import Heartbeats
from hyperhive.web.tables.sends import SendBatcher
from hyperhive.web.tables.turn_slots import TurnSlots
from hyperhive.wire import Grants, Inbox, Ls, Ping, Pull, RevokeTool, Send, Spawn, Start, Stop
from hyperhive.workspace_pulls import Pulls

if TYPE_CHECKING:
    from hyperhive.costs import Costs

__all__ = ["admin_ops", "observe_ls"]


def admin_ops(
    coordinator: CoordinatorRef, broker: BrokerRef, sends: SendBatcher, questions: QuestionsRef,
    approvals: ApprovalsRef,
    beats: Heartbeats | None = None, slots: TurnSlots | None = None, paths: StatePaths | None = None,
    backend: Any = None, pulls: Pulls | None = None, costs: Costs | None = None,
) -> dict[str, Op]:
    async def ls(req: Ls) -> dict[str, Any]:
        return await agents.ls(coordinator, broker, beats, slots.queued if slots else (), paths, backend,
                               costs.spend if costs is not None else None)

    async def spawn(req: Spawn) -> dict[str, Any]:
        return await agents.spawn(coordinator, req.name, req.allowed_recipients, req.repo, paths, req.permissions,
                                  req.budget_usd, req.budget_per, backend=backend,
                                  placement=(req.cpus, req.memory_mb, req.resources))

    async def pull(req: Pull) -> dict[str, Any]:
        if pulls is None:
            raise Unavailable("this daemon pulls no workspaces")
        return await agents.pull(pulls, req.name)

    async def start(req: Start) -> dict[str, Any]:
        return await lifecycle_action(coordinator, "start", req.name, OPERATOR, backend=backend)

    async def stop(req: Stop) -> dict[str, Any]:
        return await lifecycle_action(coordinator, "stop", req.name, OPERATOR)

    async def send(req: Send) -> dict[str, Any]:
        return await messages.send(sends, req.to, req.body, req.idempotency_key)

    async def inbox(req: Inbox) -> dict[str, Any]:
        return await messages.inbox(broker, req.limit)

    async def ping(req: Ping) -> dict[str, Any]:
        return {"agent": OPERATOR}

    # Tool permissions (issue 14): the tools an agent was granted "from now on", and taking one back.
    async def grants(req: Grants) -> dict[str, Any]:
        if req.name is None:
            raise BadRequest("grants on the admin socket needs the agent's name")
        return await permissions.grants(questions, req.name)

    async def revoke_tool(req: RevokeTool) -> dict[str, Any]:
        return await permissions.revoke_tool(questions, req.name, req.tool)

    return {
        "ls": Op(ls), "spawn": Op(spawn), "start": Op(start), "stop": Op(stop),
        "send": Op(send), "inbox": Op(inbox), "ping": Op(ping), "pull": Op(pull),
        "grants": Op(grants), "revoke_tool": Op(revoke_tool), "usage": usage_op(costs),
        **operator_gate_ops(coordinator, questions, approvals, backend),
    }
