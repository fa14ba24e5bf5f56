"""An agent's web UI across hosts (issue 18): connections its node parks here, taken one per page request.

The daemon cannot reach a unix socket on another host, and the agent's node need not accept
connections at all. So the relay on the node (`hyperhive.agent_link`) dials the daemon's
``--agent-listen`` with the ``web`` channel, authenticated as that agent, and leaves the
connection parked here. When a browser's request comes to the agent's sticky port
(`sandbox.web_relay`), `WebDock.connector` takes one parked connection and writes ``OPEN_LINE``;
the node connects to the harness's ``web.sock`` there and answers one line: ``{"ok":true}``
(then the bytes both ways are the page's), or an error line (nothing serves the UI now: the
web relay answers as for a socket that is not there, the hibernation page included). The node
parks a new connection for each one taken.

Bounds: ``MAX_PARKED`` per agent (more are refused at their auth); a parked connection that sends
anything before it is opened, or closes, is dropped (TCP keepalive, set by `AgentListen`, finds one
whose node vanished); a take waits ``take_timeout`` for a connection to be parked, and
``answer_timeout`` for the node's answer, trying the next parked one when a node does not answer,
``take_timeout + answer_timeout`` in all (a node that parks silent connections as fast as they are
dropped holds no page longer); one it took is closed if the take is cancelled before it is handed on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import hyperhive.logs as logs
from hyperhive.agent_wire import OPEN_LINE, parse_reply

__all__ = ["ANSWER_TIMEOUT", "MAX_PARKED", "TAKE_TIMEOUT", "WebDock"]

_log = logs.get("hyperhive.agent_link")

MAX_PARKED = 4  # per agent: the node keeps 2
TAKE_TIMEOUT = 5.0  # seconds a page request waits for a parked connection
ANSWER_TIMEOUT = 5.0  # seconds for the node's answer to an open
_MAX_ANSWER = 4096

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(eq=False)
class _Parked:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    watch: asyncio.Task[None] | None = None


@dataclass
class _Agent:
    parked: deque[_Parked] = field(default_factory=deque)
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)


class WebDock:
    """The parked ``web`` connections of every agent, on the loop thread."""

    def __init__(self, *, max_parked: int = MAX_PARKED, take_timeout: float = TAKE_TIMEOUT,
                 answer_timeout: float = ANSWER_TIMEOUT) -> None:
        self._agents: dict[str, _Agent] = {}
        self._max = max_parked
        self._take_timeout = take_timeout
        self._answer_timeout = answer_timeout
        self.opened = 0  # connections opened for a page, in all (`/metrics`-style count, for tests)

    def parked(self, agent: str) -> int:
        a = self._agents.get(agent)
        return 0 if a is None else len(a.parked)

    def full(self, agent: str) -> bool:
        return self.parked(agent) >= self._max

    def park(self, agent: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Keep an authenticated ``web`` connection (the caller checked `full`) until a page takes it."""
        a = self._agents.setdefault(agent, _Agent())
        p = _Parked(reader, writer)
        p.watch = asyncio.ensure_future(self._watch(agent, p))
        a.parked.append(p)
        while a.waiters:
            w = a.waiters.popleft()
            if not w.done():
                w.set_result(None)
                break

    async def _watch(self, agent: str, p: _Parked) -> None:
        """A parked connection says nothing until it is opened: a byte or its close drops it."""
        try:
            got = await p.reader.read(1)
        except (OSError, ValueError):
            got = b"?"
        self._drop(agent, p, "closed" if not got else "spoke before it was opened")

    def _tidy(self, agent: str) -> None:
        """An agent with nothing parked and no page waiting holds no entry."""
        a = self._agents.get(agent)
        if a is not None and not a.parked and not a.waiters:
            del self._agents[agent]

    def _drop(self, agent: str, p: _Parked, why: str) -> None:
        a = self._agents.get(agent)
        if a is not None and p in a.parked:
            a.parked.remove(p)
            self._tidy(agent)
        p.writer.transport.abort()
        _log.debug("agent_link.web_dropped", agent=agent, why=why)

    def _pop(self, agent: str) -> _Parked | None:
        a = self._agents.get(agent)
        if a is None or not a.parked:
            return None
        p = a.parked.popleft()
        self._tidy(agent)
        if p.watch is not None:
            p.watch.cancel()  # no byte came (it would have dropped it): the stream is untouched
        return p

    async def take(self, agent: str) -> Streams:
        """Streams to the agent's web UI on its node; ConnectionRefusedError when there are none now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._take_timeout
        give_up = deadline + self._answer_timeout  # whatever is parked meanwhile: bounded in all
        while True:
            if (answer_left := give_up - loop.time()) <= 0:
                raise ConnectionRefusedError(f"{agent}'s node did not answer in time")
            p = self._pop(agent)
            if p is None:
                left = deadline - loop.time()
                if left <= 0:
                    raise ConnectionRefusedError(f"no web connection from {agent}'s node")
                waiter = loop.create_future()
                self._agents.setdefault(agent, _Agent()).waiters.append(waiter)
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiter, left)  # woken by `park` (or `stop`)
                finally:
                    a = self._agents.get(agent)
                    if a is not None:
                        with contextlib.suppress(ValueError):
                            a.waiters.remove(waiter)
                        self._tidy(agent)
                continue
            answer = await self._open(p, min(self._answer_timeout, answer_left))
            if answer is None:
                continue  # a node that does not answer: the next parked one
            if not answer:
                p.writer.transport.abort()
                raise ConnectionRefusedError(f"{agent}'s web UI is not served on its node now")
            self.opened += 1
            _log.info("agent_link.web_opened", agent=agent, parked=self.parked(agent))
            return p.reader, p.writer

    async def _open(self, p: _Parked, timeout: float) -> bool | None:
        """Open ``p``: True (served), False (the node said no), None (no answer: dropped)."""
        try:
            p.writer.write(OPEN_LINE)
            line = await asyncio.wait_for(p.reader.readuntil(b"\n"), timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            p.writer.transport.abort()
            return None
        except BaseException:  # cancelled (the page went, the daemon stops): it is no one's now
            p.writer.transport.abort()
            raise
        if len(line) > _MAX_ANSWER:
            p.writer.transport.abort()
            return None
        return parse_reply(line).ok

    def connector(self, agent: str) -> Callable[[], Awaitable[Streams]]:
        """The web relay's ``connect`` for ``agent``: through its node."""
        return lambda: self.take(agent)

    def forget(self, agent: str) -> None:
        """The agent is gone: its parked connections are closed."""
        while (p := self._pop(agent)) is not None:
            p.writer.transport.abort()
        self._agents.pop(agent, None)

    def stop(self) -> None:
        for agent in list(self._agents):
            a = self._agents.get(agent)
            if a is not None:
                for w in a.waiters:
                    if not w.done():
                        w.set_result(None)
            self.forget(agent)
