"""Dashboard GET handlers and the base every dashboard handler shares:
the access check (F46) and errors as JSON with the error's HTTP status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tornado.web

import hyperhive.logs as logs
from hyperhive.actors.bridge import call
from hyperhive.errors import BadRequest, HiveError
from hyperhive.journal import JOURNAL_DEFAULT_LINES, check_journal_request
from hyperhive.names import validate_name
from hyperhive.paths import StatePaths
from hyperhive.web.access import request_token_ok
from hyperhive.web.dash_state import StateSource
from hyperhive.web.journal_ops import JournalSource
from hyperhive.web.metrics import Metrics
from hyperhive.web.sends import SendBatcher

__all__ = ["STATIC", "Base", "DashDeps", "JournalHandler", "MetricsHandler", "PageHandler", "StateHandler"]

_log = logs.get("hyperhive.dashboard")
STATIC = Path(__file__).parent / "static"


@dataclass
class DashDeps:
    """Everything the dashboard's handlers use, injected by the app factory."""

    paths: StatePaths
    coordinator: Any
    broker: Any
    questions: Any
    approvals: Any
    backend: JournalSource
    sends: SendBatcher
    source: StateSource
    metrics: Metrics
    token: str | None = None
    touch: Any = None  # Pusher.touch: push sections after a change no actor publishes


class Base(tornado.web.RequestHandler):
    def initialize(self, deps: DashDeps) -> None:
        self.deps = deps

    def prepare(self) -> None:
        if not request_token_ok(self, self.deps.token):
            raise tornado.web.HTTPError(401, "operator token required (open the page once with ?token=)")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        # Tornado's XSRF and token refusals say why in log_message; say it to the caller too.
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"ok": False, "error": {"code": f"http_{status_code}", "message": message}}))

    async def reply(self, work: Awaitable[dict[str, Any]]) -> None:
        """Await ``work`` and write it as ``{"ok": true, ...}``, or its error."""
        try:
            result = await work
        except HiveError as exc:
            self.set_status(exc.status)
            self.write({"ok": False, "error": exc.to_wire()})
            return
        except Exception as exc:  # noqa: BLE001 - the page shows it; the log has the traceback
            _log.exception("dashboard.request_failed", path=self.request.path)
            self.set_status(500)
            self.write({"ok": False, "error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}})
            return
        self.write({"ok": True, **result})


class PageHandler(Base):
    """``GET /``: the page. Touching ``xsrf_token`` sets the cookie its forms send back."""

    def get(self) -> None:
        self.xsrf_token  # noqa: B018 - sets the _xsrf cookie
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.write((STATIC / "index.html").read_bytes())


class StateHandler(Base):
    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        await self.reply(self._state())

    async def _state(self) -> dict[str, Any]:
        return {"state": await self.deps.source.snapshot()}


class JournalHandler(Base):
    """``GET /api/journal/{name}?unit=&lines=`` (F23): checked before anything runs."""

    async def get(self, name: str) -> None:
        await self.reply(self._journal(name))

    async def _journal(self, name: str) -> dict[str, Any]:
        raw = self.get_query_argument("lines", str(JOURNAL_DEFAULT_LINES))
        if not raw.isdigit():
            raise BadRequest(f"lines must be a positive integer, got {raw!r}")
        unit = self.get_query_argument("unit", "harness")
        agent = validate_name(name)
        live = {agent} if await call(self.deps.coordinator.has_agent, agent) else set()
        agent, checked, lines = check_journal_request(agent, unit, int(raw), live)
        text = await asyncio.get_running_loop().run_in_executor(
            None, self.deps.backend.journal, agent, checked, lines)
        return {"name": agent, "unit": checked, "lines": lines, "text": text}


class MetricsHandler(Base):
    async def get(self) -> None:
        d = self.deps
        body = await d.metrics.scrape(d.source.containers, d.broker, d.questions, d.approvals,
                                      usage_of=d.source.read_usage)
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.write(body)
