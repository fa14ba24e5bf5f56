"""The agent's web UI, served by its harness on loopback (F27, F29–F31).

    GET  /                 the page (static/agent.html)
    GET  /api/state        state, driver, needs_login, inbox (from `recent`)
    GET  /events/history   the bus's ring buffer
    WS   /events/live?after=N   events with id > N, then every new one
    POST /send {body}      an operator note into the agent's next turn
    POST /cancel           stop the running turn
    POST /compact          compact the conversation (claude driver)

`/send` is a note typed into this agent's own terminal: the harness holds
only the agent's socket, which speaks *as* the agent, so it cannot put an
operator message into the agent's own inbox; the note goes straight into the
next turn and is recorded as a ``note`` event. POSTs must be JSON: a
cross-site form cannot send that without a CORS preflight we never grant.

Who may use it is the daemon's business (issue 12): a daemon-run harness
serves on ``state/web.sock`` only, and the daemon's relay on the agent's
sticky port lets through only the operator (session cookie or Bearer, Host,
Origin; `sandbox.endpoints`) and strips the operator's credentials. Notes stay
unverified (``turns.note(body)``): the agent's own processes can reach
web.sock as well, and a harness running as the agent's uid holds no secret
they could not read, so nothing on a request proves the operator wrote it.
``serve_ui`` (``hive harness --web-port``, run by hand or by a test, never by
the daemon, and not reachable from any sandbox) listens on 127.0.0.1 without
any authentication.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.web
import tornado.websocket

import hyperhive.logs as logs
from hyperhive import wire
from hyperhive.errors import BadRequest, HiveError
from hyperhive.harness.bus import Bus, turn_open
from hyperhive.harness.driver import Driver
from hyperhive.harness.turns import TurnLoop
from hyperhive.net import BackoffHTTPServer, bind_with_retry_async
from hyperhive.store.events_db import EventRow

__all__ = ["AgentUI", "PORT_FILE", "build_app", "serve_ui", "serve_ui_unix"]

_log = logs.get("hyperhive.harness.web")

STATIC = Path(__file__).parent / "static"
PORT_FILE = "web.port"
INBOX_LIMIT = 30
INBOX_TIMEOUT = 2.0


@dataclass
class AgentUI:
    name: str
    driver: Driver
    bus: Bus
    turns: TurnLoop
    client: Any

    async def inbox(self) -> tuple[list[dict[str, Any]], str | None]:
        """The agent's recent inbox rows; best effort (the page still renders without)."""
        try:
            resp = await asyncio.wait_for(self.client.request("recent", limit=INBOX_LIMIT), INBOX_TIMEOUT)
        except HiveError as exc:
            return [], f"{exc.code}: {exc.message}"
        except TimeoutError:
            return [], "the daemon did not answer in time"
        return list(resp["messages"]), None

    async def state(self) -> dict[str, Any]:
        inbox, inbox_error = await self.inbox()
        history = self.bus.history()
        return {
            "name": self.name,
            "driver": self.driver.name,
            "state": self.bus.state,
            "turn_open": turn_open(e.kind for e in history),
            "needs_login": self.driver.needs_login,
            "can_compact": self.driver.can_compact,
            "last_event_id": history[-1].id if history else 0,
            "inbox": inbox,
            "inbox_error": inbox_error,
        }


