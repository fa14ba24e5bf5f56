"""The relay on an agent's node (issue 18): its usual unix sockets, tunnelled to the daemon over TLS.

The agent's sandbox has no network. Outside it, in the Ray actor's process, `AgentLink` binds the
sockets the harness expects in a node-local run dir (``hive.sock``, ``mcp.sock``, ``api.sock``,
``proxy.sock``: `agent_wire.SOCKETS`, mode 0600, owned by the agent's uid when given), and relays each
connection accepted there to the daemon's ``--agent-listen`` address: a TLS connection that trusts the
daemon's CA alone and checks its host name (`agent_wire.client_context`), its auth line (agent, secret,
channel), the daemon's ``{"ok":true}``, then bytes both ways (`relay.splice`). The harness inside is
unchanged. A daemon that is down or refuses closes the local connection: the harness's own reconnect
(`harness/reconnect.py`, `hive mcp`) tries again. Nothing is sent before the daemon's certificate is
verified, so a server without a certificate from that CA never sees the secret.

With ``web`` (a connector to the harness's ``web.sock`` on this node), it also keeps ``WEB_PARKED``
connections of the ``web`` channel parked at the daemon (`hyperhive.web.rpc.web_dock`): each one the
daemon opens for a page is answered once ``web.sock`` is reached (or refused with an error line when
it is not, as while the agent hibernates), then spliced; a new one is parked in its place. One the
daemon closes, or that cannot be made, is tried again after a back-off (``WEB_RETRY`` doubling to
``WEB_RETRY_MAX``). A parked connection is silent both ways, as is a parked recv: TCP keepalive
(`keep_alive`, on every channel, both ends) ends one whose other end vanished without a close (its
host rebooted, a partition), else never noticed.

Bounded: ``max_connections`` per socket (more are closed at accept), a TLS connect and its answer
within ``connect_timeout``; asyncio's own accept loop pauses on EMFILE. The loop runs on a thread of its
own (`start`, `stop`). Standard library only, but for the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import hyperhive.logs as logs
from hyperhive.agent_wire import (
    AUTH_TIMEOUT,
    CHANNELS,
    OK_LINE,
    OPEN_LINE,
    SOCKETS,
    auth_line,
    client_context,
    error_line,
    keep_alive,
    parse_address,
    parse_reply,
)
from hyperhive.sandbox.relay import splice

__all__ = ["MAX_CONNECTIONS", "WEB_PARKED", "AgentLink", "bind_agent_socket"]

_log = logs.get("hyperhive.agent_link")

MAX_CONNECTIONS = 32  # per socket, as the daemon's own agent sockets
_LOG_EVERY = 1.0  # a daemon that is down is logged once a second at most
WEB_PARKED = 2  # web connections kept parked at the daemon
WEB_RETRY, WEB_RETRY_MAX = 0.2, 10.0  # seconds before a parked web connection is made again
WEB_CONNECT_TIMEOUT = 3.0  # to web.sock on this node: under the daemon's wait for the answer (5 s)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def bind_agent_socket(path: Path, owner: tuple[int, int] | None) -> socket.socket:
    """A listening unix socket at ``path``, 0600 (and ``owner``'s) before it listens; a stale
    socket there is replaced, anything else refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{path} exists and is not a socket; refusing to replace it")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)  # nobody connects before listen() below
        if owner is not None:
            os.chown(path, owner[0], owner[1], follow_symlinks=False)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class AgentLink:
    """One agent's relay: ``address`` is the daemon's HOST:PORT, ``ca_pem`` its CA, ``secret`` the
    agent's (a constructor argument, never a command line); ``run_dir`` where its sockets go."""

    def __init__(self, address: str, ca_pem: str, agent: str, secret: str, run_dir: Path,
                 owner: tuple[int, int] | None = None, *, max_connections: int = MAX_CONNECTIONS,
                 connect_timeout: float = AUTH_TIMEOUT, channels: tuple[str, ...] = CHANNELS,
                 web: Callable[[], Awaitable[Streams]] | None = None, web_parked: int = WEB_PARKED) -> None:
        self._host, self._port = parse_address(address)
        self._ctx = client_context(ca_pem)
        self.agent = agent
        self._secret = secret
        self.run_dir = run_dir
        self._owner = owner
        self._max = max_connections
        self._timeout = connect_timeout
        self._channels = channels
        self._web = web
        self._web_parked = web_parked if web is not None else 0
        self._live: dict[str, set[asyncio.Task[None]]] = {c: set() for c in (*channels, "web")}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._counts: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}
        self.refused = 0  # local connections closed at the cap
        self.web_served = 0  # web connections the daemon opened and this node served
        self._web_freed: asyncio.Event | None = None

    def __repr__(self) -> str:  # never the secret
        return f"AgentLink({self.agent!r} → {self._host}:{self._port})"

    def path(self, channel: str) -> Path:
        return self.run_dir / SOCKETS[channel]

    def live(self, channel: str) -> int:
        return len(self._live[channel])

    def start(self) -> None:
        """Bind the sockets now (an OSError if one cannot be), then serve them on a thread."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        bound: dict[str, socket.socket] = {}
        try:
            for channel in self._channels:
                bound[channel] = bind_agent_socket(self.path(channel), self._owner)
        except BaseException:
            for s in bound.values():
                s.close()
            raise
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(bound,), name=f"agent-link-{self.agent}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the agent link's loop did not start")
        _log.info("agent_link.relay_started", agent=self.agent, daemon=f"{self._host}:{self._port}",
                  run_dir=str(self.run_dir))

    def stop(self, timeout: float = 10.0) -> None:
        """End every connection, close and remove the sockets, end the thread."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop is already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        for channel in self._channels:
            p = self.path(channel)
            try:
                if stat.S_ISSOCK(os.lstat(p).st_mode):
                    os.unlink(p)
            except OSError:
                pass

    def _run(self, bound: dict[str, socket.socket]) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main(bound))
        finally:
            self._loop.close()

    async def _main(self, bound: dict[str, socket.socket]) -> None:
        self._stopping = asyncio.Event()
        self._web_freed = asyncio.Event()
        servers = [await asyncio.start_unix_server(partial(self._handle, c), sock=s) for c, s in bound.items()]
        parkers = [asyncio.ensure_future(self._park_web()) for _ in range(self._web_parked)]
        self._ready.set()
        await self._stopping.wait()
        for server in servers:
            server.close()
        tasks = [*parkers, *(t for live in self._live.values() for t in live)]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in servers:
            await server.wait_closed()

    async def _handle(self, channel: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        live = self._live[channel]
        if len(live) >= self._max:
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:
                _log.warning("agent_link.too_many_connections", agent=self.agent, channel=channel, max=self._max,
                             refused=self.refused)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        live.add(task)
        try:
            up = await self._open(channel)
            if up is None:
                writer.transport.abort()
                return
            await splice(reader, writer, *up, abort_on_cancel=True)  # a TLS side: abort, never wait on it
        except asyncio.CancelledError:
            writer.transport.abort()
        except Exception as exc:  # noqa: BLE001 - one connection never takes the relay down
            _log.warning("agent_link.relay_failed", agent=self.agent, channel=channel, error=repr(exc)[:200])
            writer.transport.abort()
        finally:
            live.discard(task)

    async def _open(self, channel: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A TLS connection to the daemon, authenticated for ``channel``; None (logged) if not."""
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(
                self._host, self._port, ssl=self._ctx, server_hostname=self._host,
                ssl_handshake_timeout=self._timeout), self._timeout)
        except (OSError, TimeoutError) as exc:  # down, refused, a certificate not from the CA
            self._down(channel, exc)
            return None
        try:
            up_writer.write(auth_line(self.agent, self._secret, channel))
            line = await asyncio.wait_for(up_reader.readline(), self._timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            up_writer.transport.abort()
            self._down(channel, exc)
            return None
        if not line:
            up_writer.transport.abort()
            self._down(channel, ConnectionResetError("the daemon closed the connection before answering"))
            return None
        reply = parse_reply(line)
        if not reply.ok:
            up_writer.transport.abort()
            self._note("agent_link.refused_by_daemon", channel=channel, code=reply.code, message=reply.message)
            return None
        if self._stopping is not None and self._stopping.is_set():  # a cancel 3.11's wait_for swallowed
            up_writer.transport.abort()  # as it completed: a parker would wait on it past `stop`
            return None
        keep_alive(up_writer)  # every channel: a parked recv is as silent as a parked web connection
        return up_reader, up_writer

    # --- the web UI, the other way round -------------------------------------------------

    async def _park_web(self) -> None:
        """Keep one web connection parked at the daemon, serve it when opened, park the next."""
        assert self._stopping is not None and self._web_freed is not None
        delay = WEB_RETRY
        while not self._stopping.is_set():
            while len(self._live["web"]) >= self._max:  # at the cap: park again once one ends
                self._web_freed.clear()
                await self._web_freed.wait()
            up = await self._open("web")
            line = b""
            if up is not None:
                try:
                    line = await up[0].readuntil(b"\n")  # parked: waits for a page, or the daemon's close
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    line = b""
            if up is not None and line == OPEN_LINE:
                delay = WEB_RETRY
                self._track_web(asyncio.ensure_future(self._serve_web(*up)))
                continue
            if up is not None:
                up[1].transport.abort()
                if line:
                    self._note("agent_link.web_bad_open", line=line[:80].decode(errors="replace"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)  # closed by the daemon, or it is down
            delay = min(delay * 2, WEB_RETRY_MAX)

    def _track_web(self, task: asyncio.Task[None]) -> None:
        live = self._live["web"]
        live.add(task)

        def done(t: asyncio.Task[None]) -> None:
            live.discard(t)
            if self._web_freed is not None:
                self._web_freed.set()

        task.add_done_callback(done)

    async def _serve_web(self, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        assert self._web is not None
        try:
            try:
                local = await asyncio.wait_for(self._web(), WEB_CONNECT_TIMEOUT)  # within the daemon's wait
            except (OSError, TimeoutError, ValueError) as exc:  # not running (hibernating), or refused
                _log.debug("agent_link.web_unreachable", agent=self.agent, error=repr(exc)[:200])
                up_writer.write(error_line("unavailable", "the agent's web UI is not served now"))
                await up_writer.drain()
                up_writer.transport.abort()
                return
            up_writer.write(OK_LINE)
            self.web_served += 1
            await splice(*local, up_reader, up_writer, abort_on_cancel=True)
        except asyncio.CancelledError:
            up_writer.transport.abort()
        except Exception as exc:  # noqa: BLE001 - one page never takes the relay down
            _log.warning("agent_link.relay_failed", agent=self.agent, channel="web", error=repr(exc)[:200])
            up_writer.transport.abort()

    def _down(self, channel: str, exc: BaseException) -> None:
        self._note("agent_link.connect_failed", channel=channel, error=f"{type(exc).__name__}: {exc}"[:300])

    def _note(self, event: str, **fields: object) -> None:
        """Log ``event`` once a second at most per event, with how many came since (a daemon that is
        down or refusing meets every reconnect of the harness)."""
        n = self._counts[event] = self._counts.get(event, 0) + 1
        now = time.monotonic()
        if now - self._logged_at.get(event, float("-inf")) >= _LOG_EVERY:
            self._logged_at[event] = now
            self._counts[event] = 0
            _log.warning(event, agent=self.agent, times=n, **fields)
