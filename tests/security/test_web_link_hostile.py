"""Attacks on the ``web`` channel of the agent link (issue 18: `hyperhive.web.rpc.web_dock`, the parkers of
`hyperhive.agent_link`), as a hostile agent (its harness's ``web.sock``, the files of its state dir) and a
hostile network peer (nothing, or one agent's secret: a compromised node) would. In-process: a real
`AgentListen` (real TLS on 127.0.0.1), a real relay on its own loop, real unix sockets, short deadlines.

Fixed here: a node that parks silent connections as fast as they are dropped held a take (a page) for
ever; a take cancelled while it waited for the node's answer left that connection open; a parked
connection to a peer gone without a close (a reboot, a partition) was never noticed (no keepalive); the
relay's `stop` could leave its thread running, a connection still parked (a cancel 3.11 swallowed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from agent_link_support import TlsPeer, listening, web_node, web_ui
from support import async_wait_for

from hyperhive.agent_wire import OPEN_LINE, auth_line
from hyperhive.web.rpc.web_dock import MAX_PARKED, WebDock


async def close_all(peers: list[TlsPeer]) -> None:
    for p in peers:
        p.writer.transport.abort()


# --- the daemon's take: bounded whatever the node does -------------------------------------------


async def test_silent_parkers_that_keep_coming_cannot_hold_a_take_past_its_deadline(tmp_path: Path) -> None:
    """A node (alice's secret) parks connections that never answer the open, and parks a new one as
    each is dropped: a take still ends, refused, within take_timeout + answer_timeout."""
    async with listening(tmp_path / "d") as ls:
        ls.listen.web = dock = WebDock(take_timeout=0.3, answer_timeout=0.3)
        peers: list[TlsPeer] = []

        async def keep_parked() -> None:
            while True:
                if dock.parked("alice") < MAX_PARKED:
                    peers.append(await ls.authed("alice", "web"))  # says nothing, ever
                else:
                    await asyncio.sleep(0.01)

        filler = asyncio.ensure_future(keep_parked())
        try:
            await async_wait_for(lambda: dock.parked("alice") == MAX_PARKED, what="the cap parked")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(ConnectionRefusedError):
                await asyncio.wait_for(dock.take("alice"), 6)  # old code: a take for as long as they come
            assert loop.time() - t0 < 0.3 + 0.3 + 1.5
            assert len(peers) > MAX_PARKED  # some were tried, dropped and parked again meanwhile
        finally:
            filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await filler
            await close_all(peers)


async def test_a_take_cancelled_while_it_waits_for_the_answer_closes_what_it_took(tmp_path: Path) -> None:
    """The page goes (or the daemon stops) while the node has not answered: the connection taken for it is
    no one's now, and closed (it leaked: a file descriptor for as long as the node kept it open)."""
    async with listening(tmp_path / "d") as ls:
        ls.listen.web = dock = WebDock(answer_timeout=60)
        silent = await ls.authed("alice", "web")
        await async_wait_for(lambda: dock.parked("alice") == 1, what="parked")
        taking = asyncio.ensure_future(dock.take("alice"))
        assert await asyncio.wait_for(silent.reader.readline(), 10) == OPEN_LINE
        taking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await taking
        assert await silent.closed(5)
        assert dock.parked("alice") == 0


async def test_an_answer_line_without_end_is_read_so_far_and_no_further(tmp_path: Path) -> None:
    """Held: 1 MiB of answer without a newline (and a 10 KB line) drop the connection, the next is tried."""
    async with listening(tmp_path / "d") as ls:
        ls.listen.web = dock = WebDock(take_timeout=0.5, answer_timeout=5)
        endless = await ls.authed("alice", "web")
        long = await ls.authed("alice", "web")
        await async_wait_for(lambda: dock.parked("alice") == 2, what="parked")

        async def answer(p: TlsPeer, what: bytes) -> None:
            assert await p.reader.readline() == OPEN_LINE
            p.writer.write(what)

        tasks = [asyncio.ensure_future(answer(endless, b"x" * (1 << 20))),
                 asyncio.ensure_future(answer(long, b'{"ok":true,"pad":"' + b"y" * 10_000 + b'"}\n'))]
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(dock.take("alice"), 10)
        await asyncio.gather(*tasks)
        assert await endless.closed(5) and await long.closed(5)
        assert dock.opened == 0


async def test_another_agents_parked_connection_never_serves_this_agents_page(tmp_path: Path) -> None:
    """Held: bob's node (a compromised one) parks and would answer anything: alice's page never takes it."""
    async with listening(tmp_path / "d") as ls:
        ls.listen.web = dock = WebDock(take_timeout=0.3)
        bob = await ls.authed("bob", "web")
        await async_wait_for(lambda: dock.parked("bob") == 1, what="parked")
        with pytest.raises(ConnectionRefusedError, match="no web connection"):
            await dock.take("alice")
        assert dock.parked("bob") == 1 and dock.parked("alice") == 0
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(bob.reader.readline(), 0.3)  # no open went to bob
        await close_all([bob])


async def test_bytes_sent_with_the_auth_line_drop_the_connection_before_any_page(tmp_path: Path) -> None:
    """Held: a forged answer and page sent in one write with the auth line (ahead of any open)."""
    async with listening(tmp_path / "d") as ls:
        ls.listen.web = dock = WebDock(take_timeout=0.5)
        p = await ls.peer()
        p.say(auth_line("alice", ls.secrets["alice"], "web") + b'{"ok":true}\nHTTP/1.1 200 OK\r\n\r\nforged')
        assert await p.hear() == {"ok": True}
        assert await p.closed(5)
        with pytest.raises(ConnectionRefusedError):
            await dock.take("alice")
        assert not dock._agents


async def test_many_waiting_takes_for_agents_with_no_node_leave_nothing_behind(tmp_path: Path) -> None:
    """Held: 200 takes, for alice and for names nobody has, all refused after the wait; no entry kept."""
    async with listening(tmp_path / "d") as ls:
        ls.listen.web = dock = WebDock(take_timeout=0.3)
        takes = [asyncio.ensure_future(dock.take("alice" if i % 2 else f"nobody{i}")) for i in range(200)]
        got = await asyncio.wait_for(asyncio.gather(*takes, return_exceptions=True), 10)
        assert all(isinstance(g, ConnectionRefusedError) for g in got)
        assert not dock._agents


# --- the node: what the agent leaves in its state dir, the daemon refusing ---------------------------


def _other_uid() -> int:
    return 12345 if os.getuid() != 12345 else 12346


@pytest.mark.parametrize("kind", ["owned by another uid", "a hard link", "a regular file", "a directory"])
async def test_the_node_serves_no_web_sock_that_is_not_the_agents_own_socket(tmp_path: Path, kind: str) -> None:
    """Held: whatever the agent puts at web.sock, the node refuses it (the page gets the refusal)."""
    state = tmp_path / "state"
    state.mkdir()
    here = state / "web.sock"
    # owned by another uid: a live socket at web.sock, but not the agent's (the relay expects _other_uid)
    served = here if kind == "owned by another uid" else tmp_path / "elsewhere.sock"
    async with listening(tmp_path / "d") as ls, web_ui(served) as seen:
        if kind == "a hard link":
            os.link(served, here)
        elif kind == "a regular file":
            here.write_bytes(b"")
        elif kind == "a directory":
            here.mkdir()
        uid = _other_uid() if kind == "owned by another uid" else os.getuid()
        dock = ls.listen.web
        async with web_node(ls, "alice", state, owner_uid=uid) as link:
            await async_wait_for(lambda: dock.parked("alice") == 2, what="parked")
            with pytest.raises(ConnectionRefusedError, match="not served on its node"):
                await dock.take("alice")
            assert seen == [] and link.web_served == 0


async def test_the_nodes_parkers_back_off_while_the_daemon_refuses_them(tmp_path: Path) -> None:
    """Held: the cap is full (a compromised node took it): the relay's two parkers do not spin."""
    async with listening(tmp_path / "d") as ls:
        squatters = [await ls.authed("alice", "web") for _ in range(MAX_PARKED)]
        refusals = ls.listen._counts
        before = refusals.get("agent_link.refused", 0)
        async with web_node(ls, "alice", tmp_path / "state"):
            await async_wait_for(lambda: refusals.get("agent_link.refused", 0) >= before + 2, what="refused")
            await asyncio.sleep(2.0)  # a window to count in: 0.2 + 0.4 + 0.8 s of back-off each
        assert refusals.get("agent_link.refused", 0) - before <= 12
        await close_all(squatters)


async def test_the_relay_stops_when_asked_even_while_a_parker_is_connecting(tmp_path: Path) -> None:
    """A page was refused, so a parker is making a new connection when `stop` comes. Python 3.11's
    wait_for swallowed a cancel that came just as its await ended: the parker parked again and waited,
    `stop` gave up after 10 s, and the relay's thread lived on with a connection parked at the daemon."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "web.sock").write_bytes(b"")  # nothing serves the UI: each take is refused at once
    async with listening(tmp_path / "d") as ls:
        dock = ls.listen.web
        loop = asyncio.get_running_loop()
        for _ in range(5):
            async with web_node(ls, "alice", state) as link:
                await async_wait_for(lambda: dock.parked("alice") == 2, what="parked")
                with pytest.raises(ConnectionRefusedError):
                    await dock.take("alice")
                t0 = loop.time()
            assert loop.time() - t0 < 5 and link._thread is not None and not link._thread.is_alive()
            await async_wait_for(lambda: dock.parked("alice") == 0, timeout=5, what="nothing parked after stop")


# --- a peer gone without a close ---------------------------------------------------------------------


def _tcp_sockets(port: int) -> list[dict[str, Any]]:
    """This process's TCP sockets with ``port`` at one end: which end, and their keepalive options."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            s = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if s.family != socket.AF_INET or s.type != socket.SOCK_STREAM:
                continue
            try:
                peer = s.getpeername()
            except OSError:
                continue  # the listening socket
            mine = s.getsockname()
            if port not in (peer[1], mine[1]):
                continue
            out.append({"node": peer[1] == port,
                        "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        "idle": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)})
        finally:
            s.close()
    return out


async def test_parked_connections_notice_a_peer_gone_without_a_close(tmp_path: Path) -> None:
    """A parked connection is silent both ways for hours: without TCP keepalive a daemon host that
    rebooted (or a partition) left the node's parkers waiting for ever, the agent's UI gone for good, and
    the daemon holding dead ones in the cap. Both ends probe it."""
    async with listening(tmp_path / "d") as ls, web_node(ls, "alice", tmp_path / "state"):
        await async_wait_for(lambda: ls.listen.web.parked("alice") == 2, what="parked")
        # the node sets it once it has read the daemon's answer, on its own thread: a moment later
        await async_wait_for(lambda: all(f["keepalive"] == 1 for f in _tcp_sockets(ls.port)), timeout=3,
                             what="keepalive on every end")
        found = _tcp_sockets(ls.port)
        assert sorted(f["node"] for f in found) == [False, False, True, True]
        assert all(f["keepalive"] == 1 and f["idle"] <= 60 for f in found), found
