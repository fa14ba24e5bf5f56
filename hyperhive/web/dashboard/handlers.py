"""Dashboard GET handlers and the base every dashboard handler shares:
the access gate (F46, issue 12: see `access`) and errors as JSON with the
error's HTTP status.

Every request, static files and unknown paths included, passes `Gate.check`
in this order: ``Host`` on the allowlist (421), fetch metadata (403), the
token as a session cookie or Bearer (401), ``Origin`` the server's own
(403), and for a POST with a session its XSRF token (403). A refusal says
nothing of the hive and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import tornado.web

import hyperhive.logs as logs
from hyperhive.actors.refs import ApprovalsRef, BrokerRef, CoordinatorRef, QuestionsRef
from hyperhive.disk_use import observe_disks
from hyperhive.errors import BadRequest, HiveError
from hyperhive.journal import JOURNAL_DEFAULT_LINES
from hyperhive.paths import StatePaths
from hyperhive.web.dashboard.access import (
    Access,
    Auth,
    fetch_allowed,
    host_ok,
    origin_ok,
    session_cookie_header,
)
from hyperhive.web.dashboard.metrics import Metrics
from hyperhive.web.dashboard.state import StateSource
from hyperhive.web.operator import agents
from hyperhive.web.rpc.journal_ops import JournalSource
from hyperhive.web.tables.sends import SendBatcher

__all__ = ["STATIC", "XSRF_HEADER", "Base", "DashDeps", "Gate", "GatedStatic", "JournalHandler", "MetricsHandler",
           "NotFound", "PageHandler", "Refused", "StateHandler", "gate_request", "security_headers", "write_refusal"]

_log = logs.get("hyperhive.dashboard")
STATIC = Path(__file__).parent / "static"
XSRF_HEADER = "X-XSRF-Token"
XSRF_FIELD = "_xsrf"  # the same token as a form field, for a client without the header
XSRF_PLACEHOLDER = b'<meta name="hive-xsrf" content="">'

# What a refusal says: the same few words to everyone, nothing of the hive.
REFUSALS = {401: "authentication required", 403: "forbidden", 421: "misdirected request"}


@dataclass(frozen=True)
class Gate:
    """The token's derivations and the ``Host`` values this dashboard answers to."""

    access: Access
    hosts: frozenset[str] = field(default_factory=frozenset)


class Refused(tornado.web.HTTPError):
    """A refusal of the gate: ``why`` goes to the log, never to the caller."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(status, REFUSALS[status])
        self.why = why


def gate_request(handler: tornado.web.RequestHandler, gate: Gate, *, websocket: bool = False) -> Auth:
    """The gate, for a dashboard handler (`Base`) or the push socket."""
    req = handler.request
    headers = req.headers
    host = headers.get("Host")
    if not host_ok(host, gate.hosts):
        raise Refused(421, f"host {host!r} is not allowed")
    assert host is not None
    method = req.method or "GET"
    if not fetch_allowed(headers, method):
        raise Refused(403, f"sec-fetch-site {headers.get('Sec-Fetch-Site')} {headers.get('Sec-Fetch-Mode')}")
    auth = gate.access.authenticate(headers)
    if auth is None:
        raise Refused(401, "no valid session or bearer token")
    origin = headers.get("Origin")
    if origin is not None and not origin_ok(origin, host):
        raise Refused(403, f"origin {origin!r} is not this dashboard's")
    if auth.is_session:
        if websocket and origin is None:
            raise Refused(403, "a websocket with a session cookie must send its Origin")
        if method not in ("GET", "HEAD") and not websocket:
            given = headers.get(XSRF_HEADER) or handler.get_body_argument(XSRF_FIELD, None)
            if not gate.access.xsrf_ok(auth.sid, given):
                raise Refused(403, "the XSRF token is missing or not this session's")
    return auth


def security_headers(handler: tornado.web.RequestHandler) -> None:
    handler.clear_header("Server")  # no version to anyone
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("X-Frame-Options", "DENY")
    handler.set_header("Cross-Origin-Resource-Policy", "same-origin")
    handler.set_header("Referrer-Policy", "no-referrer")


def write_refusal(handler: tornado.web.RequestHandler, status_code: int, exc: BaseException | None) -> bool:
    """Write a gate refusal (True) or leave the error to the caller (False)."""
    if not isinstance(exc, Refused):
        return False
    _log.info("dashboard.refused", status=status_code, path=handler.request.path, why=exc.why,
              remote=handler.request.remote_ip)
    handler.set_header("Content-Type", "application/json")
    handler.set_header("Cache-Control", "no-store")
    handler.finish(json.dumps({"ok": False, "error": {"code": f"http_{status_code}",
                                                     "message": REFUSALS[status_code]}}))
    return True


@dataclass
class DashDeps:
    """Everything the dashboard's handlers use, injected by the app factory."""

    paths: StatePaths
    coordinator: CoordinatorRef
    broker: BrokerRef
    questions: QuestionsRef
    approvals: ApprovalsRef
    backend: JournalSource
    sends: SendBatcher
    source: StateSource
    metrics: Metrics
    gate: Gate
    touch: Callable[..., None] | None = None  # Pusher.touch(*sections): push sections after a change no actor publishes
    drain: Callable[[], None] | None = None  # Pusher.drain: the events not taken in yet (no page open: once a second)


