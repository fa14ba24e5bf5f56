"""A scripted Anthropic-compatible server on loopback, so the real Claude Code
CLI runs offline (the Anthropic API is the one part that cannot run here).

It answers ``HEAD /`` and ``POST /v1/messages`` (``?beta=true``), streaming
SSE (message_start, content_block_start/delta/stop, message_delta,
message_stop) when the request asks for ``stream``. Each answer comes from the
test's script: a list of `Reply` (taken in order) or a function of the request
body. Every request is recorded (method, path, parsed body) in `requests`.

The server runs on its own thread and IOLoop, so a test may block (on
`support.wait_for`, a subprocess) without stalling it. Listen on TCP
127.0.0.1:0 (`base_url`) and, when asked, also on a unix socket (for
``ANTHROPIC_UNIX_SOCKET`` inside a network-less sandbox).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

__all__ = ["FakeAnthropic", "Recorded", "Reply", "text", "tool_use"]

_ids = itertools.count(1)


def text(s: str) -> dict[str, Any]:
    return {"type": "text", "text": s}


def tool_use(name: str, input: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id or f"toolu_{next(_ids):04d}", "name": name, "input": input}


@dataclass
class Reply:
    """One model answer. ``hold``: stream the first block's start, then stall
    until the event is set (a turn that is visibly mid-way); a non-streamed
    answer stalls before it is written. ``status`` other
    than 200 answers with an Anthropic-style error body instead."""

    blocks: list[dict[str, Any]] = field(default_factory=lambda: [text("ok")])
    hold: threading.Event | None = None
    status: int = 200
    input_tokens: int = 11
    output_tokens: int = 7
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    model: str | None = None  # the response's model (default: the request's)

    def usage(self, output_tokens: int | None = None) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
                "cache_read_input_tokens": self.cache_read_tokens,
                "cache_creation_input_tokens": self.cache_write_tokens}

    def delta_usage(self) -> dict[str, Any]:
        """The final ``message_delta``'s usage (a subclass may answer the API's other shapes)."""
        return {"output_tokens": self.output_tokens}

    @property
    def stop_reason(self) -> str:
        return "tool_use" if any(b["type"] == "tool_use" for b in self.blocks) else "end_turn"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)  # lowercased names: which key reached us

    @property
    def is_main(self) -> bool:
        """A conversation request (with tools), not a side request such as a quota probe."""
        return isinstance(self.body, dict) and bool(self.body.get("tools"))

    def conversation_text(self) -> str:
        """All text of the request's messages (user, assistant, tool results), joined."""
        out: list[str] = []

        def walk(x: Any) -> None:
            if isinstance(x, str):
                out.append(x)
            elif isinstance(x, list):
                for y in x:
                    walk(y)
            elif isinstance(x, dict):
                for k in ("text", "content", "input"):
                    if k in x:
                        walk(x[k] if k != "input" else json.dumps(x[k]))

        walk(self.body.get("messages", []) if isinstance(self.body, dict) else [])
        return "\n".join(out)


Script = list[Reply] | Callable[[dict[str, Any]], Reply]


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _block_events(index: int, block: dict[str, Any]) -> tuple[bytes, list[bytes], bytes]:
    if block["type"] == "text":
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": block["text"]}]
    elif block["type"] == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}]
    else:
        raise ValueError(f"unknown block type {block['type']!r}")
    return (
        _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}),
        [_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
         for d in deltas],
        _sse("content_block_stop", {"type": "content_block_stop", "index": index}),
    )


