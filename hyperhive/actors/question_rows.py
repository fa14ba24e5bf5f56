"""A question row as the listings show it (`question_view`), and a permission
question's ``detail`` column: the tool, what the operator is shown, the input
when small (issue 14)."""

from __future__ import annotations

import json
from typing import Any

from hyperhive.actors.permission_core import KIND, render
from hyperhive.actors.questions_core import options_of

__all__ = ["STORED_INPUT", "detail", "detail_json", "question_view", "shown"]


def question_view(q: Any) -> dict[str, Any]:
    view = {
        "id": q.id, "asker": q.asker, "question": q.question, "options": options_of(q.options),
        "multi": bool(q.multi), "asked_at": q.asked_at, "deadline_at": q.deadline_at,
        "default": q.default_answer, "answer": q.answer, "answered_at": q.answered_at, "how": q.how,
        "kind": q.kind or "question",
    }
    if q.kind == KIND:
        tool, _, use_id = detail(q)
        view["permission"] = {"tool_name": tool, "tool_use_id": use_id, "shown": shown(q)}
    return view


STORED_INPUT = 16 << 10  # a tool input up to this is kept whole with its question; a bigger one as shown


def detail_json(tool: str, inp: dict[str, Any], raw: str, tool_use_id: str) -> str:
    """What the row keeps: the tool, what the operator is shown (capped), and the
    input itself when small. The parked op holds the whole input in memory; the
    listings never parse a big one."""
    d: dict[str, Any] = {"tool_name": tool, "tool_use_id": tool_use_id, "shown": render(tool, inp)}
    if len(raw) <= STORED_INPUT:
        d["input"] = inp
    return json.dumps(d, ensure_ascii=False)


def detail(q: Any) -> tuple[str, dict[str, Any], str]:
    """A permission question's tool, stored input ({} when it was too big) and tool_use_id."""
    try:
        d = json.loads(q.detail or "{}")
    except ValueError:
        d = {}
    inp = d.get("input")
    return str(d.get("tool_name", "")), inp if isinstance(inp, dict) else {}, str(d.get("tool_use_id", ""))


def shown(q: Any) -> dict[str, Any]:
    try:
        d = json.loads(q.detail or "{}")
    except ValueError:
        d = {}
    value = d.get("shown")
    return value if isinstance(value, dict) else {"kind": "json", "text": ""}
