"""Claude Code's ``--output-format stream-json`` lines → bus events (pure).

One line is one JSON object. The kinds we turn into events (verified against
CLI 2.1.197, see MACHINE-FACTS.md):

    system/init            → session id; an MCP server that failed → error
    system/status          → compacting / compact_result
    system/compact_boundary→ compacted {pre_tokens, post_tokens}
    system/api_retry       → retry {attempt, error_status}
    assistant              → text / thinking / tool_use, one per content block
    user (tool_result)     → tool_result {tool_use_id, content, is_error}
    result                 → result {subtype, is_error, usage, total_cost_usd, …}

Anything else (replayed user lines, hook chatter, future kinds) is ignored,
not an error: the CLI grows new line types often. A line that is not a JSON
object with a string ``type`` is malformed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_FIELD", "Event", "MalformedLine", "Parsed", "parse_line"]

MAX_FIELD = 8000  # longer text / tool results are cut: the event log is a tail, not an archive

Event = tuple[str, dict[str, Any]]


class MalformedLine(ValueError):
    """A stdout line that is not a stream-json object."""


@dataclass(frozen=True)
class Parsed:
    events: list[Event] = field(default_factory=list)
    session_id: str | None = None


def _cut(s: str) -> str:
    return s if len(s) <= MAX_FIELD else s[:MAX_FIELD] + f"… [{len(s) - MAX_FIELD} more chars]"


def _content_text(content: Any) -> str:
    """A tool result's content (a string or a list of blocks) as text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, dict):
                parts.append(f"[{block.get('type', 'block')}]")
        return "\n".join(parts)
    return "" if content is None else json.dumps(content)


def _assistant(msg: dict[str, Any]) -> list[Event]:
    out: list[Event] = []
    for block in msg.get("content") or []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            out.append(("text", {"text": _cut(str(block["text"]))}))
        elif kind == "thinking" and block.get("thinking"):
            out.append(("thinking", {"text": _cut(str(block["thinking"]))}))
        elif kind == "tool_use":
            out.append(("tool_use", {
                "id": block.get("id"), "name": block.get("name"), "input": block.get("input") or {},
            }))
    return out


def _user(msg: dict[str, Any]) -> list[Event]:
    content = msg.get("content")
    if not isinstance(content, list):
        return []  # a replayed prompt or a local command's output
    return [
        ("tool_result", {
            "tool_use_id": block.get("tool_use_id"),
            "content": _cut(_content_text(block.get("content"))),
            "is_error": bool(block.get("is_error")),
        })
        for block in content
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]


def _system(obj: dict[str, Any]) -> list[Event]:
    sub = obj.get("subtype")
    if sub == "init":
        failed = [(s.get("name"), s.get("status")) for s in obj.get("mcp_servers") or []
                  if isinstance(s, dict) and s.get("status") in ("failed", "needs-auth")]
        return [("error", {"error": f"MCP server {n}: {st}"}) for n, st in failed]
    if sub == "status":
        if obj.get("status") == "compacting":
            return [("compacting", {})]
        if obj.get("compact_result"):
            data = {"result": obj["compact_result"]}
            if obj.get("compact_error"):
                data["error"] = str(obj["compact_error"])
            return [("compact_result", data)]
        return []
    if sub == "compact_boundary":
        meta = obj.get("compact_metadata") or {}
        return [("compacted", {k: meta.get(k) for k in ("trigger", "pre_tokens", "post_tokens")})]
    if sub == "api_retry":
        return [("retry", {k: obj.get(k) for k in ("attempt", "max_retries", "error_status", "error")})]
    return []


_RESULT_KEYS = ("subtype", "is_error", "num_turns", "duration_ms", "total_cost_usd", "usage",
                "stop_reason", "api_error_status")


def _result(obj: dict[str, Any]) -> list[Event]:
    data = {k: obj.get(k) for k in _RESULT_KEYS if k in obj}
    if isinstance(obj.get("result"), str):
        data["result"] = _cut(obj["result"])
    denials = obj.get("permission_denials") or []
    if denials:
        data["permission_denials"] = [d.get("tool_name") for d in denials if isinstance(d, dict)]
    return [("result", data)]


def parse_line(line: str | bytes) -> Parsed:
    """One stdout line → its events and the session id it names, if any."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.strip()
    if not line:
        return Parsed()
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise MalformedLine(f"not JSON: {exc}: {line[:200]!r}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise MalformedLine(f"not a stream-json object: {line[:200]!r}")
    sid = obj.get("session_id") if isinstance(obj.get("session_id"), str) else None
    kind = obj["type"]
    msg: dict[str, Any] = obj["message"] if isinstance(obj.get("message"), dict) else {}
    if kind == "assistant":
        events = _assistant(msg)
    elif kind == "user":
        events = _user(msg)
    elif kind == "system":
        events = _system(obj)
    elif kind == "result":
        events = _result(obj)
    else:
        events = []
    return Parsed(events, sid)
