"""Ops of the operator's gate (F7–F13): the manager's requests on its own
socket, their refusal on every other agent's, and the operator's decisions
on the admin socket."""

from __future__ import annotations

import json
from typing import Any

from hyperhive.actors.bridge import call
from hyperhive.errors import Forbidden
from hyperhive.names import MANAGER, OPERATOR, validate_name, validate_recipient
from hyperhive.paths import AgentConfig
from hyperhive.web.lifecycle import LIFECYCLE_TIMEOUT, lifecycle_action
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
)

__all__ = ["MANAGER_OPS", "manager_ops", "operator_gate_ops", "refused_manager_ops", "spawn_config"]

MANAGER_OPS = ("ask_operator", "request_spawn", "request_apply_commit", "propose_config", "start", "restart", "kill")


def spawn_config(allowed_recipients: list[str] | None = None, driver: str | None = None) -> AgentConfig:
    """A new agent's config as every spawn surface asks for it (CLI, manager,
    dashboard form), checked by the same rules as agent.json."""
    raw: dict[str, Any] = {}
    if allowed_recipients is not None:
        raw["allowed_recipients"] = [validate_recipient(a) for a in allowed_recipients]
    if driver is not None:
        raw["driver"] = driver
    return AgentConfig.from_json(json.dumps(raw), where="the requested config")


def _request_spawn(approvals: Any, by: str) -> Op:
    async def run(req: RequestSpawn) -> dict[str, Any]:
        cfg = spawn_config(req.allowed_recipients, req.driver)
        return {"approval_id": await call(approvals.request_spawn, by, req.name, cfg, req.prompt)}
    return Op(run)


def manager_ops(coordinator: Any, questions: Any, approvals: Any) -> dict[str, Op]:
    async def ask_operator(req: AskOperator) -> dict[str, Any]:
        qid = await call(questions.ask, MANAGER, req.question, req.options, req.multi, req.ttl_seconds, req.default)
        return {"question_id": qid}

    async def request_apply_commit(req: RequestApplyCommit) -> dict[str, Any]:
        return {"approval_id": await call(approvals.request_apply_commit, MANAGER, req.agent, req.commit)}

    async def propose_config(req: ProposeConfig) -> dict[str, Any]:
        return dict(await call(approvals.propose_config, MANAGER, req.agent, req.message, req.prompt,
                               req.agent_json))

    def verb(name: str) -> Op:
        async def run(req: Start | Restart | Kill) -> dict[str, Any]:
            return {"container": await lifecycle_action(coordinator, name, req.name, MANAGER)}  # type: ignore[arg-type]
        return Op(run)

    return {
        "ask_operator": Op(ask_operator),
        "propose_config": Op(propose_config),
        "request_spawn": _request_spawn(approvals, MANAGER),
        "request_apply_commit": Op(request_apply_commit),
        "start": verb("start"), "restart": verb("restart"), "kill": verb("kill"),
    }


def refused_manager_ops() -> dict[str, Op]:
    """On an ordinary agent's socket: a clear refusal rather than "unknown op"."""
    def refuse(op: str) -> Op:
        async def run(req: Any) -> dict[str, Any]:
            raise Forbidden(f"{op} is the manager's ({MANAGER}) tool; this agent may not use it")
        return Op(run)
    return {op: refuse(op) for op in MANAGER_OPS}


def operator_gate_ops(coordinator: Any, questions: Any, approvals: Any) -> dict[str, Op]:
    async def list_questions(req: Questions) -> dict[str, Any]:
        return dict(await call(questions.list))

    async def answer(req: Answer) -> dict[str, Any]:
        return {"question": await call(questions.answer, req.question_id, req.chosen, req.text)}

    async def cancel_question(req: CancelQuestion) -> dict[str, Any]:
        return {"question": await call(questions.cancel, req.question_id)}

    async def list_approvals(req: Approvals) -> dict[str, Any]:
        return dict(await call(approvals.list))

    async def approve(req: Approve) -> dict[str, Any]:
        return {"approval": await call(approvals.approve, req.approval_id, timeout=LIFECYCLE_TIMEOUT)}

    async def deny(req: Deny) -> dict[str, Any]:
        return {"approval": await call(approvals.deny, req.approval_id, req.reason)}

    def verb(name: str) -> Op:
        async def run(req: Restart | Rebuild | Kill) -> dict[str, Any]:
            return {"container": await lifecycle_action(coordinator, name, req.name, OPERATOR)}  # type: ignore[arg-type]
        return Op(run)

    async def destroy(req: Destroy) -> dict[str, Any]:
        return {"container": await call(coordinator.destroy_agent, validate_name(req.name), req.purge,
                                        timeout=LIFECYCLE_TIMEOUT)}

    async def tombstones(req: Tombstones) -> dict[str, Any]:
        return {"tombstones": await call(coordinator.tombstones)}

    async def revive(req: Revive) -> dict[str, Any]:
        return {"approval_id": await call(approvals.request_revive, OPERATOR, req.name)}

    async def purge(req: Purge) -> dict[str, Any]:
        return dict(await call(coordinator.purge_tombstone, validate_name(req.name)))

    return {
        "destroy": Op(destroy), "tombstones": Op(tombstones), "revive": Op(revive), "purge": Op(purge),
        "questions": Op(list_questions), "answer": Op(answer), "cancel_question": Op(cancel_question),
        "approvals": Op(list_approvals), "approve": Op(approve), "deny": Op(deny),
        "request_spawn": _request_spawn(approvals, OPERATOR),
        "restart": verb("restart"), "rebuild": verb("rebuild"), "kill": verb("kill"),
    }
