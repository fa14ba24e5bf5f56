"""Support for the agent channel's tests (issue 18): a real `AgentListen` on 127.0.0.1 (real TLS,
the daemon's own CA and certificate made in a temp state dir) in front of agents' servers of our own
making (a real `JsonLineServer` and `McpEndpoint` each, with op tables that record what they were
asked), and raw TLS peers."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperhive.agent_link import AgentLink
from hyperhive.agent_secrets import AgentSecrets
from hyperhive.agent_tls import ca_pem, server_context
from hyperhive.agent_wire import auth_line, client_context
from hyperhive.sandbox.relay import nofollow_unix_connector
from hyperhive.web.rpc.agent_listen import AgentListen
from hyperhive.web.rpc.jsonlines import JsonLineServer, Op
from hyperhive.web.rpc.mcp_sockets import McpEndpoint, ServersOnce
from hyperhive.wire import Ping, Send

TIMEOUT = 10.0
SERVERS = ServersOnce(30.0)  # the mcp package's servers, built once for the whole run


@dataclass
class FakeAgent:
    """An agent's two servers; each send is recorded with the name its op table is bound to."""

    name: str
    sends: list[tuple[str, Send]] = field(default_factory=list)
    max_connections: int = 32

    def __post_init__(self) -> None:
        self.hive = JsonLineServer(self.ops(), {"agent": self.name}, max_connections=self.max_connections)
        self.mcp = McpEndpoint(self.name, self.ops(), False, SERVERS)  # type: ignore[arg-type]

    def ops(self) -> dict[str, Op]:
        me = self.name

        async def ping(req: Ping) -> dict[str, Any]:
            return {"agent": me}

        async def send(req: Send) -> dict[str, Any]:
            self.sends.append((me, req))
            return {"message_id": len(self.sends)}

        return {"ping": Op(ping), "send": Op(send)}


@dataclass
class Listening:
    listen: AgentListen
    root: Path
    port: int
    ca_pem: str
    agents: dict[str, FakeAgent]
    secrets: dict[str, str]

    async def peer(self, hostname: str = "127.0.0.1", limit: int = 1 << 24) -> TlsPeer:
        return await TlsPeer.open(self.port, self.ca_pem, hostname, limit=limit)

    async def authed(self, agent: str, channel: str = "hive", secret: str | None = None,
                     limit: int = 1 << 24) -> TlsPeer:
        p = await self.peer(limit=limit)
        p.say(auth_line(agent, self.secrets[agent] if secret is None else secret, channel))
        assert await p.hear() == {"ok": True}
        return p


@asynccontextmanager
async def listening(root: Path, names: tuple[str, ...] = ("alice", "bob"), targets: dict[str, Path] | None = None,
                    max_connections: int = 32, **bounds: Any) -> AsyncIterator[Listening]:
    """An `AgentListen` on 127.0.0.1:0 for fake agents ``names`` (each issued a secret);
    ``targets``: channel → the unix socket its splice goes to."""
    root.mkdir(parents=True, exist_ok=True)
    ctx = server_context(root, "127.0.0.1")
    secrets = AgentSecrets(root)
    agents = {n: FakeAgent(n, max_connections=max_connections) for n in names}
    issued = {n: secrets.issue(n) for n in names}

    def lookup(agent: str) -> tuple[JsonLineServer, McpEndpoint] | None:
        a = agents.get(agent)
        return None if a is None else (a.hive, a.mcp)

    def target(agent: str, channel: str) -> Path | None:
        return (targets or {}).get(channel) if agent in agents else None

    listen = AgentListen(ctx, secrets, lookup, target, **bounds)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    listen.add_sockets([sock])
    try:
        yield Listening(listen, root, listen.port, ca_pem(root), agents, issued)
    finally:
        listen.stop()
        for a in agents.values():
            a.mcp.stop()


class TlsPeer:
    """One TLS connection to the server: lines out, lines in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, ca: str, hostname: str = "127.0.0.1",
                   ctx: ssl.SSLContext | None = None, limit: int = 1 << 24) -> TlsPeer:
        r, w = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx or client_context(ca), server_hostname=hostname, limit=limit), TIMEOUT)
        return cls(r, w)

    def say(self, *items: bytes | dict[str, Any]) -> None:
        for item in items:
            self.writer.write(item if isinstance(item, bytes) else json.dumps(item).encode() + b"\n")

    async def hear(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        assert line, "the server closed the connection"
        out: dict[str, Any] = json.loads(line)
        return out

    async def closed(self, timeout: float = TIMEOUT) -> bool:
        """True once the server has closed (EOF, or a reset of our unread bytes)."""
        try:
            return await asyncio.wait_for(self.reader.read(), timeout) == b""
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


def refusal(line: dict[str, Any]) -> tuple[bool, str]:
    return line["ok"], line["error"]["code"]


@asynccontextmanager
async def web_ui(path: Path, agent: str = "alice") -> AsyncIterator[list[str]]:
    """A tiny HTTP server on the unix socket ``path`` (an agent's web.sock): it answers each
    request with ``ui of AGENT at TARGET`` and records each target ("?" for what is no request)."""
    seen: list[str] = []

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
            parts = head.split(b" ", 2)
            target = parts[1].decode(errors="replace") if len(parts) > 1 else "?"
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            target = "?"
        seen.append(target)
        body = f"ui of {agent} at {target}".encode()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await w.drain()
        w.close()

    server = await asyncio.start_unix_server(serve, str(path))
    try:
        yield seen
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def web_node(ls: Listening, agent: str, state: Path, owner_uid: int | None = None,
                   **kw: Any) -> AsyncIterator[AgentLink]:
    """The relay on ``agent``'s node, its sockets in ``state``'s sibling ``run``, the web UI at
    ``state/web.sock`` (``owner_uid``: the owner it must have)."""
    state.mkdir(parents=True, exist_ok=True)
    link = AgentLink(f"127.0.0.1:{ls.port}", ls.ca_pem, agent, ls.secrets[agent], state.parent / "run",
                     web=nofollow_unix_connector(str(state), "web.sock", owner_uid), **kw)
    await asyncio.to_thread(link.start)
    try:
        yield link
    finally:
        await asyncio.to_thread(link.stop)

