"""`hive serve`: start-up and shutdown as flat, ordered steps.

Start: state dir and lock → agents dir (`agents_dir`) → store → clock → gateway → backend → Broker →
PortAllocator → Notifier → Questions → agent sockets and endpoints →
Coordinator → Approvals → dashboard → VacuumSweeper → boot (manager, kept containers; waits for their
starts) → questions re-armed → admin socket → READY.
Stop: the same in reverse, as one table of steps (`_STOP_ORDER`), each run and
logged whatever the others did; any actor still running at the end is logged.
SIGTERM/SIGINT stop the agents too (their desired state is kept), unless
``--keep-agents``; SIGUSR2 is a handover (``systemctl reload``): the daemon
stops and leaves every harness running for the next daemon to adopt, and exits
with `EXIT_HANDED_OVER` (the unit restarts it on that status).

The first log line is the dashboard's login URL (``daemon.dashboard``), the
last one of the start ``daemon.ready url=… agents=N``. A `StartupError`
(state dir busy, bad token file, sandbox unavailable, a bad setting) leaves
`serve` to the CLI, which prints it as one line on stderr and exits 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import pykka
from tornado.ioloop import IOLoop

import hyperhive.logs as logs
from hyperhive import agents_dir, disk_use, sdnotify
from hyperhive.actors.approvals import Approvals
from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.events import ContainerActivity, ContainerRemoved, ContainerState, Event, GatewayUsage, Hub
from hyperhive.actors.grants import GrantStore
from hyperhive.actors.naps import Naps
from hyperhive.actors.notifier import Notifier
from hyperhive.actors.ports import PortAllocator
from hyperhive.actors.questions import Questions
from hyperhive.actors.refs import (
    ApprovalsRef,
    BrokerRef,
    CoordinatorRef,
    NotifierRef,
    PortsRef,
    QuestionsRef,
    VacuumRef,
)
from hyperhive.actors.vacuum import DAY, VacuumSweeper
from hyperhive.asleep_ui import SleepingUIs
from hyperhive.backends.base import Backend
from hyperhive.backends.local import LocalBackend
from hyperhive.costs import Costs, start_costs
from hyperhive.daemon_backend import check_backend, make_backend
from hyperhive.daemon_process import raise_file_limit, take_lock
from hyperhive.errors import BadSetting, HiveError
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.sandbox.allowlist import parse_resolve
from hyperhive.sandbox.endpoints import AgentEndpoints
from hyperhive.sandbox.gateway import ApiGateway, upstream_from_env
from hyperhive.settings import Settings
from hyperhive.store.db import synchronous_of
from hyperhive.store.models import open_hive_db
from hyperhive.store.reserve import Reserve
from hyperhive.web.dashboard.access import Access, load_token, login_url
from hyperhive.web.dashboard.app import Dashboard, bind_dashboard, start_dashboard
from hyperhive.web.operator.lifecycle import lifecycle_action
from hyperhive.web.rpc.admin_ops import admin_ops
from hyperhive.web.rpc.agent_listen import AgentListen
from hyperhive.web.rpc.agent_listen_start import link_ops, start_agent_listen
from hyperhive.web.rpc.agent_ops import agent_ops
from hyperhive.web.rpc.gate_ops import manager_ops, refused_manager_ops
from hyperhive.web.rpc.journal_ops import journal_ops
from hyperhive.web.rpc.jsonlines import JsonLineServer, bind_socket
from hyperhive.web.rpc.sockets import AgentSockets
from hyperhive.web.tables.heartbeats import Heartbeats
from hyperhive.web.tables.sends import SendBatcher
from hyperhive.web.tables.turn_slots import TurnSlots
from hyperhive.workspace_pulls import Pulls
from hyperhive.workspace_status_probe import ProbeCgroups
from hyperhive.workspace_status_probe import use_cgroups as use_probe_cgroups

__all__ = ["EXIT_HANDED_OVER", "Daemon", "serve", "start", "stop"]

EXIT_HANDED_OVER = 75  # EX_TEMPFAIL: stopped on SIGUSR2, agents left running; start me again

_log = logs.get("hyperhive.daemon")


@dataclass
class Daemon:
    settings: Settings
    paths: StatePaths
    lock: IO[str]
    db: Any = None
    hub: Hub = field(default_factory=Hub)
    broker: BrokerRef | None = None
    ports: PortsRef | None = None
    vacuum: VacuumRef | None = None
    notifier_actor: NotifierRef | None = None
    questions: QuestionsRef | None = None
    approvals: ApprovalsRef | None = None
    coordinator: CoordinatorRef | None = None
    sockets: AgentSockets | None = None
    endpoints: AgentEndpoints | None = None
    backend: Backend[Any] | None = None
    admin: JsonLineServer | None = None
    dashboard: Dashboard | None = None
    heartbeats: Heartbeats | None = None
    turn_slots: TurnSlots | None = None
    pulls: Pulls | None = None
    costs: Costs | None = None
    notifier: sdnotify.Notifier | None = None
    agent_listen: AgentListen | None = None  # issue 18: --agent-listen, TLS


async def start(settings: Settings) -> Daemon:
    """Bring a daemon up on the running IOLoop; returns once it is booted."""
    given = load_token(settings.listen_host, settings.token_file)  # F46: refuse before anything starts
    check_backend(settings)  # issue 18: --backend ray without Ray, one line
    paths = agents_dir.state_paths(settings.state_dir, settings.agents_dir)  # --agents-dir: refused unmade
    paths.root.mkdir(parents=True, exist_ok=True)
    d = Daemon(settings, paths, take_lock(paths))
    try:
        agents_dir.prepare(paths)  # under the lock: agents never left behind in another place
        # Without a token file, our own (made on first start, under the lock: one daemon writes it).
        token = given or load_token(settings.listen_host, "", paths.root / "run")
        assert token is not None
        await _bring_up(d, token)
    except BaseException:
        _log.error("daemon.start_aborted")
        stop(d)  # whatever had started, in reverse: no actor thread keeps the process alive
        raise
    return d


async def _bring_up(d: Daemon, token: str) -> None:
    settings, paths = d.settings, d.paths
    listeners = await bind_dashboard(settings)  # before any actor: a failure leaves nothing running
    url = login_url(settings.listen_host, listeners[0].getsockname()[1], token)
    _log.info("daemon.dashboard", url=url)  # the operator's way in, first thing (`hive url` prints it too)
    d.db = open_hive_db(paths.db, settings.db_synchronous)
    _log.info("store.opened", path=str(paths.db), synchronous=synchronous_of(d.db),  # as the pragma reads
              agents_dir=str(paths.agents))
    io_loop = IOLoop.current()
    clock = LoopClock(io_loop)
    # The model API's credential stays here: agents reach the API through this gateway.
    try:
        upstream = upstream_from_env(os.environ)
    except ValueError as exc:
        raise BadSetting(f"ANTHROPIC_BASE_URL: {exc}") from None
    def on_usage(agent: str, usage: dict[str, Any]) -> None:
        d.hub.publish(GatewayUsage(agent, usage))
        if d.costs is not None:
            d.costs.on_call(agent, usage)

    gateway = ApiGateway(upstream, on_usage=on_usage)
    def link_of(name: AgentName) -> dict[str, str] | None:  # issue 18: late-bound, the listener starts later
        return None if d.agent_listen is None else d.agent_listen.credentials(name)

    d.backend = backend = make_backend(settings, paths, gateway.upstream.holds_credential, link_of)
    d.broker = broker = Broker.start(
        d.db, clock, d.hub, settings.recv_default_seconds, settings.recv_cap_seconds
    ).proxy()
    d.ports = PortAllocator.start(paths, settings.agent_port_base).proxy()

    if settings.notify:
        d.notifier_actor = Notifier.start(settings.notify, d.hub).proxy()
    d.questions = Questions.start(d.broker, clock, d.hub, GrantStore(paths)).proxy()

    sends = SendBatcher(d.broker)

    async def stop_agent(name: str) -> Any:  # a budget's "stop" (issue 15)
        if d.coordinator is not None:
            return await lifecycle_action(d.coordinator, "stop", name, "operator")
        return None

    d.costs = costs = await start_costs(settings, paths, d.db, d.hub, d.questions, d.broker, stop_agent,
                                        io_loop.add_callback)
    gateway.guard = costs.spend

    d.heartbeats = Heartbeats(settings.heartbeat_seconds)
    d.turn_slots = slots = TurnSlots(
        settings.max_active_turns,
        on_change=lambda agent: d.hub.publish(ContainerActivity(agent)),  # repaint its row
    )

    beats = d.heartbeats
    # Each agent's branch back into the operator's repo after its turns (issue 14), read as the agent's uid.
    d.pulls = pulls = Pulls(paths, backend.account, max_bytes=settings.pull_max_bundle_bytes,
                              timeout=settings.pull_timeout_seconds)
    # The git that looks inside a clone (workspace status) runs inside its agent's limits (issue 14).
    if isinstance(backend, LocalBackend) and backend.cgroups is not None:
        lim = backend.default_limits
        use_probe_cgroups(ProbeCgroups.of(backend.cgroups, lambda n: paths.load_applied(AgentName(n)).limits(
            lim.memory_mb, lim.pids)))

    reserve = Reserve(paths.root, settings.min_free_mb)
    disk_use.configure(paths, settings.disk_interval_seconds)  # each agent's dir, measured off the loop

    def forget_gone(event: Event) -> None:  # on an actor thread: hand over
        if isinstance(event, ContainerState) and not event.snapshot.running:
            io_loop.add_callback(slots.release, event.snapshot.name)  # a stopped or dead harness holds no slot
        elif isinstance(event, ContainerRemoved):
            io_loop.add_callback(beats.forget, event.agent)  # a respawn under the name starts afresh

    d.hub.subscribe(forget_gone)
    naps = Naps()  # hibernation (issue 17): a message for a hibernating agent wakes it
    d.hub.subscribe(naps.heard)
    sleeping = SleepingUIs(naps, broker, paths, settings.driver)  # their web UIs, answered by the daemon

    def ops_for(name: AgentName, manager: bool) -> dict[str, Any]:
        ops = agent_ops(name, broker, sends, settings.recv_cap_seconds, manager, d.heartbeats, d.hub, slots,
                        questions=d.questions, permission_ttl=settings.permission_ttl_seconds, pulls=pulls,
                        spend=costs.spend, reserve=reserve, naps=naps)
        if not manager:
            return {**ops, **refused_manager_ops()}
        # m1nd's socket opens at boot, once the Coordinator and Approvals are up.
        if d.coordinator is None or d.questions is None or d.approvals is None:
            raise HiveError("the manager's socket opened before the gate's actors started")
        extra = manager_ops(d.coordinator, d.questions, d.approvals, costs, backend)
        return {**ops, **extra}

    d.sockets = AgentSockets(io_loop, paths, ops_for, settings.recv_cap_seconds)
    d.endpoints = AgentEndpoints(
        io_loop, paths, gateway, parse_resolve(settings.proxy_resolve), d.hub,
        owner_uid=lambda name: None if (account := backend.account(name)) is None else account.uid,
        access=Access(token), asleep=sleeping)  # the agents' web UIs take the operator's session too
    d.agent_listen = await start_agent_listen(settings, paths, d.sockets, d.hub)  # None without --agent-listen
    if d.agent_listen is not None and settings.backend == "ray":  # each web UI through its agent's node
        d.endpoints.web_link = d.agent_listen.web.connector
    d.coordinator = Coordinator.start(
        settings, paths, backend, d.broker, clock, d.hub, _Servers(d.sockets, d.endpoints), d.ports, naps
    ).proxy()
    d.approvals = Approvals.start(paths, d.coordinator, d.broker, d.hub).proxy()
    d.admin = JsonLineServer(
        {**admin_ops(d.coordinator, d.broker, sends, d.questions, d.approvals, d.heartbeats, slots, paths,
                   backend=backend, pulls=pulls, costs=costs),
         **journal_ops(d.coordinator, backend), **link_ops(d.agent_listen, d.sockets)},
        {"socket": "admin"},
    )
    d.dashboard = await start_dashboard(
        settings, paths, d.hub, token, listeners, coordinator=d.coordinator, broker=d.broker, questions=d.questions,
        approvals=d.approvals, backend=backend, sends=sends, heartbeats=d.heartbeats, slots=slots,
        web_port=d.endpoints.web_port, prices=costs.spend.prices, costs=d.costs)
    # After the dashboard subscribed: the sweep at start is counted in /metrics too.
    d.vacuum = VacuumSweeper.start(paths, d.broker, clock, settings.vacuum_interval_seconds,
                                   message_max_age=settings.message_retention_days * DAY, hub=d.hub,
                                   ledger=costs.ledger, usage_max_age=settings.usage_retention_days * DAY).proxy()
    # nixos containers start slowly: boot has its own deadline
    started = await Handle(d.coordinator).within(settings.boot_timeout_seconds).ask(Coordinator.boot)
    await Handle(d.questions).ask(Questions.rearm)  # after boot: the askers are registered again
    # Last: a CLI that reaches the admin socket finds every kept container booted.
    d.admin.add_socket(bind_socket(paths.admin_socket))
    _log.info("daemon.ready", url=url, agents=len(started), started=started, state_dir=str(paths.root),
              pid=os.getpid(), sandboxed=backend.sandboxed, backend=backend.kind)
    d.notifier = sdnotify.ready()  # READY=1 only now: sockets bound, containers booted
    d.sockets.warm()  # the MCP servers, on a worker thread: a turn's CLI finds them built


_ACTOR = "actor"  # a pykka proxy: stop its actor
# Reverse of the start: the servers first (no new work), then the actors that
# take work from them, the backend (harnesses), and the actors under them.
_STOP_ORDER: tuple[tuple[str, str], ...] = (
    ("dashboard", "stop"), ("admin", "stop"), ("agent_listen", "stop"), ("approvals", _ACTOR), ("coordinator", _ACTOR),
    ("sockets", "close_all"), ("endpoints", "close_all"), ("pulls", "close"), ("backend", "close"),
    ("costs", "close"),
    ("questions", _ACTOR), ("notifier_actor", _ACTOR), ("vacuum", _ACTOR), ("ports", _ACTOR), ("broker", _ACTOR),
)


def _step(name: str, run: Callable[[], object]) -> None:
    """One stop step: logged, and never in the way of the next."""
    try:
        run()
    except Exception:  # noqa: BLE001 - the rest of the shutdown still runs
        _log.exception("daemon.stop_step_failed", step=name)
    else:
        _log.info("daemon.stop_step", step=name)


def stop(d: Daemon, keep_agents: bool = False) -> None:
    """Shut down in reverse order of start. ``keep_agents``: every harness is left
    running (released, not stopped) for the next daemon to adopt."""
    _log.info("daemon.stopping", keep_agents=keep_agents)
    sdnotify.stopping(d.notifier)
    for attr, how in _STOP_ORDER:
        part = getattr(d, attr)
        if attr == "coordinator" and part is not None and keep_agents:  # no verb can run any more
            _step("release_agents", partial(_release_agents, part))
        if part is not None and (how == _ACTOR or hasattr(part, how)):
            _step(attr, partial(_stop_actor, part, attr) if how == _ACTOR else getattr(part, how))
    if pykka.ActorRegistry.get_all():
        _step("actors_left", _stop_left)
    if d.db is not None:
        _step("db", d.db.close)
    _step("admin_socket", partial(_remove_socket, d.paths.admin_socket))
    _step("lock", d.lock.close)
    _log.info("daemon.stopped")


def _release_agents(coordinator: CoordinatorRef) -> None:
    Handle(coordinator).future(Coordinator.release_all).result(timeout=120)


def _stop_left() -> None:
    _log.warning("daemon.actors_left_running", actors=[str(r) for r in pykka.ActorRegistry.get_all()])
    pykka.ActorRegistry.stop_all(block=True, timeout=10)


def _remove_socket(path: Path) -> None:
    if path.is_socket():  # ours; a file in its way is not ours to remove
        path.unlink(missing_ok=True)


@dataclass
class _Servers:
    """Every server of one agent: its JSON-lines socket, gateway, proxy, web relay."""

    sockets: AgentSockets
    endpoints: AgentEndpoints

    def open(self, name: AgentName, manager: bool) -> None:
        self.sockets.open(name, manager)
        self.endpoints.open(name, manager)

    def close(self, name: AgentName) -> None:
        self.sockets.close(name)
        self.endpoints.close(name)


def _stop_actor(proxy: Any, name: str) -> None:
    try:
        proxy.actor_ref.stop(block=True, timeout=30)
    except pykka.Timeout:
        _log.error("daemon.actor_stop_timeout", actor=name)


async def _serve(settings: Settings) -> int:
    done = asyncio.Event()
    handover = [False]
    loop = asyncio.get_running_loop()

    def hand_over() -> None:
        handover[0] = True
        done.set()

    # Before start: a SIGTERM while booting is kept and shuts down cleanly after.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    loop.add_signal_handler(signal.SIGUSR2, hand_over)
    d = await start(settings)
    try:
        await done.wait()
    finally:
        stop(d, keep_agents=handover[0] or settings.keep_agents)
    return EXIT_HANDED_OVER if handover[0] else 0


def serve(settings: Settings) -> int:
    """Run the daemon until SIGTERM/SIGINT. A `StartupError` propagates (the CLI
    prints it as one line); any other refusal is logged and exits 1."""
    logs.configure(fmt=settings.log_format)
    raise_file_limit()
    try:
        return asyncio.run(_serve(settings))
    except HiveError as exc:  # e.g. the nixos backend's environment is incomplete
        _log.error("daemon.start_failed", code=exc.code, error=exc.message)
        return 1
