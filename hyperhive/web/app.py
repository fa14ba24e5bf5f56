"""The operator dashboard: the app factory and its start/stop in the daemon.

``make_app`` takes every dependency, so a test builds it on real actors.
``start_dashboard`` binds ``--listen`` (with F21's retry), subscribes the
push and the metrics to the hub, and writes the bound port to
``run/dashboard.port`` (``--listen …:0`` picks a free one).
"""

from __future__ import annotations

import itertools
import secrets
import socket
from dataclasses import dataclass
from typing import Any

import tornado.httpserver
import tornado.web
from tornado.ioloop import IOLoop, PeriodicCallback

import hyperhive.logs as logs
from hyperhive.actors.events import Hub
from hyperhive.errors import Unavailable
from hyperhive.paths import StatePaths
from hyperhive.settings import Settings
from hyperhive.web import dash_actions
from hyperhive.web.access import request_token_ok
from hyperhive.web.bind import bind_with_retry_async
from hyperhive.web.dash_handlers import (
    STATIC,
    DashDeps,
    JournalHandler,
    MetricsHandler,
    PageHandler,
    StateHandler,
)
from hyperhive.web.dash_state import StateSource
from hyperhive.web.heartbeats import Heartbeats
from hyperhive.web.journal_ops import JournalSource
from hyperhive.web.metrics import Metrics
from hyperhive.web.push import Pusher, PushSocket
from hyperhive.web.sends import SendBatcher
from hyperhive.web.turn_slots import TurnSlots

__all__ = ["Dashboard", "bind_dashboard", "make_app", "start_dashboard"]

_log = logs.get("hyperhive.dashboard")
PORT_FILE = "dashboard.port"
BADGE_REFRESH_SECONDS = 10.0  # F19 badges (a config edit, a login) and cgroup usage show within this
RESYNC_EVERY = 6  # refreshes between asking the Coordinator for every snapshot again


def make_app(deps: DashDeps, pusher: Pusher) -> tornado.web.Application:
    d = {"deps": deps}
    routes: list[Any] = [
        (r"/", PageHandler, d),
        (r"/api/state", StateHandler, d),
        (r"/api/journal/([^/]+)", JournalHandler, d),
        (r"/metrics", MetricsHandler, d),
        (r"/ws", PushSocket, {"pusher": pusher, "source": deps.source,
                              "check": lambda h: request_token_ok(h, deps.token)}),
        *((path, cls, {**d, **extra}) for path, cls, extra in dash_actions.ROUTES),
    ]
    return tornado.web.Application(
        routes,
        static_path=str(STATIC),
        xsrf_cookies=True,
        # Only signs nothing we rely on across restarts; a fresh one per start is fine.
        cookie_secret=secrets.token_hex(32),
        websocket_ping_interval=20,
        log_function=_log_request,
    )


def _log_request(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    if status >= 400:
        _log.info("dashboard.request", method=handler.request.method, path=handler.request.path, status=status)


@dataclass
class Dashboard:
    server: tornado.httpserver.HTTPServer
    port: int
    unsubscribe: Any
    pusher: Pusher
    port_file: Any
    badge_refresh: PeriodicCallback

    def stop(self) -> None:
        self.badge_refresh.stop()
        self.unsubscribe()
        self.server.stop()
        for client in list(self.pusher.clients):
            client.close()
        self.port_file.unlink(missing_ok=True)
        _log.info("dashboard.stopped")


async def bind_dashboard(settings: Settings) -> list[socket.socket]:
    """Bind ``--listen`` (F21's retry while the address is in use). The daemon
    does this before any actor starts, so a failure leaves nothing running."""
    try:
        return await bind_with_retry_async(settings.listen_port, settings.listen_host)
    except OSError as exc:
        raise Unavailable(f"the dashboard cannot listen on {settings.listen}: {exc.strerror or exc}") from None


async def start_dashboard(
    settings: Settings, paths: StatePaths, hub: Hub, token: str | None, sockets: list[socket.socket], *,
    coordinator: Any, broker: Any,
    questions: Any, approvals: Any, backend: JournalSource, sends: SendBatcher, heartbeats: Heartbeats | None = None,
    slots: TurnSlots | None = None,
) -> Dashboard:
    io_loop = IOLoop.current()
    # The backend's cgroup figures (memory, pids) per agent; a backend without cgroups has none.
    source = StateSource(paths, coordinator, broker, questions, approvals, heartbeats, slots,
                         usage_of=getattr(backend, "usage", None))
    metrics = Metrics()
    pusher = Pusher(io_loop, source, on_event=metrics.on_event)
    unsubscribe = hub.subscribe(pusher.on_event)
    await source.seed_flow()
    deps = DashDeps(paths, coordinator, broker, questions, approvals, backend, sends, source, metrics, token,
                    pusher.touch)
    server = tornado.httpserver.HTTPServer(make_app(deps, pusher), xheaders=False)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    port_file = paths.root / "run" / PORT_FILE
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(port_file)
    rounds = itertools.count(1)
    badge_refresh = PeriodicCallback(lambda: _refresh(source, next(rounds) % RESYNC_EVERY == 0),
                                     BADGE_REFRESH_SECONDS * 1000)
    badge_refresh.start()
    _log.info("dashboard.listening", host=settings.listen_host, port=port, token=token is not None)
    return Dashboard(server, port, unsubscribe, pusher, port_file, badge_refresh)


async def _refresh(source: StateSource, resync: bool) -> None:
    try:
        if resync:
            source.resync()
        await source.refresh_badges()
    except Exception:  # noqa: BLE001 - the next round retries; a request computes what is missing
        _log.exception("dashboard.badges_failed")
