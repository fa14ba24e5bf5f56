"""What an agent's web UI port answers while the agent hibernates (issue 17).

Its harness is not running, so nothing listens on its web.sock; the relay
(`web_relay.start_web_relay`), once a request has passed its checks, answers
from the daemon instead: the same page (the harness's own static files), its
state as ``hibernating``, its inbox (the Broker's), and its history (the last
events of its events db, read by a sandboxed reader: ``events_probe``, the db
being the agent's). A note (``/send``) wakes it and asks for the note again in
a moment; ``/cancel`` has no turn to cancel; ``/compact`` waits for it to wake;
the live stream is refused (503), which the page retries.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hyperhive.harness.web import STATIC

__all__ = ["LINGER_SECONDS", "Asleep", "answer_asleep", "route", "send_and_linger"]

_FILES = {"/": ("agent.html", "text/html; charset=utf-8"),
          "/static/agent.css": ("agent.css", "text/css; charset=utf-8"),
          "/static/agent.js": ("agent.js", "text/javascript; charset=utf-8")}
_TEXTS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 503: "Service Unavailable"}
LINGER_SECONDS = 2.0  # after an answer, how long the rest of a request is read and dropped
JSON = "application/json"


@dataclass(frozen=True)
class Asleep:
    """A hibernating agent, as its UI port shows it."""

    name: str
    driver: str
    inbox: Callable[[], Awaitable[list[dict[str, Any]]]]
    history: Callable[[], Awaitable[list[dict[str, Any]]]]
    wake: Callable[[], None]


def _error(status: int, code: str, message: str) -> tuple[int, str, bytes]:
    return status, JSON, json.dumps({"ok": False, "error": {"code": code, "message": message}}).encode()


async def route(method: str, target: str, upgrade: bool, a: Asleep) -> tuple[int, str, bytes]:
    """(status, content type, body) for one request to a hibernating agent's UI."""
    path = target.split("?", 1)[0]
    if upgrade:
        return 503, "text/plain; charset=utf-8", f"{a.name} is hibernating: no live stream\n".encode()
    if method in ("GET", "HEAD"):
        if path in _FILES:
            name, ctype = _FILES[path]
            return 200, ctype, (STATIC / name).read_bytes()
        if path == "/api/state":
            history = await a.history()
            return 200, JSON, json.dumps({
                "ok": True, "name": a.name, "driver": a.driver, "state": "hibernating", "turn_open": False,
                "needs_login": False, "can_compact": False, "last_event_id": history[-1]["id"] if history else 0,
                "inbox": await a.inbox(), "inbox_error": None, "hibernating": True}).encode()
        if path == "/events/history":
            return 200, JSON, json.dumps({"ok": True, "events": await a.history()}).encode()
        return 404, "text/plain; charset=utf-8", b"404 Not Found\n"
    if method != "POST":
        return 405, "text/plain; charset=utf-8", b"405 Method Not Allowed\n"
    if path == "/send":
        a.wake()
        return _error(503, "waking", f"{a.name} was hibernating and is waking up: send the note again in a moment")
    if path == "/cancel":
        return 200, JSON, json.dumps({"ok": True, "cancelled": False}).encode()
    if path == "/compact":
        return _error(409, "hibernating", f"{a.name} is hibernating: nothing to compact until a message wakes it")
    return 404, "text/plain; charset=utf-8", b"404 Not Found\n"


async def answer_asleep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, target: str,
                        upgrade: bool, a: Asleep) -> None:
    """Answer one request (its head read, its body left unread: dropped after the answer)."""
    status, ctype, body = await route(method, target, upgrade, a)
    await send_and_linger(reader, writer, (
        f"HTTP/1.1 {status} {_TEXTS[status]}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n".encode()
        + (b"" if method == "HEAD" else body)))


async def send_and_linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write a whole answer, then read and drop what the client still sends for a
    moment, so the answer is not lost to a reset (the relay's refusals too)."""
    writer.write(data)
    try:
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_SECONDS):
            while await reader.read(1 << 16):
                pass
    except (OSError, TimeoutError):
        pass