class Base(tornado.web.RequestHandler):
    auth: Auth

    def initialize(self, deps: DashDeps) -> None:
        self.deps = deps

    def set_default_headers(self) -> None:
        security_headers(self)

    def prepare(self) -> None:
        self.auth = gate_request(self, self.deps.gate)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if write_refusal(self, status_code, exc):
            return
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
        except tornado.web.HTTPError as exc:  # e.g. a form body that is not UTF-8 (a lone surrogate)
            if exc.status_code >= 500:
                raise
            self.set_status(exc.status_code)
            self.write({"ok": False, "error": {"code": "bad_request" if exc.status_code == 400 else
                                               f"http_{exc.status_code}", "message": exc.log_message or self._reason}})
            return
        except Exception as exc:  # noqa: BLE001 - the page shows it; the log has the traceback
            _log.exception("dashboard.request_failed", path=self.request.path)
            self.set_status(500)
            self.write({"ok": False, "error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}})
            return
        self.write({"ok": True, **result})


class NotFound(Base):
    """Any other path: gated like the rest (a foreign Host learns nothing), then 404."""

    def prepare(self) -> None:
        super().prepare()
        raise tornado.web.HTTPError(404, "not found")


class GatedStatic(tornado.web.StaticFileHandler):
    """``/static/…``: the page's own files, behind the same gate."""

    def set_default_headers(self) -> None:
        security_headers(self)

    def prepare(self) -> None:
        gate_request(self, self.settings["hive_gate"])
        if "\x00" in (self.path_kwargs.get("path") or "") or "\x00" in self.request.path:
            raise tornado.web.HTTPError(400, "NUL in the path")

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if "\x00" in absolute_path:  # os.stat would raise ValueError: a 500
            raise tornado.web.HTTPError(400, "NUL in the path")
        return super().validate_absolute_path(root, absolute_path)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if not write_refusal(self, status_code, kwargs.get("exc_info", (None, None))[1]):
            self.finish(f"{status_code}")


class PageHandler(Base):
    """``GET /``: the page, with the session's XSRF token in it (never a cookie:
    a page on any other 127.0.0.1 port could read one). ``GET /login?token=…``
    and ``GET /?token=…``: a valid token sets the session cookie and redirects
    to the page (the token leaves the address bar); anything else is a 401."""

    def prepare(self) -> None:
        if self.request.path == "/login" or "token" in self.request.query_arguments:
            self._login()
        else:
            super().prepare()

    def _login(self) -> None:
        host = self.request.headers.get("Host")
        if not host_ok(host, self.deps.gate.hosts):
            raise Refused(421, f"host {host!r} is not allowed")
        given = self.get_query_argument("token", None)
        if given is None and self.deps.gate.access.session_from(self.request.headers.get("Cookie")) is not None:
            self.redirect("/", status=303)  # logged in already
            return
        if not self.deps.gate.access.token_ok(given):
            raise Refused(401, "login with a wrong or no token")
        value = self.deps.gate.access.new_session()
        self.add_header("Set-Cookie", session_cookie_header(value, secure=self.request.protocol == "https"))
        self.set_header("Cache-Control", "no-store")
        _log.info("dashboard.session_started", remote=self.request.remote_ip)
        self.redirect("/", status=303)

    def get(self) -> None:
        xsrf = self.deps.gate.access.xsrf_token(self.auth.sid) if self.auth.is_session else ""
        page = (STATIC / "index.html").read_bytes()
        page = page.replace(XSRF_PLACEHOLDER, f'<meta name="hive-xsrf" content="{xsrf}">'.encode())
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        # Never in another page's frame (clickjacking); scripts stay the page's own business
        # (a script-src policy would also refuse the test driver's evaluations).
        self.set_header("Content-Security-Policy", "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
                        "object-src 'none'")
        self.write(page)


class StateHandler(Base):
    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        await self.reply(self._state())

    async def _state(self) -> dict[str, Any]:
        if self.deps.drain is not None:
            self.deps.drain()
        return {"state": await self.deps.source.snapshot()}


class JournalHandler(Base):
    """``GET /api/journal/{name}?unit=&lines=`` (F23): checked before anything runs."""

    async def get(self, name: str) -> None:
        await self.reply(self._journal(name))

    async def _journal(self, name: str) -> dict[str, Any]:
        raw = self.get_query_argument("lines", str(JOURNAL_DEFAULT_LINES))
        if not (raw.isascii() and raw.isdigit()):  # str.isdigit() takes "²", which int() refuses
            raise BadRequest(f"lines must be a positive integer, got {raw!r}")
        unit = self.get_query_argument("unit", "harness")
        return await agents.journal(self.deps.coordinator, self.deps.backend, name, unit, int(raw))


class MetricsHandler(Base):
    async def get(self) -> None:
        d = self.deps
        if d.drain is not None:  # every event counted so far, page open or not
            d.drain()
        body = await d.metrics.scrape(d.source.containers, d.broker, d.questions, d.approvals,
                                      usage_of=d.source.read_usage, disks=partial(observe_disks, d.paths),
                                      nodes=getattr(d.backend, "nodes_in_use", None))
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.write(body)
