"""Ops of the operator's gate (F7–F13): the manager's requests on its own
socket, their refusal on every other agent's, and the operator's decisions
on the admin socket. Adapters over the operator service
(``hyperhive.web.operator``): the checks and reply shapes live there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hyperhive.actors.refs import ApprovalsRef, CoordinatorRef, QuestionsRef
from hyperhive.errors import Forbidden, Unavailable
from hyperhive.names import MANAGER, OPERATOR
from hyperhive.web.operator import agents, gate
from hyperhive.web.operator import usage as usage_service
from hyperhive.web.operator.checks import spawn_config
from hyperhive.web.operator.lifecycle import lifecycle_action
from hyperhive.web.operator.placement import wire_placement
from hyperhive.web.rpc.jsonlines import Op
from hyperhive.wire import (
    Answer,
    Approvals,
    Approve,
    AskOperator,
    CancelQuestion,
    Deny,
    Destroy,
    Kill,
    ProposeConfig,
    Purge,
    Questions,
    Rebuild,
    RequestApplyCommit,
    RequestSpawn,
    Restart,
    Revive,
    Start,
    Tombstones,
    Usage,
)

if TYPE_CHECKING:
    from hyperhive.costs import Costs

__all__ = ["MANAGER_OPS", "manager_ops", "operator_gate_ops", "refused_manager_ops", "spawn_config", "usage_op"]

MANAGER_OPS = ("ask_operator", "request_spawn", "request_apply_commit", "propose_config", "start", "restart", "kill",
               "usage")


def _request_spawn(approvals: ApprovalsRef, by: str, backend: Any) -> Op:
    async def run(req: RequestSpawn) -> dict[str, Any]:
        placement = wire_placement(req.cpus, req.memory_mb, req.resources)
        return await gate.request_spawn(approvals, by, req.name, req.allowed_recipients, req.driver, req.prompt,
                                        repo=req.repo, backend=backend, placement=placement)
    return Op(run)


def _verb(coordinator: CoordinatorRef, verb: str, by: str, backend: Any) -> Op:
    async def run(req: Start | Restart | Rebuild | Kill) -> dict[str, Any]:
        return await lifecycle_action(coordinator, verb, req.name, by, backend=backend)
    return Op(run)


def usage_op(costs: Costs | None) -> Op:
    """``usage{since}`` (issue 15): the operator's, and the manager's to read (it sets no budget)."""
    async def run(req: Usage) -> dict[str, Any]:
        if costs is None:
            raise Unavailable("this daemon counts no usage")
        return await usage_service.usage(costs, req.since)
    return Op(run)


def manager_ops(coordinator: CoordinatorRef, questions: QuestionsRef, approvals: ApprovalsRef,
                costs: Costs | None = None, backend: Any = None) -> dict[str, Op]:
    """m1nd's gate ops; ``backend`` checks the placements it asks for (issue 18)."""
    async def ask_operator(req: AskOperator) -> dict[str, Any]:
        return await gate.ask_operator(questions, MANAGER, req.question, req.options, req.multi, req.ttl_seconds,
                                       req.default)

    async def request_apply_commit(req: RequestApplyCommit) -> dict[str, Any]:
        return await gate.request_apply_commit(approvals, MANAGER, req.agent, req.commit, backend=backend)

    async def propose_config(req: ProposeConfig) -> dict[str, Any]:
        return await gate.propose_config(approvals, MANAGER, req.agent, req.message, req.prompt, req.agent_json,
                                         backend=backend)

    return {
        "ask_operator": Op(ask_operator),
        "propose_config": Op(propose_config),
        "request_spawn": _request_spawn(approvals, MANAGER, backend),
        "request_apply_commit": Op(request_apply_commit),
        "usage": usage_op(costs),
        **{verb: _verb(coordinator, verb, MANAGER, backend) for verb in ("start", "restart", "kill")},
    }


def refused_manager_ops() -> dict[str, Op]:
    """On an ordinary agent's socket: a clear refusal rather than "unknown op"."""
    def refuse(op: str) -> Op:
        async def run(req: Any) -> dict[str, Any]:
            raise Forbidden(f"{op} is the manager's ({MANAGER}) tool; this agent may not use it")
        return Op(run)
    return {op: refuse(op) for op in MANAGER_OPS}


def operator_gate_ops(coordinator: CoordinatorRef, questions: QuestionsRef, approvals: ApprovalsRef,
                      backend: Any = None) -> dict[str, Op]:
    async def list_questions(req: Questions) -> dict[str, Any]:
        return await gate.questions(questions)

    async def answer(req: Answer) -> dict[str, Any]:
        return await gate.answer(questions, req.question_id, req.chosen, req.text)

    async def cancel_question(req: CancelQuestion) -> dict[str, Any]:
        return await gate.cancel_question(questions, req.question_id)

    async def list_approvals(req: Approvals) -> dict[str, Any]:
        return await gate.approvals(approvals)

    async def approve(req: Approve) -> dict[str, Any]:
        return await gate.approve(approvals, req.approval_id, backend=backend)

    async def deny(req: Deny) -> dict[str, Any]:
        return await gate.deny(approvals, req.approval_id, req.reason)

    async def destroy(req: Destroy) -> dict[str, Any]:
        return await agents.destroy(coordinator, req.name, req.purge, req.force)

    async def tombstones(req: Tombstones) -> dict[str, Any]:
        return await agents.tombstones(coordinator)

    async def revive(req: Revive) -> dict[str, Any]:
        return await agents.revive(approvals, req.name, backend=backend)

    async def purge(req: Purge) -> dict[str, Any]:
        return await agents.purge(coordinator, req.name, req.force)

    return {
        "destroy": Op(destroy), "tombstones": Op(tombstones), "revive": Op(revive), "purge": Op(purge),
        "questions": Op(list_questions), "answer": Op(answer), "cancel_question": Op(cancel_question),
        "approvals": Op(list_approvals), "approve": Op(approve), "deny": Op(deny),
        "request_spawn": _request_spawn(approvals, OPERATOR, backend),
        **{verb: _verb(coordinator, verb, OPERATOR, backend) for verb in ("restart", "rebuild", "kill")},
    }
