"""`hive harness`: one agent's process inside its container (F26, F27).

Starts, in order: the event bus (ring + the agent's events sqlite), the
daemon connection, the driver, then side by side the agent's web UI on
127.0.0.1, the heartbeats and the turn loop (`turns.TurnLoop`); stops in
reverse. A lost daemon connection is retried, never fatal: nothing ties the
harness to the daemon's life, and its client (`reconnect.Reconnecting`) waits
out a daemon restart and re-issues what was in flight (issue 16): the next
daemon adopts the harness as it runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado.httpserver import HTTPServer

import hyperhive.logs as logs
from hyperhive.client import AsyncClient
from hyperhive.errors import HiveError
from hyperhive.harness.builtin import BuiltinDriver
from hyperhive.harness.bus import Bus
from hyperhive.harness.claude import ClaudeDriver
from hyperhive.harness.claude_cmdline import DEFAULT_ALLOWED_TOOLS, permission_mode
from hyperhive.harness.claude_prompt import Whereabouts
from hyperhive.harness.driver import Driver
from hyperhive.harness.heartbeat import beat_forever
from hyperhive.harness.reconnect import Reconnecting
from hyperhive.harness.slots import daemon_slot
from hyperhive.harness.turns import Slot, TurnLoop, no_slot
from hyperhive.harness.web import AgentUI, serve_ui, serve_ui_unix
from hyperhive.names import validate_name
from hyperhive.paths import CONFIG_FILE, AgentConfig, StatePaths
from hyperhive.sandbox.relay import bound_port, start_tcp_relay, unix_connector
from hyperhive.sandbox.view import API_PORT, PROXY_PORT
from hyperhive.store.events_db import EventLog
from hyperhive.store.retention import incremental_vacuum

__all__ = ["HarnessOptions", "agent_config", "limit_files", "make_driver", "run_harness"]

AGENT_NOFILE = 8192  # open files of the agent's every process (the harness sets it before anything runs)


def limit_files(n: int = AGENT_NOFILE) -> None:
    """Lower this process's open-file limit, soft and hard, before the agent's
    tools start: what they cannot open, they cannot hold open in the daemon."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = n if hard == resource.RLIM_INFINITY else min(n, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, cap), cap))

EVENT_MAX_AGE = 7 * 86400.0  # F22: the harness keeps its own events db trimmed
EVENT_KEEP = 2000
PRUNE_EVERY = 3600.0


@dataclass(frozen=True)
class HarnessOptions:
    """How the backend set this harness up (all off: a bare harness, as in tests)."""

    web_socket: str | None = None  # serve the web UI here instead of on --web-port
    workspace: Path | None = None
    api_socket: str | None = None  # the daemon's gateway, relayed as ANTHROPIC_BASE_URL
    proxy_socket: str | None = None  # the daemon's egress proxy, relayed as HTTP(S)_PROXY
    fixed_ports: bool = False  # the relays take API_PORT/PROXY_PORT (own network namespace)
    sandboxed: bool = False
    applied_dir: Path | None = None  # its applied config (agent.json); None: found from the state dir

_log = logs.get("hyperhive.harness")


def agent_config(name: str, state_dir: Path, applied_dir: Path | None = None) -> AgentConfig:
    """The agent's applied config: ``applied_dir/agent.json`` (the backend passes
    ``--applied-dir``: the agents' dirs may be anywhere, ``--agents-dir``), else the
    one of the hive whose ``agents/<name>/state`` this is; the default when there is
    none (no hive layout, nothing applied) or it cannot be read."""
    try:
        agent = validate_name(name)
        if applied_dir is None:
            root = state_dir.absolute().parents[2] if len(state_dir.absolute().parents) > 2 else None
            if root is None or StatePaths(root).state(agent) != state_dir.absolute():
                return AgentConfig()
            applied_dir = StatePaths(root).applied(agent)
        f = applied_dir / CONFIG_FILE
        if not f.is_file():
            return AgentConfig()
        config = AgentConfig.from_json(f.read_text(), where=str(f))
        _log.info("harness.config", source=str(f))
        return config
    except HiveError as exc:
        _log.error("harness.bad_config", error=exc.message)
    except (OSError, UnicodeDecodeError) as exc:
        _log.error("harness.bad_config", error=str(exc))
    return AgentConfig()


def make_driver(name: str, driver: str, socket_path: str, state_dir: Path, config: AgentConfig,
                options: HarnessOptions | None = None, client: Reconnecting | AsyncClient | None = None) -> Driver:
    options = options or HarnessOptions()
    if driver == "builtin":
        return BuiltinDriver(name, socket_path, workspace=options.workspace, shell_allowed=options.sandboxed)
    if driver == "claude":
        tools = DEFAULT_ALLOWED_TOOLS if config.allowed_tools is None else config.allowed_tools
        mode, why = permission_mode(config.permissions, options.sandboxed)
        if why:
            _log.warning("harness.permissions_fallback", configured=config.permissions, mode=mode, reason=why)
        where = Whereabouts(
            workspace=options.workspace, branch=f"hive/{name}" if options.workspace else None, mode=mode,
            tools=tuple(tools), sandboxed=options.sandboxed, network_allow=config.network_allow,
            memory_mb=config.memory_mb, pids=config.pids)
        grants = None if client is None else _grants_of(client)
        return ClaudeDriver(name, socket_path, state_dir, allowed_tools=tools, where=where, grants=grants)
    raise ValueError(f"unknown driver {driver!r}")


