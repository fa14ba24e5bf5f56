"""Token usage out of an Anthropic Messages response (pure).

The gateway sees every model response pass through and reports what it cost.
A streamed response (SSE) carries it in two places: ``message_start`` has the
model and the input side (``input_tokens``, ``cache_read_input_tokens``,
``cache_creation_input_tokens``, an early ``output_tokens``), and each
``message_delta`` has the cumulative ``output_tokens`` (and may repeat the
input fields, and has the ``server_tool_use`` counts); the last value seen
wins. A plain JSON response has a ``usage`` object beside ``model``. Of the
nested figures, the hour-long cache writes and the web searches are kept
(flat: `pricing.CACHE_1H_KEY`, `pricing.SEARCHES_KEY`): the API bills them.

`UsageScanner` takes the stream in whatever chunks the network gives, keeps
at most one event (≤ 1 MiB) in memory, and JSON-decodes only the events that
can carry usage: the text deltas in between are never parsed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from hyperhive.pricing import CACHE_1H_KEY, SEARCHES_KEY

__all__ = ["JSON_KEEP", "JSON_LIMIT", "MAX_LINE", "JsonUsage", "UsageScanner", "usage_from_json", "usage_from_sse"]

MAX_LINE = 1 << 20
JSON_LIMIT = 8 << 20  # a non-streamed answer is kept whole for its usage up to this
JSON_KEEP = 64 << 10  # past it, this much of its head (the model) and of its tail (the usage)

_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


# Figures nested in the usage the API bills by (`pricing.cost_usd`): (object, key) → the flat key kept.
_NESTED = {("cache_creation", "ephemeral_1h_input_tokens"): CACHE_1H_KEY,
           ("server_tool_use", "web_search_requests"): SEARCHES_KEY}


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _merge(into: dict[str, Any], usage: object) -> bool:
    if not isinstance(usage, dict):
        return False
    seen = False
    for k in _FIELDS:
        v = usage.get(k)
        if _count(v):
            into[k] = v
            seen = True
    for (outer, inner), key in _NESTED.items():
        part = usage.get(outer)
        if isinstance(part, dict) and _count(v := part.get(inner)):
            into[key] = v
            seen = True
    return seen


def _empty() -> dict[str, Any]:
    return {"model": None, **dict.fromkeys(_FIELDS, 0)}  # the nested figures only when the API gave them


class UsageScanner:
    """Feed it the response body as it streams; `result` at the end."""

    def __init__(self) -> None:
        self._partial = bytearray()
        self._skipping = False  # inside a line over MAX_LINE: dropped up to its newline
        self._data: list[bytes] = []  # the current event's data lines
        self._data_size = 0
        self._usage = _empty()
        self._seen = False
        self.updates = 0  # usage events merged so far (the gateway checks the hard cap on each)

    def feed(self, data: bytes) -> None:
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            piece = data[start:nl]
            start = nl + 1
            if self._skipping:
                self._skipping = False
                self._partial.clear()
                continue
            if self._partial:
                self._partial += piece
                line = bytes(self._partial)
                self._partial.clear()
            else:
                line = piece
            self._line(line[:-1] if line.endswith(b"\r") else line)
        tail = data[start:]
        if self._skipping or not tail:
            return
        if len(self._partial) + len(tail) > MAX_LINE:
            self._skipping = True
            self._partial.clear()
        else:
            self._partial += tail

    def _line(self, line: bytes) -> None:
        if not line:
            self._dispatch()
        elif line.startswith(b"data:"):
            value = line[5:]
            if value.startswith(b" "):
                value = value[1:]
            self._data_size += len(value) + 1
            if self._data_size > MAX_LINE:
                self._data.clear()  # an oversized event: skip it whole
            else:
                self._data.append(value)
        # "event:", "id:", "retry:" and comments: the data's own "type" says enough

    def _dispatch(self) -> None:
        data, self._data, oversized = self._data, [], self._data_size > MAX_LINE
        self._data_size = 0
        if oversized or not data:
            return
        payload = b"\n".join(data)
        if b'"usage"' not in payload:
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        if obj.get("type") == "message_start" and isinstance(obj.get("message"), dict):
            msg = obj["message"]
            if isinstance(msg.get("model"), str):
                self._usage["model"] = msg["model"]
            merged = _merge(self._usage, msg.get("usage"))
        elif obj.get("type") == "message_delta":
            merged = _merge(self._usage, obj.get("usage"))
        else:
            return
        self._seen |= merged
        self.updates += merged

    def so_far(self) -> dict[str, Any]:
        """The usage the events seen so far carried (the stream goes on)."""
        return dict(self._usage)

    def result(self) -> dict[str, Any] | None:
        """``{model, input_tokens, output_tokens, cache_read_input_tokens,
        cache_creation_input_tokens}`` (absent counts as 0), or None if the
        stream carried no usage at all."""
        if self._partial and not self._skipping:
            # A stream cut off without its final blank line: its last event still counts.
            line, self._partial = bytes(self._partial), bytearray()
            self._line(line.rstrip(b"\r"))
        if self._data:
            self._dispatch()
        return dict(self._usage) if self._seen else None


def usage_from_sse(chunks: Iterable[bytes]) -> dict[str, Any] | None:
    scanner = UsageScanner()
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner.result()


def usage_from_json(body: bytes) -> dict[str, Any] | None:
    """The usage of a non-streamed response (``{"model", "usage": {...}}``), or None."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    usage = _empty()
    if not _merge(usage, obj.get("usage")):
        return None
    if isinstance(obj.get("model"), str):
        usage["model"] = obj["model"]
    return usage