class _Messages(tornado.web.RequestHandler):
    def initialize(self, fake: FakeAnthropic) -> None:
        self.fake = fake

    def head(self) -> None:
        self.set_status(200)

    def _request_headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.request.headers.get_all()}

    def get(self) -> None:
        self.fake._record("GET", self.request.uri or "", None, self._request_headers())
        self.set_status(404)

    async def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            body = {"_unparsed": self.request.body.decode(errors="replace")}
        self.fake._record("POST", self.request.uri or "", body, self._request_headers())
        if not (self.request.path or "").endswith("/v1/messages"):
            self.set_status(404)
            return
        reply = self.fake._next(body)
        if reply.status != 200:
            self.set_status(reply.status)
            self.write({"type": "error", "error": {"type": "api_error", "message": "scripted failure"}})
            return
        msg_id = f"msg_{next(_ids):06d}"
        model = reply.model or body.get("model", "claude-test")
        self.fake._returned(body, {"model": model, **reply.usage()})
        if not body.get("stream"):
            if reply.hold is not None:  # a long answer still being generated
                await self._hold(reply.hold)
            self.write({
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": reply.blocks, "stop_reason": reply.stop_reason, "stop_sequence": None,
                "usage": reply.usage(),
            })
            return
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.write(_sse("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": reply.usage(output_tokens=1),
        }}))
        await self.flush()
        for i, block in enumerate(reply.blocks):
            start, deltas, stop = _block_events(i, block)
            self.write(start)
            await self.flush()
            if i == 0 and reply.hold is not None:
                await self._hold(reply.hold)
            for d in deltas:
                self.write(d)
            self.write(stop)
            await self.flush()
        self.write(_sse("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": reply.delta_usage(),
        }))
        self.write(_sse("message_stop", {"type": "message_stop"}))

    async def _hold(self, ev: threading.Event) -> None:
        while not ev.is_set() and not self.fake._closing.is_set():
            if self.request.connection is None or self.request.connection.stream.closed():  # type: ignore[attr-defined]
                return
            await asyncio.sleep(0.02)


class FakeAnthropic:
    """Start with `start()` (or as a context manager); `base_url` is then set."""

    def __init__(self, script: Script | None = None, unix_socket: Path | None = None) -> None:
        self.script: Script = script if script is not None else []
        self.unix_socket = unix_socket
        self.requests: list[Recorded] = []
        self.usages: list[tuple[Any, dict[str, Any]]] = []  # (request body, the usage answered), in order
        self.default = Reply([text("(script exhausted)")])
        self.port = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The variables that point Claude Code at this server."""
        return {"ANTHROPIC_BASE_URL": self.base_url, "ANTHROPIC_API_KEY": "sk-test-offline"}

    def set_script(self, script: Script) -> None:
        with self._lock:
            self.script = script

    def main_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.is_main]

    def _returned(self, body: Any, usage: dict[str, Any]) -> None:
        with self._lock:
            self.usages.append((body, usage))

    def usage_of(self, agent: str) -> dict[str, int]:
        """The tokens answered to ``agent``'s requests (its system prompt names it), summed by kind."""
        out = dict.fromkeys(("input_tokens", "output_tokens", "cache_read_input_tokens",
                             "cache_creation_input_tokens"), 0)
        with self._lock:
            for body, usage in self.usages:
                if f"You are {agent}," in json.dumps(body.get("system") if isinstance(body, dict) else None):
                    for k in out:
                        out[k] += int(usage.get(k, 0))
        return out

    def _record(self, method: str, path: str, body: Any, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path, body, headers or {}))

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if callable(self.script):
                return self.script(body)
            if not body.get("tools"):
                return Reply([text("ok")])  # side requests never consume the script
            return self.script.pop(0) if self.script else self.default

    def start(self) -> FakeAnthropic:
        self._thread = threading.Thread(target=self._run, name="fake-anthropic", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake Anthropic server did not start")
        return self

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = tornado.web.Application([(r"/.*", _Messages, {"fake": self})])
        server = tornado.httpserver.HTTPServer(app)
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = sock.getsockname()[1]
        server.add_sockets([sock])
        if self.unix_socket is not None:
            server.add_socket(tornado.netutil.bind_unix_socket(str(self.unix_socket), mode=0o666))
        self._ready.set()
        await self._stop.wait()
        server.stop()
        await server.close_all_connections()

    def stop(self) -> None:
        self._closing.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __iter__(self) -> Iterator[Recorded]:
        with self._lock:
            return iter(list(self.requests))
