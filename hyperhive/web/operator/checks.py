"""The operator service's checks, pure: every surface's input passes these
before any actor is told anything.

Each raises the error whose code the caller sees (``bad_request``,
``bad_name``, ``forbidden``, ``conflict``); the tables in
tests/web/test_operator_checks.py hold the cases.
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args

from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.errors import BadRequest, Conflict, Forbidden
from hyperhive.names import MANAGER, AgentName, validate_name, validate_recipient, validate_spawnable
from hyperhive.paths import AgentConfig
from hyperhive.wire import INT_MAX, check_text

__all__ = ["MAX_BODY", "VERBS", "Verb", "check_body", "check_destroyable", "check_id", "check_lifecycle",
           "check_limit", "check_prompt", "check_reason", "check_recipient", "check_spawnable", "check_text_field",
           "more_of", "spawn_config", "wire_snapshot"]

MAX_BODY = 64 * 1024  # characters of one operator message
Verb = Literal["start", "stop", "restart", "rebuild", "kill"]
VERBS: tuple[Verb, ...] = get_args(Verb)


def check_recipient(to: object) -> str:
    """An agent name or the operator (whether it exists is the Broker's to say)."""
    if isinstance(to, str):
        check_text(to, "the recipient")
    return validate_recipient(to)


def check_text_field(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string")
    check_text(value, what)
    return value


def check_body(body: object) -> str:
    """A message the operator sends: text, not blank, at most MAX_BODY characters."""
    text = check_text_field(body, "the message body")
    if not text.strip():
        raise BadRequest("the message is empty")
    if len(text) > MAX_BODY:
        raise BadRequest(f"the message is over {MAX_BODY} characters")
    return text


def check_id(raw: object, what: str = "id") -> int:
    """A question or approval id: a positive integer, or its digits (a URL segment)."""
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 19:
        value = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        raise BadRequest(f"not an {what}: {raw!r}")
    if not 1 <= value <= INT_MAX:
        raise BadRequest(f"not an {what}: {raw!r} (ids are positive 64-bit integers)")
    return value


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise BadRequest(f"limit must be >= 1, got {limit!r}")
    return limit


def check_reason(reason: object) -> str | None:
    """A denial's reason: optional; blank is none."""
    if reason is None:
        return None
    text = check_text_field(reason, "the reason").strip()
    return text or None


def check_prompt(prompt: object) -> str | None:
    """A requested agent's initial prompt: optional; blank is none (its length is
    the Approvals actor's rule, MAX_PROMPT)."""
    if prompt is None:
        return None
    text = check_text_field(prompt, "the prompt")
    return text if text.strip() else None


def spawn_config(allowed_recipients: list[str] | None = None, driver: str | None = None,
                 permissions: str | None = None, budget_usd: float | None = None,
                 budget_per: str | None = None) -> AgentConfig:
    """A new agent's config as every spawn surface asks for it (CLI, manager,
    dashboard form), checked by the same rules as agent.json."""
    raw: dict[str, Any] = {}
    if allowed_recipients is not None:
        raw["allowed_recipients"] = [check_recipient(a) for a in allowed_recipients]
    if driver is not None:
        raw["driver"] = driver
    if permissions is not None:
        raw["permissions"] = permissions
    if budget_usd is not None or budget_per is not None:
        raw["budget"] = {"usd": budget_usd, "per": budget_per or "day"}
    return AgentConfig.from_json(json.dumps(raw), where="the requested config")


def check_lifecycle(verb: str, name: object, by: str) -> AgentName:
    """The agent a lifecycle verb acts on. The manager may not act on itself
    (F13): it would cut off its own harness."""
    if verb not in VERBS:
        raise BadRequest(f"not a lifecycle verb: {verb!r}")
    agent = validate_name(name)
    if by == MANAGER and agent == MANAGER:
        raise Forbidden(f"the manager cannot {verb} itself; ask the operator")
    return agent


def check_destroyable(name: object) -> AgentName:
    agent = validate_name(name)
    if agent == MANAGER:
        raise Conflict("the manager cannot be destroyed; stop or restart it instead")
    return agent


def check_spawnable(name: object) -> AgentName:
    if isinstance(name, str):
        check_text(name, "the name")
    return validate_spawnable(name)


def more_of(total: int, shown: int) -> int:
    """How many rows a listing left out (never negative: a row may have come or
    gone between the list and the count)."""
    return max(0, total - shown)


def wire_snapshot(snap: ContainerSnapshot | dict[str, Any]) -> dict[str, Any]:
    """A container snapshot as the wire carries it, whichever form ``ls`` gave."""
    return snap.to_wire() if isinstance(snap, ContainerSnapshot) else snap