class _Handler(tornado.web.RequestHandler):
    def initialize(self, ui: AgentUI) -> None:
        self.agent_ui = ui

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def body_json(self) -> dict[str, Any]:
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype != "application/json":
            raise BadRequest("POST bodies must be application/json")
        if not self.request.body:
            return {}
        # The wire's rules: no lone surrogates (they would fail later, writing the
        # events db or the CLI's stdin), bounded nesting, finite 64-bit numbers.
        data = wire.loads(self.request.body)
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        return data

    def reply(self, status: int, data: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def fail(self, exc: HiveError) -> None:
        self.reply(exc.status, {"ok": False, "error": exc.to_wire()})


class _Page(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish((STATIC / "agent.html").read_bytes())


class _State(_Handler):
    async def get(self) -> None:
        self.reply(200, {"ok": True, **await self.agent_ui.state()})


class _History(_Handler):
    def get(self) -> None:
        self.reply(200, {"ok": True, "events": [e.to_wire() for e in self.agent_ui.bus.history()]})


class _Send(_Handler):
    def post(self) -> None:
        try:
            body = self.body_json().get("body")
            if not isinstance(body, str):
                raise BadRequest("body must be a string")
            self.agent_ui.turns.note(body)
        except HiveError as exc:
            return self.fail(exc)
        self.reply(202, {"ok": True, "queued": True})


class _Cancel(_Handler):
    async def post(self) -> None:
        try:
            self.body_json()
        except HiveError as exc:
            return self.fail(exc)
        self.reply(200, {"ok": True, "cancelled": await self.agent_ui.turns.cancel()})


class _Compact(_Handler):
    def post(self) -> None:
        try:
            self.body_json()
            self.agent_ui.turns.request_compact()
        except HiveError as exc:
            return self.fail(exc)
        self.reply(202, {"ok": True, "queued": True})


class _Live(tornado.websocket.WebSocketHandler):
    """Events after ``?after=N`` from the ring, then live ones, in order."""

    def initialize(self, ui: AgentUI) -> None:
        self.agent_ui = ui
        self._unsubscribe: Any = None

    def open(self, *args: Any, **kwargs: Any) -> None:
        try:
            after = int(self.get_argument("after", "0"))
        except ValueError:
            after = 0
        # since() and subscribe() run back to back on the loop: no event falls between them.
        for row in self.agent_ui.bus.since(after):
            self._push(row)
        self._unsubscribe = self.agent_ui.bus.subscribe(self._push)

    def _push(self, row: EventRow) -> None:
        try:
            self.write_message(json.dumps(row.to_wire()))
        except tornado.websocket.WebSocketClosedError:
            self.on_close()

    def on_message(self, message: str | bytes) -> None:
        pass  # the stream is one-way

    def on_close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


class _Static(tornado.web.StaticFileHandler):
    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if "\x00" in absolute_path:  # os.path.realpath would raise ValueError: a 500
            raise tornado.web.HTTPError(400, "NUL in the path")
        return super().validate_absolute_path(root, absolute_path)


def build_app(ui: AgentUI) -> tornado.web.Application:
    deps = {"ui": ui}
    return tornado.web.Application(
        [
            (r"/", _Page, deps),
            (r"/api/state", _State, deps),
            (r"/events/history", _History, deps),
            (r"/events/live", _Live, deps),
            (r"/send", _Send, deps),
            (r"/cancel", _Cancel, deps),
            (r"/compact", _Compact, deps),
        ],
        static_path=str(STATIC),
        static_handler_class=_Static,
        log_function=_log_request,
    )


def _log_request(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    if status >= 400:
        _log.info("web.request", method=handler.request.method, path=handler.request.path, status=status)


async def serve_ui(ui: AgentUI, port: int, state_dir: Path) -> tuple[tornado.httpserver.HTTPServer, int]:
    """Listen on 127.0.0.1 only; the bound port is written to ``<state>/web.port``."""
    sockets = await bind_with_retry_async(port, "127.0.0.1")
    server = BackoffHTTPServer(build_app(ui))
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()[1]
    tmp = state_dir / (PORT_FILE + ".tmp")
    tmp.write_text(f"{bound}\n")
    tmp.replace(state_dir / PORT_FILE)
    _log.info("web.listening", port=bound)
    return server, bound


def serve_ui_unix(ui: AgentUI, path: str) -> tornado.httpserver.HTTPServer:
    """Listen on a unix socket (mode 0600) in the agent's own dir: the sandbox has
    no network the host can reach, so the daemon relays the agent's sticky port here."""
    from tornado.netutil import bind_unix_socket

    sock = bind_unix_socket(path, mode=0o600)
    server = BackoffHTTPServer(build_app(ui))
    server.add_socket(sock)
    _log.info("web.listening", socket=path)
    return server
