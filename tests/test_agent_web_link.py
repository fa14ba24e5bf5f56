"""An agent's web UI across hosts (issue 18: `hyperhive.web.rpc.web_dock`, the ``web`` channel of
`hyperhive.agent_link`). A real `AgentListen` (real TLS) and a real relay on its own loop; the
harness's ``web.sock`` is a real unix socket serving HTTP. The daemon side takes a parked
connection as its web relay does for a page."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from agent_link_support import listening, web_node, web_ui
from support import async_wait_for

from hyperhive.agent_wire import OPEN_LINE, auth_line
from hyperhive.web.rpc.web_dock import MAX_PARKED, WebDock


async def page(dock: WebDock, agent: str, target: str = "/") -> bytes:
    r, w = await dock.take(agent)
    try:
        w.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return await asyncio.wait_for(r.read(), 10)
    finally:
        w.close()


async def test_a_page_reaches_the_ui_on_the_agents_node_and_the_node_parks_again(tmp_path: Path) -> None:
    async with listening(tmp_path / "d") as ls, web_node(ls, "alice", tmp_path / "state-of-agent") as link:
        dock = ls.listen.web
        await async_wait_for(lambda: dock.parked("alice") == 2, what="two connections parked")
        async with web_ui(tmp_path / "state-of-agent" / "web.sock") as seen:
            for i in range(3):
                got = await page(dock, "alice", f"/p{i}")
                assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(f"ui of alice at /p{i}".encode())
            assert seen == ["/p0", "/p1", "/p2"]
        await async_wait_for(lambda: dock.parked("alice") == 2, what="parked again")
        assert link.web_served == 3 and dock.opened == 3
        assert dock.parked("bob") == 0  # alice's node parks for alice alone


async def test_no_web_sock_on_the_node_is_a_refusal_at_once(tmp_path: Path) -> None:
    """Hibernating (no harness), the UI is refused: the web relay then answers the page itself."""
    async with listening(tmp_path / "d") as ls, web_node(ls, "alice", tmp_path / "state-of-agent") as link:
        dock = ls.listen.web
        await async_wait_for(lambda: dock.parked("alice") == 2, what="parked")
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionRefusedError, match="not served on its node"):
            await dock.take("alice")
        assert asyncio.get_running_loop().time() - t0 < 3
        assert link.web_served == 0
        await async_wait_for(lambda: dock.parked("alice") == 2, what="parked again")


async def test_a_link_to_the_web_sock_is_not_followed(tmp_path: Path) -> None:
    async with listening(tmp_path / "d") as ls, web_node(ls, "alice", tmp_path / "state-of-agent") as link:
        dock = ls.listen.web
        elsewhere = tmp_path / "elsewhere.sock"
        async with web_ui(elsewhere) as seen:
            (tmp_path / "state-of-agent" / "web.sock").symlink_to(elsewhere)  # as a hostile agent could
            await async_wait_for(lambda: dock.parked("alice") == 2, what="parked")
            with pytest.raises(ConnectionRefusedError):
                await dock.take("alice")
            assert seen == [] and link.web_served == 0


async def test_no_parked_connection_is_a_refusal_after_the_wait(tmp_path: Path) -> None:
    async with listening(tmp_path / "d") as ls:
        ls.listen.web = dock = WebDock(take_timeout=0.3)
        with pytest.raises(ConnectionRefusedError, match="no web connection"):
            await dock.take("alice")
        assert dock.parked("alice") == 0 and not dock._agents  # nothing left behind


async def test_a_take_waiting_gets_the_connection_parked_meanwhile(tmp_path: Path) -> None:
    async with listening(tmp_path / "d") as ls:
        dock = ls.listen.web
        waiting = asyncio.ensure_future(dock.take("alice"))
        await asyncio.sleep(0)
        peer = await ls.authed("alice", "web")
        assert await asyncio.wait_for(peer.reader.readline(), 10) == OPEN_LINE
        peer.writer.write(b'{"ok":true}\n')
        r, w = await asyncio.wait_for(waiting, 10)
        assert not dock._agents  # nothing parked, no page waiting: no entry left for alice
        w.write(b"ping")
        assert await asyncio.wait_for(peer.reader.readexactly(4), 10) == b"ping"
        w.close()
        peer.writer.close()


async def test_a_parked_connection_that_speaks_first_is_dropped(tmp_path: Path) -> None:
    """Bytes before the open would reach the next page ahead of its answer: the connection goes."""
    async with listening(tmp_path / "d") as ls:
        dock = ls.listen.web
        peer = await ls.authed("alice", "web")
        await async_wait_for(lambda: dock.parked("alice") == 1, what="parked")
        peer.writer.write(b"HTTP/1.1 200 OK\r\n\r\nforged")
        await async_wait_for(lambda: dock.parked("alice") == 0, what="dropped")
        assert await asyncio.wait_for(peer.reader.read(), 10) == b""


async def test_a_node_that_does_not_answer_the_open_is_skipped(tmp_path: Path) -> None:
    async with listening(tmp_path / "d") as ls:
        ls.listen.web = dock = WebDock(answer_timeout=0.3)
        silent = await ls.authed("alice", "web")
        good = await ls.authed("alice", "web")
        await async_wait_for(lambda: dock.parked("alice") == 2, what="parked")

        async def answer() -> None:
            assert await good.reader.readline() == OPEN_LINE
            good.writer.write(b'{"ok":true}\n')

        answering = asyncio.ensure_future(answer())
        _r, w = await asyncio.wait_for(dock.take("alice"), 10)
        await answering
        assert await asyncio.wait_for(silent.reader.readline(), 10) == OPEN_LINE  # it was asked, first
        w.close()


async def test_parked_connections_are_capped_per_agent(tmp_path: Path) -> None:
    async with listening(tmp_path / "d") as ls:
        peers = [await ls.authed("alice", "web") for _ in range(MAX_PARKED)]
        over = await ls.peer()
        over.say(auth_line("alice", ls.secrets["alice"], "web"))
        reply = await over.hear()
        assert reply["ok"] is False and reply["error"]["code"] == "unavailable"
        assert ls.listen.web.parked("alice") == MAX_PARKED
        assert (await ls.authed("bob", "web")) is not None  # another agent's own cap
        for p in peers:
            p.writer.close()


async def test_another_agents_secret_parks_nothing_for_it(tmp_path: Path) -> None:
    async with listening(tmp_path / "d") as ls:
        p = await ls.peer()
        p.say(auth_line("alice", ls.secrets["bob"], "web"))
        reply = await p.hear()
        assert reply["ok"] is False and reply["error"]["code"] == "unauthorized"
        assert ls.listen.web.parked("alice") == 0


async def test_a_forgotten_agent_s_node_parks_again_after_a_back_off(tmp_path: Path) -> None:
    """The daemon closing the parked connections (a destroy, its restart) is survived."""
    async with listening(tmp_path / "d") as ls, web_node(ls, "alice", tmp_path / "state-of-agent"):
        dock = ls.listen.web
        await async_wait_for(lambda: dock.parked("alice") == 2, what="parked")
        dock.forget("alice")
        assert dock.parked("alice") == 0
        await async_wait_for(lambda: dock.parked("alice") == 2, timeout=15, what="parked again")
        async with web_ui(tmp_path / "state-of-agent" / "web.sock"):
            assert (await page(dock, "alice")).endswith(b"ui of alice at /")


def test_the_open_line_is_one_json_line() -> None:
    assert json.loads(OPEN_LINE) == {"op": "open"} and OPEN_LINE.endswith(b"\n")
