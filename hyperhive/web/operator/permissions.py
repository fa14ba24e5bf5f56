"""Tool permissions (issue 14, item 3): an agent's CLI asking the operator
whether a tool call may run, the tools granted "from now on", and revoking one.

``permission`` is the agent socket's op (the agent named by its socket); it
parks until the question resolves (answer, cancel, expiry: the TTL is the
daemon's ``--permission-ttl-seconds``) and answers the CLI's
``{"behavior": "allow", "updatedInput": …}`` or ``{"behavior": "deny",
"message": …}``. ``grants`` and ``revoke_tool`` are operator verbs (and
``grants`` also the agent's own op: its harness passes them to the CLI).
"""

from __future__ import annotations

import json
from typing import Any

import pykka

from hyperhive.actors.bridge import Handle
from hyperhive.actors.permission_core import MAX_INPUT, check_tool_name
from hyperhive.actors.questions import Questions
from hyperhive.errors import BadRequest
from hyperhive.names import validate_name

__all__ = ["REPLY_SLACK", "grants", "permission", "revoke_tool"]

REPLY_SLACK = 10.0  # the parked op's reply may take this long past the question's TTL


async def permission(q: pykka.ActorProxy[Questions], agent: str, tool_name: object, input_json: object,
                     tool_use_id: object, ttl_seconds: float) -> dict[str, Any]:
    """Ask the operator about one tool call (or allow a granted tool at once):
    ``{"decision": {"behavior", …}, "question_id": id | None}``. ``input_json``:
    the tool's input object as JSON text (the wire has no object type)."""
    tool = check_tool_name(tool_name)
    if not isinstance(input_json, str) or len(input_json) > MAX_INPUT:
        raise BadRequest(f"input_json must be a JSON object of at most {MAX_INPUT} characters")
    try:
        tool_input = json.loads(input_json)
    except ValueError:
        tool_input = None
    if not isinstance(tool_input, dict):
        raise BadRequest("input_json must be the tool's input, a JSON object")
    if not isinstance(tool_use_id, str) or len(tool_use_id) > 200:
        raise BadRequest("tool_use_id must be a string of at most 200 characters")
    raw = json.dumps(tool_input, ensure_ascii=False)
    out = await Handle(q).within(ttl_seconds + REPLY_SLACK).ask(
        Questions.ask_permission, agent, tool, raw, tool_use_id, ttl_seconds)
    return out


async def grants(q: pykka.ActorProxy[Questions], name: object) -> dict[str, Any]:
    """The tools ``name`` was granted "from now on": ``{"agent", "tools"}``."""
    agent: str = validate_name(name)
    tools = await Handle(q).ask(Questions.grants_of, agent)
    return {"agent": agent, "tools": list(tools)}


async def revoke_tool(q: pykka.ActorProxy[Questions], name: object, tool: object) -> dict[str, Any]:
    """Take back a granted tool: its next call asks the operator again.
    ``{"agent", "tool", "revoked", "tools"}`` (``revoked`` false: it was not granted)."""
    agent: str = validate_name(name)
    out = await Handle(q).ask(Questions.revoke_tool, agent, check_tool_name(tool))
    return out
