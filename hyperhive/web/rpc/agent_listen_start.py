"""``hive serve --agent-listen HOST:PORT`` (issue 18): the TLS server built, bound and wired in.

At start: the CA (made once) and a new server certificate (`agent_tls`), the secrets (`agent_secrets`),
the listening sockets (port 0: any free one), the bound port in ``run/agent-listen.port`` (atomic).
A destroyed agent's secret is forgotten (``container.removed``). The admin socket's ``agent_link{name}``
gives the operator what a relay for that agent needs (a new secret, the address, the CA): for a relay
started by hand; the Ray backend gets the same from `AgentListen.credentials` when it creates the
agent's actor.
"""

from __future__ import annotations

import asyncio
import os
import socket
from functools import partial
from pathlib import Path
from typing import Any

from tornado.ioloop import IOLoop

import hyperhive.logs as logs
from hyperhive.actors.events import ContainerRemoved, Event, Hub
from hyperhive.agent_secrets import AgentSecrets
from hyperhive.agent_tls import TLS_DIR, ca_pem, server_context
from hyperhive.agent_wire import parse_address
from hyperhive.errors import BadSetting, Unavailable, UnknownAgent
from hyperhive.names import AgentName, validate_name
from hyperhive.net import bind_with_retry_async
from hyperhive.paths import StatePaths
from hyperhive.settings import Settings
from hyperhive.web.rpc.agent_listen import AgentListen
from hyperhive.web.rpc.jsonlines import Op
from hyperhive.web.rpc.sockets import AgentSockets
from hyperhive.wire_requests import ByName

__all__ = ["PORT_FILE", "AgentLinkRequest", "link_ops", "start_agent_listen"]

_log = logs.get("hyperhive.agent_link")

PORT_FILE = "agent-listen.port"


class AgentLinkRequest(ByName, op="agent_link"):
    """Admin socket: a new secret for the agent, with the address and CA a relay needs (issue 18)."""


def _target(paths: StatePaths, sockets: AgentSockets, agent: str, channel: str) -> Path | None:
    if sockets.servers_of(agent) is None:
        return None
    name = AgentName(agent)
    return paths.api_socket(name) if channel == "api" else paths.proxy_socket(name)


def _address(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::"):  # a wildcard: the relay connects by this machine's name (in the certificate)
        host = socket.getfqdn()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _write_port(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def _forget(secrets: AgentSecrets, agent: str) -> None:
    try:
        secrets.forget(agent)
    except OSError as exc:
        _log.error("agent_link.forget_failed", agent=agent, error=str(exc))


def _on_event(io_loop: IOLoop, listen: AgentListen, event: Event) -> None:
    """On an actor's thread: a destroyed agent's secret forgotten, on a worker thread, and its
    parked web connections closed."""
    if isinstance(event, ContainerRemoved):
        io_loop.add_callback(io_loop.run_in_executor, None, _forget, listen.secrets, event.agent)
        io_loop.add_callback(listen.web.forget, event.agent)


async def start_agent_listen(settings: Settings, paths: StatePaths, sockets: AgentSockets, hub: Hub,
                             ) -> AgentListen | None:
    """The server of ``settings.agent_listen``, listening; None when that is empty. A
    `BadSetting` when it cannot bind or keep its keys."""
    if not settings.agent_listen:
        return None
    try:
        host, port = parse_address(settings.agent_listen)
    except ValueError as exc:
        raise BadSetting(f"agent_listen {exc}") from None
    loop = asyncio.get_running_loop()
    try:  # key generation and fsyncs: off the loop
        ctx = await loop.run_in_executor(None, server_context, paths.root, host)
        secrets = await loop.run_in_executor(None, AgentSecrets, paths.root)
        pem = await loop.run_in_executor(None, ca_pem, paths.root)
    except OSError as exc:
        raise BadSetting(f"agent_listen: cannot keep the TLS keys in {paths.root / TLS_DIR}: {exc}") from None
    try:
        bound = await bind_with_retry_async(port, host)
    except OSError as exc:
        raise BadSetting(f"agent_listen: cannot listen on {settings.agent_listen}: {exc.strerror or exc}") from None
    listen = AgentListen(ctx, secrets, sockets.servers_of, partial(_target, paths, sockets))
    listen.add_sockets(bound)
    listen.address, listen.ca_pem = _address(host, listen.port), pem
    listen.port_file = paths.root / "run" / PORT_FILE
    listen.port_file.parent.mkdir(parents=True, exist_ok=True)
    _write_port(listen.port_file, listen.port)
    hub.subscribe(partial(_on_event, IOLoop.current(), listen))
    _log.info("agent_link.listening", address=listen.address, port=listen.port)
    return listen


def link_ops(listen: AgentListen | None, sockets: AgentSockets) -> dict[str, Op]:
    """The admin socket's ``agent_link{name}`` → ``{agent, secret, address, ca_pem}``."""

    async def agent_link(req: AgentLinkRequest) -> dict[str, Any]:
        if listen is None:
            raise Unavailable("this daemon has no --agent-listen")
        name = validate_name(req.name)
        if sockets.servers_of(name) is None:
            raise UnknownAgent(f"no agent {name!r} is served here")
        return await asyncio.get_running_loop().run_in_executor(None, listen.credentials, name)

    return {"agent_link": Op(agent_link)}
