"""Usage out of Anthropic responses, streamed (any chunking) or JSON (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hyperhive.sandbox.sse_usage import MAX_LINE, UsageScanner, usage_from_json, usage_from_sse


def sse(event: str, data: dict[str, Any], sep: str = "\n") -> bytes:
    return f"event: {event}{sep}data: {json.dumps(data)}{sep}{sep}".encode()


def stream(sep: str = "\n", delta_usage: dict[str, Any] | None = None) -> bytes:
    return b"".join([
        sse("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "model": "claude-x", "usage": {
                "input_tokens": 120, "cache_read_input_tokens": 4000, "cache_creation_input_tokens": 30,
                "output_tokens": 1}}}, sep),
        f": a comment{sep}".encode(),
        sse("ping", {"type": "ping"}, sep),
        sse("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "text", "text": ""}}, sep),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": 'say "usage": 99'}}, sep),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}, sep),
        sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                              "usage": delta_usage or {"output_tokens": 57}}, sep),
        sse("message_stop", {"type": "message_stop"}, sep),
    ])


EXPECTED = {"model": "claude-x", "input_tokens": 120, "output_tokens": 57,
            "cache_read_input_tokens": 4000, "cache_creation_input_tokens": 30}


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000, 1 << 20])
def test_any_chunking_gives_the_same_usage(size: int) -> None:
    body = stream()
    assert usage_from_sse(body[i:i + size] for i in range(0, len(body), size)) == EXPECTED


def test_crlf_line_endings() -> None:
    body = stream("\r\n")
    assert usage_from_sse(body[i:i + 5] for i in range(0, len(body), 5)) == EXPECTED


def test_message_delta_may_repeat_the_input_side() -> None:
    body = stream(delta_usage={"input_tokens": 121, "output_tokens": 60, "cache_read_input_tokens": None})
    assert usage_from_sse([body]) == {**EXPECTED, "input_tokens": 121, "output_tokens": 60}


def test_the_last_message_delta_wins() -> None:
    body = stream() + sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 80}})
    assert usage_from_sse([body])["output_tokens"] == 80  # type: ignore[index]


def test_no_usage_is_none() -> None:
    assert usage_from_sse([]) is None
    assert usage_from_sse([b"event: ping\ndata: {}\n\n", b"garbage\n\n", b"data: [1, 2]\n\n"]) is None
    assert usage_from_sse([b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error"}}\n\n']) is None


def test_bad_json_and_bad_values_are_skipped() -> None:
    body = (b'data: {"type":"message_start","usage": nope\n\n'
            + sse("message_start", {"type": "message_start", "message": {
                "model": 5, "usage": {"input_tokens": "12", "output_tokens": True, "cache_read_input_tokens": -1}}})
            + sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 3}}))
    assert usage_from_sse([body]) == {"model": None, "input_tokens": 0, "output_tokens": 3,
                                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}


def test_a_stream_cut_before_its_last_blank_line_still_counts() -> None:
    body = stream()
    cut = body[: body.rindex(b"event: message_stop")].rstrip(b"\n")  # ends right after the delta's data line
    assert usage_from_sse([cut]) == EXPECTED


def test_multi_line_data_is_joined() -> None:
    body = (b'event: message_delta\ndata: {"type": "message_delta",\ndata:  "usage": {"output_tokens": 9}}\n\n')
    assert usage_from_sse([body])["output_tokens"] == 9  # type: ignore[index]


def test_an_oversized_line_is_skipped_and_memory_stays_bounded() -> None:
    scanner = UsageScanner()
    scanner.feed(stream()[:-len(b"event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n")])
    huge = b"data: " + b"x" * (MAX_LINE // 8)
    scanner.feed(b'event: content_block_delta\n')
    for _ in range(24):  # 3 MiB in one line, in pieces
        scanner.feed(huge)
        assert len(scanner._partial) <= MAX_LINE
    scanner.feed(b"\n\n")
    scanner.feed(sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 99}}))
    assert scanner.result() == {**EXPECTED, "output_tokens": 99}


def test_an_oversized_event_of_many_lines_is_skipped() -> None:
    scanner = UsageScanner()
    line = b"data: " + b"y" * (MAX_LINE // 4) + b"\n"
    scanner.feed(b"event: message_delta\n" + line * 6 + b'data: "usage"\n\n')
    assert scanner._data == [] and scanner.result() is None


def test_usage_from_json() -> None:
    body = json.dumps({"id": "m", "type": "message", "model": "claude-y", "content": [],
                       "usage": {"input_tokens": 5, "output_tokens": 6, "cache_creation_input_tokens": 7}}).encode()
    assert usage_from_json(body) == {"model": "claude-y", "input_tokens": 5, "output_tokens": 6,
                                     "cache_read_input_tokens": 0, "cache_creation_input_tokens": 7}


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"usage": 1}', b'{"usage": {}}',
                                  b'{"type": "error", "error": {"type": "api_error"}}', b"\xff\xfe"])
def test_usage_from_json_without_usage(body: bytes) -> None:
    assert usage_from_json(body) is None
