"""Pure rules of tool permission questions (issue 14, item 3).

In ``"permissions": "ask"`` mode the Claude Code CLI asks `hive mcp`'s
``permission`` tool before a tool call it may not run by itself; the daemon
turns that into an operator question (``kind`` "permission") with three
options, and its resolution into the CLI's answer:

- ``allow``: ``{"behavior": "allow", "updatedInput": <the input>}``;
- ``allow <tool> from now on``: the same, and the tool is granted to the agent
  (`Questions` keeps the grants; a granted tool is allowed with no question);
- ``deny``, free text only, a cancel, an expiry (the default is ``deny``):
  ``{"behavior": "deny", "message": …}``, the operator's text as the reason.

The question names the agent and shows what the call would do: a Bash command,
an Edit as a diff, a Write's file and content, any other tool's input as JSON.
`render` is the same for the dashboard (a command in monospace, a diff).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

from hyperhive.actors.questions_core import MAX_QUESTION
from hyperhive.errors import BadRequest

__all__ = [
    "ALLOW",
    "DENY",
    "KIND",
    "behavior",
    "check_tool_name",
    "forever_option",
    "options_for",
    "question_text",
    "render",
]

KIND = "permission"
ALLOW = "allow"
DENY = "deny"
MAX_INPUT = 1 << 20  # a tool input's JSON, as the daemon keeps it with the question
MAX_SHOWN = 6000  # of a command, a diff or a content in the question text
# A Claude Code tool name (Bash, Edit, mcp__server__tool): also a valid --allowedTools rule.
_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_EDITS = ("Edit", "MultiEdit")


def check_tool_name(name: object) -> str:
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise BadRequest("tool_name must be a tool's name (letters, digits, _; at most 128)")
    return name


def forever_option(tool: str) -> str:
    return f"allow {tool} from now on"


def options_for(tool: str) -> list[str]:
    return [ALLOW, forever_option(tool), DENY]


def _cut(text: str, limit: int = MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _str(inp: Mapping[str, Any], key: str) -> str:
    v = inp.get(key)
    return v if isinstance(v, str) else ""


def _diff(path: str, old: str, new: str) -> list[str]:
    return list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"a{path}" if path.startswith("/")
                                     else f"a/{path}", f"b{path}" if path.startswith("/") else f"b/{path}",
                                     lineterm="", n=2))


def render(tool: str, inp: Mapping[str, Any]) -> dict[str, Any]:
    """What the call would do, for a person: ``{"kind": "command"|"diff"|"content"|"json", …}``."""
    if tool == "Bash" and _str(inp, "command"):
        return {"kind": "command", "text": _cut(_str(inp, "command")),
                "description": _cut(_str(inp, "description"), 500)}
    if tool in _EDITS and _str(inp, "file_path"):
        path = _str(inp, "file_path")
        edits = inp.get("edits") if tool == "MultiEdit" else [inp]
        lines: list[str] = []
        for e in edits if isinstance(edits, list) else []:
            if isinstance(e, Mapping):
                lines += _diff(path, _str(e, "old_string"), _str(e, "new_string"))
        return {"kind": "diff", "file": path, "text": _cut("\n".join(lines))}
    if tool == "Write" and _str(inp, "file_path"):
        return {"kind": "content", "file": _str(inp, "file_path"), "text": _cut(_str(inp, "content"))}
    return {"kind": "json", "text": _cut(json.dumps(dict(inp), indent=2, ensure_ascii=False, sort_keys=True))}


def question_text(agent: str, tool: str, inp: Mapping[str, Any]) -> str:
    """The operator's question: who wants to run what, with what it would do."""
    shown = render(tool, inp)
    if shown["kind"] == "command":
        head = f"`{agent}` wants to run Bash: `{shown['text']}`"
        text = head + (f"\n({shown['description']})" if shown["description"] else "")
    elif shown["kind"] == "diff":
        text = f"`{agent}` wants to edit {shown['file']} ({tool}):\n{shown['text']}"
    elif shown["kind"] == "content":
        text = f"`{agent}` wants to write {shown['file']} (Write):\n{shown['text']}"
    else:
        text = f"`{agent}` wants to use {tool}:\n{shown['text']}"
    return _cut(text, MAX_QUESTION)


def _reason(answer: str, option: str) -> str:
    rest = answer[len(option):]
    return rest[2:].strip() if rest.startswith(", ") else ""


def behavior(tool: str, inp: Mapping[str, Any], answer: str, how: str) -> tuple[dict[str, Any], bool]:
    """The CLI's answer for a resolved question, and whether the tool is now granted.

    ``answer`` is what `questions_core.merge_answer` made of the operator's
    choice and text (``"deny, too risky"``); an expiry answers the default ``deny``.
    """
    if how == "answered":
        for option, grant in ((forever_option(tool), True), (ALLOW, False)):
            if answer == option or answer.startswith(option + ", "):
                return {"behavior": "allow", "updatedInput": dict(inp)}, grant
        reason = _reason(answer, DENY) if answer == DENY or answer.startswith(DENY + ", ") else answer.strip()
        message = f"the operator denied this {tool} call" + (f": {reason}" if reason else "")
    elif how == "expired":
        message = f"the operator did not answer in time; this {tool} call is denied"
    else:
        message = f"the question about this {tool} call was cancelled; it is denied"
    return {"behavior": "deny", "message": message}, False
