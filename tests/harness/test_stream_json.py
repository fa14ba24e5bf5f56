"""stream-json lines → bus events (the pure parser), with lines shaped like
the real CLI's (2.1.197)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hyperhive.harness.stream_json import MAX_FIELD, MalformedLine, parse_line

SID = "7a0e1579-1e93-447f-9e26-80742cf28f1e"


def line(**obj: Any) -> str:
    return json.dumps({"session_id": SID, **obj})


@pytest.mark.parametrize(
    ("raw", "events"),
    [
        (line(type="system", subtype="init", mcp_servers=[{"name": "hyperhive", "status": "connected"}]), []),
        (line(type="system", subtype="init", mcp_servers=[{"name": "hyperhive", "status": "failed"}]),
         [("error", {"error": "MCP server hyperhive: failed"})]),
        (line(type="system", subtype="init", mcp_servers=[{"name": "hyperhive", "status": "pending"}]), []),
        (line(type="assistant", message={"content": [{"type": "text", "text": "hello"}]}),
         [("text", {"text": "hello"})]),
        (line(type="assistant", message={"content": [{"type": "text", "text": ""}]}), []),
        (line(type="assistant", message={"content": [{"type": "thinking", "thinking": "hmm"}]}),
         [("thinking", {"text": "hmm"})]),
        (line(type="assistant", message={"content": [
            {"type": "tool_use", "id": "toolu_1", "name": "mcp__hyperhive__send", "input": {"to": "b", "body": "x"}},
        ]}), [("tool_use", {"id": "toolu_1", "name": "mcp__hyperhive__send", "input": {"to": "b", "body": "x"}})]),
        (line(type="user", message={"role": "user", "content": [
            {"tool_use_id": "toolu_1", "type": "tool_result", "content": [{"type": "text", "text": '{"sent": true}'}]},
        ]}), [("tool_result", {"tool_use_id": "toolu_1", "content": '{"sent": true}', "is_error": False})]),
        (line(type="user", message={"content": [
            {"tool_use_id": "t2", "type": "tool_result", "content": "denied", "is_error": True},
        ]}), [("tool_result", {"tool_use_id": "t2", "content": "denied", "is_error": True})]),
        (line(type="user", isReplay=True,
              message={"role": "user", "content": "<local-command-stdout>Compacted</local-command-stdout>"}), []),
        (line(type="system", subtype="status", status="compacting"), [("compacting", {})]),
        (line(type="system", subtype="status", status=None, compact_result="failed",
              compact_error="Not enough messages to compact."),
         [("compact_result", {"result": "failed", "error": "Not enough messages to compact."})]),
        (line(type="system", subtype="compact_boundary",
              compact_metadata={"trigger": "manual", "pre_tokens": 18, "post_tokens": 575, "other": 1}),
         [("compacted", {"trigger": "manual", "pre_tokens": 18, "post_tokens": 575})]),
        (line(type="system", subtype="api_retry", attempt=1, max_retries=10, error_status=500, error="server_error",
              retry_delay_ms=523.4),
         [("retry", {"attempt": 1, "max_retries": 10, "error_status": 500, "error": "server_error"})]),
        (line(type="system", subtype="hook_started"), []),
        (line(type="stream_event", event={}), []),
    ],
    ids=["init", "mcp-failed", "mcp-pending", "text", "empty-text", "thinking", "tool-use", "tool-result", "tool-error",
         "replayed-user", "compacting", "compact-failed", "compact-boundary", "api-retry", "unknown-system",
         "unknown-type"],
)
def test_lines_to_events(raw: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    parsed = parse_line(raw)
    assert parsed.events == events
    assert parsed.session_id == SID


def test_result_keeps_usage_cost_and_denials() -> None:
    raw = line(type="result", subtype="success", is_error=False, num_turns=3, duration_ms=179, result="done",
               stop_reason="end_turn", total_cost_usd=0.00069, usage={"input_tokens": 33, "output_tokens": 21},
               permission_denials=[{"tool_name": "Bash", "tool_use_id": "t", "tool_input": {}}], uuid="u")
    [(kind, data)] = parse_line(raw).events
    assert kind == "result"
    assert data == {
        "subtype": "success", "is_error": False, "num_turns": 3, "duration_ms": 179, "total_cost_usd": 0.00069,
        "usage": {"input_tokens": 33, "output_tokens": 21}, "stop_reason": "end_turn", "result": "done",
        "permission_denials": ["Bash"],
    }


def test_long_text_is_cut() -> None:
    [(_, data)] = parse_line(line(type="assistant", message={"content": [{"type": "text", "text": "x" * 9000}]})).events
    assert data["text"].startswith("x" * MAX_FIELD) and data["text"].endswith("[1000 more chars]")


def test_blank_line_is_nothing() -> None:
    assert parse_line(b"\n").events == [] and parse_line("").session_id is None


@pytest.mark.parametrize(
    "raw",
    ['{"type": "assistant", oops', "not json at all", "[1, 2]", '"text"', "{}", '{"type": 3}', "null"],
    ids=["truncated", "prose", "list", "string", "no-type", "int-type", "null"],
)
def test_malformed(raw: str) -> None:
    with pytest.raises(MalformedLine):
        parse_line(raw)