class JsonUsage:
    """A non-streamed answer fed as it arrives: kept whole up to JSON_LIMIT, past it only
    its ends (the Messages API writes ``model`` before ``content`` and ``usage`` after it)."""

    def __init__(self, limit: int = JSON_LIMIT, keep: int = JSON_KEEP) -> None:
        self._limit, self._keep = limit, keep
        self._body = bytearray()
        self._head: bytes | None = None
        self._tail = bytearray()

    def feed(self, data: bytes) -> None:
        if self._head is None:
            if len(self._body) + len(data) <= self._limit:
                self._body += data
                return
            self._body += data
            self._head = bytes(self._body[:self._keep])
            self._tail, self._body = bytearray(self._body[-self._keep:]), bytearray()
            return
        self._tail += data
        if len(self._tail) > 2 * self._keep:
            del self._tail[:-self._keep]

    def result(self) -> dict[str, Any] | None:
        if self._head is None:
            return usage_from_json(bytes(self._body))
        return _usage_from_ends(self._head, bytes(self._tail))


_MODEL = re.compile(r'"model"\s*:\s*("(?:[^"\\]|\\.){0,256}")')
_USAGE_KEY = re.compile(r'"usage"\s*:\s*')


def _usage_from_ends(head: bytes, tail: bytes) -> dict[str, Any] | None:
    """The usage of an answer too big to keep, from its ends: the last ``"usage":`` object
    of the tail (a tool's input inside ``content`` comes before the answer's own)."""
    text = tail.decode("utf-8", "replace")
    if not text.rstrip().endswith("}"):
        return None  # cut short (its own usage never came): what is in it is the model's text
    found = list(_USAGE_KEY.finditer(text))
    usage = _empty()
    for m in reversed(found):
        try:
            obj, _ = json.JSONDecoder().raw_decode(text, m.end())
        except ValueError:
            continue
        if _merge(usage, obj):
            break
    else:
        return None
    model = _MODEL.search(head.decode("utf-8", "replace"))
    if model is not None:
        try:
            usage["model"] = json.loads(model.group(1))
        except ValueError:
            pass
    return usage