def _grants_of(client: Reconnecting | AsyncClient) -> Callable[[], Awaitable[dict[str, Any]]]:
    """The daemon's ``grants`` op: the tools the operator allowed this agent "from now on"
    and the permission questions' TTL."""
    async def grants() -> dict[str, Any]:
        return await client.request("grants")
    return grants


async def _web_ui(ui: AgentUI, port: int, state_dir: Path, bus: Bus) -> HTTPServer | None:
    """Serve the agent's page. Binding may wait out its predecessor (F21), so it
    runs beside the turn loop; if it fails, the agent works on without a page."""
    try:
        server, bound = await serve_ui(ui, port, state_dir)
    except OSError as exc:
        bus.publish("error", error=f"the web UI cannot listen on 127.0.0.1:{port}: {exc}")
        return None
    bus.publish("web_ui", port=bound)
    return server


async def _bridges(options: HarnessOptions) -> list[asyncio.Server]:
    """Loopback relays to the daemon's gateway and proxy; their addresses go into
    this process's environment, so the driver and every tool it runs find them."""
    servers = []
    if options.api_socket:
        api = await start_tcp_relay("127.0.0.1", API_PORT if options.fixed_ports else 0,
                                    unix_connector(options.api_socket), "api")
        servers.append(api)
        os.environ["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{bound_port(api)}"
    if options.proxy_socket:
        proxy = await start_tcp_relay("127.0.0.1", PROXY_PORT if options.fixed_ports else 0,
                                      unix_connector(options.proxy_socket), "proxy")
        servers.append(proxy)
        url = f"http://127.0.0.1:{bound_port(proxy)}"
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            os.environ[k] = url
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    return servers


async def _prune_events(log: EventLog, stop: asyncio.Event, every: float = PRUNE_EVERY) -> None:
    """F22 for the events db, at start and then every ``every`` seconds: the
    harness owns it, so the host never opens a file the agent could have
    swapped for a link (sqlite follows links, and writes -wal/-shm beside it)."""
    while True:
        try:
            removed = log.prune(time.time(), EVENT_MAX_AGE, EVENT_KEEP)
            if removed:
                incremental_vacuum(log.db)
                _log.info("harness.events_pruned", count=removed)
        except Exception:  # noqa: BLE001 - retention must never stop the agent
            _log.exception("harness.prune_failed")
        try:
            await asyncio.wait_for(stop.wait(), every)
            return
        except TimeoutError:
            pass


async def run_harness(name: str, socket_path: str, state_dir: Path, driver_name: str,
                      web_port: int | None = 0, slot: Slot = no_slot,
                      options: HarnessOptions | None = None) -> None:
    """Run until SIGTERM/SIGINT. ``web_port`` None: no web UI; 0: any free port
    (unless ``options.web_socket`` names a unix socket for it)."""
    options = options or HarnessOptions()
    logs.bind_thread(agent=name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    state_dir.mkdir(parents=True, exist_ok=True)
    events = EventLog.in_state_dir(state_dir)
    bus = Bus(events)
    client = Reconnecting(AsyncClient(socket_path))  # for as long as the harness runs
    driver: Driver | None = None
    ui: asyncio.Task[HTTPServer | None] | None = None
    unix_ui: HTTPServer | None = None
    bridges: list[asyncio.Server] = []
    pruning = asyncio.create_task(_prune_events(events, stop))
    try:
        bridges = await _bridges(options)
        await client.connect()
        config = agent_config(name, state_dir, options.applied_dir)
        driver = make_driver(name, driver_name, socket_path, state_dir, config, options, client)
        await driver.open()
        turns = TurnLoop(name, client, driver, bus, daemon_slot(client) if slot is no_slot else slot)
        bus.publish("ready", driver=driver_name, pid=os.getpid())
        agent_ui = AgentUI(name, driver, bus, turns, client)
        if options.web_socket:
            try:
                unix_ui = serve_ui_unix(agent_ui, options.web_socket)
            except OSError as exc:
                bus.publish("error", error=f"the web UI cannot listen on {options.web_socket}: {exc}")
        elif web_port is not None:
            ui = asyncio.create_task(_web_ui(agent_ui, web_port, state_dir, bus))
        beats = asyncio.create_task(beat_forever(client, bus, stop))
        try:
            await turns.run(stop)
        finally:
            beats.cancel()
    finally:
        stop.set()
        await asyncio.wait({pruning})
        for b in bridges:
            b.close()
        if unix_ui is not None:
            unix_ui.stop()
        if ui is not None:
            ui.cancel()
            await asyncio.wait({ui})
            server = None if ui.cancelled() else ui.result()
            if server is not None:
                server.stop()
        if driver is not None:
            await driver.close()
        await client.close()
        bus.publish("stopped")
        bus.close()
