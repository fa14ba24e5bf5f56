"""The operator dashboard: the app factory and its start/stop in the daemon.

``make_app`` takes every dependency, so a test builds it on real actors.
``start_dashboard`` binds ``--listen`` (with F21's retry), subscribes the
push and the metrics to the hub, and writes the bound port to
``run/dashboard.port`` (``--listen …:0`` picks a free one) and the login URL
(it carries the operator token) to ``run/dashboard.url`` (0600), also logged
as ``dashboard.login``. Every route is gated (`dash_handlers.gate_request`).
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.web
from tornado.ioloop import IOLoop, PeriodicCallback

import hyperhive.logs as logs
from hyperhive.actors.events import Hub
from hyperhive.actors.refs import ApprovalsRef, BrokerRef, CoordinatorRef, QuestionsRef
from hyperhive.backends.base import Backend
from hyperhive.errors import Unavailable
from hyperhive.net import BackoffHTTPServer, bind_with_retry_async
from hyperhive.paths import StatePaths
from hyperhive.pricing import DEFAULT_PRICES, Price
from hyperhive.settings import Settings
from hyperhive.web.dashboard import actions as dash_actions
from hyperhive.web.dashboard.access import URL_FILE, Access, allowed_hosts, login_url, write_private
from hyperhive.web.dashboard.handlers import (
    STATIC,
    DashDeps,
    Gate,
    GatedStatic,
    JournalHandler,
    MetricsHandler,
    NotFound,
    PageHandler,
    StateHandler,
)
from hyperhive.web.dashboard.metrics import Metrics
from hyperhive.web.dashboard.push import Pusher, PushSocket
from hyperhive.web.dashboard.state import StateSource
from hyperhive.web.tables.heartbeats import Heartbeats
from hyperhive.web.tables.sends import SendBatcher
from hyperhive.web.tables.turn_slots import TurnSlots

if TYPE_CHECKING:
    from hyperhive.costs import Costs

__all__ = ["Dashboard", "LinkedSource", "bind_dashboard", "make_app", "start_dashboard"]

_log = logs.get("hyperhive.dashboard")
PORT_FILE = "dashboard.port"
BADGE_REFRESH_SECONDS = 10.0  # F19 badges (a config edit, a login) and cgroup usage show within this
RESYNC_EVERY = 6  # refreshes between asking the Coordinator for every snapshot again


def make_app(deps: DashDeps, pusher: Pusher) -> tornado.web.Application:
    d = {"deps": deps}
    routes: list[Any] = [
        (r"/", PageHandler, d),
        (r"/login", PageHandler, d),
        (r"/api/state", StateHandler, d),
        (r"/api/journal/([^/]+)", JournalHandler, d),
        (r"/metrics", MetricsHandler, d),
        (r"/ws", PushSocket, {"pusher": pusher, "source": deps.source, "gate": deps.gate}),
        *((path, cls, {**d, **extra}) for path, cls, extra in dash_actions.ROUTES),
    ]
    return tornado.web.Application(
        routes,
        static_path=str(STATIC),
        static_handler_class=GatedStatic,
        default_handler_class=NotFound,
        default_handler_args=d,
        hive_gate=deps.gate,  # GatedStatic's (Tornado makes its arguments itself)
        # No xsrf_cookies: a cookie is readable and plantable from every 127.0.0.1 port.
        # The XSRF token is the session's own (access.Access.xsrf_token), checked by the gate.
        websocket_ping_interval=20,
        log_function=_log_request,
    )


class LinkedSource(StateSource):
    """The state, with each running agent's web UI link from what the daemon
    relays (``web_port``: the port it bound, None when it could not), never
    from a file: an agent cannot move its link, and a port the daemon failed
    to bind shows none."""

    def __init__(self, *args: Any, web_port: Callable[[str], int | None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._web_port = web_port

    def _relink(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self._web_port is not None:
            for row in rows:
                row["port"] = self._web_port(row["name"]) if row.get("state") == "running" else None
        return rows

    async def sections(self, wanted: Any) -> dict[str, Any]:
        out = await super().sections(wanted)
        if "containers" in out:
            self._relink(out["containers"])
        return out

    async def container_rows(self, snaps: list[dict[str, Any]], cached: bool = False) -> list[dict[str, Any]]:
        return self._relink(await super().container_rows(snaps, cached))


def _log_request(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    if status >= 400:
        _log.info("dashboard.request", method=handler.request.method, path=handler.request.path, status=status)


@dataclass
class Dashboard:
    server: tornado.httpserver.HTTPServer
    port: int
    unsubscribe: Callable[[], None]
    pusher: Pusher
    port_file: Path
    badge_refresh: PeriodicCallback
    url_file: Path | None = None

    def stop(self) -> None:
        self.badge_refresh.stop()
        self.unsubscribe()
        self.pusher.close()
        self.server.stop()
        for client in list(self.pusher.clients):
            client.close()
        self.port_file.unlink(missing_ok=True)
        if self.url_file is not None:
            self.url_file.unlink(missing_ok=True)
        _log.info("dashboard.stopped")


async def bind_dashboard(settings: Settings) -> list[socket.socket]:
    """Bind ``--listen`` (F21's retry while the address is in use). The daemon
    does this before any actor starts, so a failure leaves nothing running."""
    try:
        return await bind_with_retry_async(settings.listen_port, settings.listen_host)
    except OSError as exc:
        raise Unavailable(f"the dashboard cannot listen on {settings.listen}: {exc.strerror or exc}") from None


async def start_dashboard(
    settings: Settings, paths: StatePaths, hub: Hub, token: str, sockets: list[socket.socket], *,
    coordinator: CoordinatorRef, broker: BrokerRef, questions: QuestionsRef, approvals: ApprovalsRef,
    backend: Backend[Any], sends: SendBatcher, heartbeats: Heartbeats | None = None,
    slots: TurnSlots | None = None, web_port: Callable[[str], int | None] | None = None,
    prices: Mapping[str, Price] = DEFAULT_PRICES, costs: Costs | None = None,
) -> Dashboard:
    """``costs`` (issue 15): each row's cost today, budget and sparkline, and the fleet's; None: no cost cells."""
    io_loop = IOLoop.current()
    # The backend's cgroup figures (memory, pids) per agent; a backend without cgroups has none.
    source = LinkedSource(paths, coordinator, broker, questions, approvals, heartbeats, slots,
                          usage_of=backend.usage, web_port=web_port, costs=costs)
    metrics = Metrics(prices)  # /metrics prices each call's tokens as the spend table does
    pusher = Pusher(io_loop, source, on_event=metrics.on_event)
    unsubscribe = hub.subscribe(pusher.on_event)
    await source.seed_flow()
    port = sockets[0].getsockname()[1]
    gate = Gate(Access(token), allowed_hosts(settings.listen_host, port, settings.allowed_hosts))
    deps = DashDeps(paths, coordinator, broker, questions, approvals, backend, sends, source, metrics, gate,
                    pusher.touch, pusher.drain)
    server = BackoffHTTPServer(make_app(deps, pusher), xheaders=False)
    server.add_sockets(sockets)
    run = paths.root / "run"
    port_file = run / PORT_FILE
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(port_file)
    url = login_url(settings.listen_host, port, token)
    url_file = run / URL_FILE
    write_private(url_file, url + "\n")
    rounds = itertools.count(1)
    badge_refresh = PeriodicCallback(lambda: _refresh(source, next(rounds) % RESYNC_EVERY == 0),
                                     BADGE_REFRESH_SECONDS * 1000)
    badge_refresh.start()
    pusher.start()  # with no page open, events are taken in once a second: no wake of the loop per event
    _log.info("dashboard.listening", host=settings.listen_host, port=port)
    _log.info("dashboard.login", url=url, file=str(url_file))  # the operator's way in (`hive url`)
    return Dashboard(server, port, unsubscribe, pusher, port_file, badge_refresh, url_file)


async def _refresh(source: StateSource, resync: bool) -> None:
    try:
        if resync:
            source.resync()
        await source.refresh_badges()
    except Exception:  # noqa: BLE001 - the next round retries; a request computes what is missing
        _log.exception("dashboard.badges_failed")
