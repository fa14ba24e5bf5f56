"""The operator's gate (F7–F13): questions and their answers, approvals and
their decisions, spawn requests; and the manager's own requests (ask the
operator, request a spawn, a config commit, propose a config)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pykka

from hyperhive.actors.approvals import Approvals
from hyperhive.actors.bridge import Handle
from hyperhive.actors.questions import Questions
from hyperhive.names import validate_name
from hyperhive.paths import AgentConfig
from hyperhive.placement import Placement
from hyperhive.web.operator import counts
from hyperhive.web.operator.checks import (
    check_id,
    check_prompt,
    check_reason,
    check_spawnable,
    check_text_field,
    more_of,
    spawn_config,
)
from hyperhive.web.operator.lifecycle import LIFECYCLE_TIMEOUT
from hyperhive.web.operator.placement import check_approved_placement, check_config_placement, check_placement_on
from hyperhive.workspace import with_repo

__all__ = ["answer", "approvals", "approve", "ask_operator", "cancel_question", "deny", "propose_config",
           "questions", "request_apply_commit", "request_spawn"]

APPROVE_TIMEOUT = LIFECYCLE_TIMEOUT  # an approval spawns or rebuilds a container


# --- questions --------------------------------------------------------------

async def questions(q: pykka.ActorProxy[Questions]) -> dict[str, Any]:
    """Every pending question and the latest resolved: ``{"pending", "resolved",
    "more"}``, ``more`` counting the resolved ones left out."""
    lists = await Handle(q).ask(Questions.list)
    lists.pop("grants", None)  # the dashboard's (granted tools); `operator.permissions.grants` for one agent
    return {**lists, "more": more_of(await counts.resolved_questions(), len(lists["resolved"]))}


async def answer(q: pykka.ActorProxy[Questions], question_id: object, chosen: list[str],
                 text: str) -> dict[str, Any]:
    """F8: the checked options and the free text, merged by the Questions actor."""
    qid = check_id(question_id, "question id")
    picked = [check_text_field(c, "a chosen option") for c in chosen]
    return {"question": await Handle(q).ask(Questions.answer, qid, picked, check_text_field(text, "the answer"))}


async def cancel_question(q: pykka.ActorProxy[Questions], question_id: object) -> dict[str, Any]:
    return {"question": await Handle(q).ask(Questions.cancel, check_id(question_id, "question id"))}


async def ask_operator(q: pykka.ActorProxy[Questions], by: str, question: str, options: list[str],
                       multi: bool = False, ttl_seconds: float | None = None,
                       default: str | None = None) -> dict[str, Any]:
    """The manager's question (its rules: questions_core.validate_ask): ``{"question_id"}`` at once."""
    return {"question_id": await Handle(q).ask(Questions.ask, by, question, options, multi, ttl_seconds, default)}


# --- approvals --------------------------------------------------------------

async def approvals(a: pykka.ActorProxy[Approvals]) -> dict[str, Any]:
    """Every pending approval and the latest decided: ``{"pending", "decided",
    "more"}``, ``more`` counting the decided ones left out."""
    lists = await Handle(a).ask(Approvals.list)
    return {**lists, "more": more_of(await counts.decided_approvals(), len(lists["decided"]))}


async def approve(a: pykka.ActorProxy[Approvals], approval_id: object, *, backend: Any = None) -> dict[str, Any]:
    """Carry out a pending approval: ``{"approval"}`` once its work is done. With a
    backend that places agents (issue 18), the placement that work would run with
    (the spawn's config, a revive's kept agent.json, the applied commit's) is
    checked against the cluster again first: refused, nothing is made and the
    approval stays pending (`check_approved_placement`)."""
    aid = check_id(approval_id, "approval id")
    if getattr(backend, "check", None) is not None:
        where, config = await Handle(a).ask(Approvals.approval_config, aid)
        await check_approved_placement(backend, config, where)
    return {"approval": await Handle(a).within(APPROVE_TIMEOUT).ask(Approvals.approve, aid)}


async def deny(a: pykka.ActorProxy[Approvals], approval_id: object, reason: object = None) -> dict[str, Any]:
    aid = check_id(approval_id, "approval id")
    return {"approval": await Handle(a).ask(Approvals.deny, aid, check_reason(reason))}


async def request_spawn(a: pykka.ActorProxy[Approvals], by: str, name: object,
                        allowed_recipients: list[str] | None = None, driver: str | None = None,
                        prompt: object = None, repo: object = None, *, backend: Any = None,
                        placement: Placement | None = None) -> dict[str, Any]:
    """Queue a spawn for the operator's approval: ``{"approval_id"}``. A
    ``repo`` is shown in the approval's config; whether it is a work tree is
    checked when the approved spawn runs, before anything is made. A
    ``placement`` (issue 18) is checked by ``backend`` now, before anything is
    queued, and is part of the config the operator approves."""
    agent = check_spawnable(name)
    cfg = with_repo(spawn_config(allowed_recipients, driver), repo)
    text = check_prompt(prompt)
    placed = await check_placement_on(backend, placement)
    if placed is not None:
        cfg = dataclasses.replace(cfg, placement=placed)
    return {"approval_id": await Handle(a).ask(Approvals.request_spawn, by, agent, cfg, text)}


async def request_apply_commit(a: pykka.ActorProxy[Approvals], by: str, agent: object,
                               commit: str, *, backend: Any = None) -> dict[str, Any]:
    """Queue a commit of the agent's config repo for apply; with a backend that
    places agents, a placement in its agent.json is checked first (issue 18)."""
    name = validate_name(agent)
    wanted = check_text_field(commit, "the commit")
    if getattr(backend, "check", None) is not None:
        full, cfg = await Handle(a).ask(Approvals.commit_config, name, wanted)
        await check_config_placement(backend, cfg, f"agent.json in {full[:12]}")
        wanted = full
    return {"approval_id": await Handle(a).ask(Approvals.request_apply_commit, by, name, wanted)}


async def propose_config(a: pykka.ActorProxy[Approvals], by: str, agent: object, message: str,
                         prompt: str | None = None, agent_json: str | None = None, *,
                         backend: Any = None) -> dict[str, Any]:
    """Commit a new prompt and/or agent.json and queue its apply: ``{"commit", "approval_id"}``.
    With a backend that places agents, the new agent.json's placement is checked
    against its cluster first: refused, nothing is committed (issue 18)."""
    name = validate_name(agent)
    if agent_json is not None and getattr(backend, "check", None) is not None:
        await check_config_placement(backend, AgentConfig.from_json(agent_json, where="agent_json"), "agent_json")
    out = await Handle(a).ask(Approvals.propose_config, by, name, message, prompt, agent_json)
    return dict(out)
